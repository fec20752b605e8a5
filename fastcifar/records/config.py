"""The one typed place for every setting: `TrainConfig` (what to train, recorded with every run)
and `RunOptions` (how this invocation runs it). Each field is declared once, with the help text,
choices and value type that the command-line flags are generated from (`fastcifar.cli`), and
read from and written to TOML files (`fastcifar.records.config_file`: `--config`, `--print-config`).

Nothing here imports torch, so that `--help` and flag errors answer in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fastcifar.errors import ConfigError
from fastcifar.records.config_checks import (
    COMPILE_MODES,
    DATASET_NAMES,
    FLIP_MODES,
    LOADER_NAMES,
    NETWORK_NAMES,
    OPTIMIZER_NAMES,
    PAD_MODES,
    PARALLEL_MODES,
    check_config,
)
from fastcifar.records.recipes import RECIPE_NAMES, RECIPES, with_recipe
from fastcifar.records.values import with_plain_values

# The range test's default length: as many steps as the training run has, within these bounds.
RANGE_TEST_MIN_STEPS, RANGE_TEST_MAX_STEPS = 10, 100


def option(group: str, default: Any, help: str, **flag: Any) -> Any:
    """A field with what its command-line flag needs: its `group` in --help, its `help`, and
    optionally `parse` (a value parser of fastcifar.cli), `choices`, `metavar`, `aliases`,
    `off=(FLAG, VALUE)` (a flag of its own that sets one value), and `find_lr=False` for a
    setting the range-test command has no flag for."""
    return field(default=default, metadata={"group": group, "help": help, **flag})


DATA, RECIPE, RANGE = "data", "recipe", "LR range test"
EVALUATION, SPEED, RUNS = "evaluation and reporting", "speed", "runs"
NO_RANGE_TEST = {"find_lr": False}


# The declarations below are a table, one setting to a line or two: kept as laid out.
# fmt: off
@dataclass(frozen=True)
class TrainConfig:
    """What to train. Recorded resolved in config.json; `--print-config` prints it as TOML."""

    data_dir: str | None = option(DATA, None, "folder holding cifar-10-batches-bin/ (or "
        "cifar-100-binary/ for --dataset cifar100, or train/ and test/ for --dataset folder) "
        "(default: "
        "$FASTCIFAR_DATA, else the cache: $FASTCIFAR_CACHE, $XDG_CACHE_HOME/fastcifar or "
        "~/.cache/fastcifar; downloaded there if missing)")
    dataset: str = option(DATA, "cifar10", "the data set: cifar10, cifar100 (its 100 fine "
        "labels; the model gets as many outputs), or folder: your own 32x32 images in "
        "--data-dir's train/<class>/ and test/<class>/ folders", choices=DATASET_NAMES)
    loader: str = option(DATA, "torch", "batch loader back end", choices=LOADER_NAMES)
    train_subset: int | None = option(DATA, None, "use the first N training images (quick runs)",
        parse="count", metavar="N")
    test_subset: int | None = option(DATA, None, "use the first N test images (quick runs)",
        parse="count", metavar="N", **NO_RANGE_TEST)
    beton_dir: str | None = option(DATA, None, "folder of the FFCV .beton files, written there "
        "if missing (default: a cache folder keyed by the data's checksums, never the data "
        "folder)")
    # The recipe: DAWNBench ResNet-9, Page's "How to train your ResNet".
    recipe: str = option(RECIPE, "assignment", "a named preset of the settings (flags and keys "
        "override it; --print-config shows what it chose): "
        + "; ".join(f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()),
        choices=RECIPE_NAMES)
    model: str = option(RECIPE, "resnet9", "the network: resnet9 (the assignment's custom "
        "ResNet, 6.57M parameters) or airbench (airbench94's, 1.97M; engine/airbench_net.py); "
        "from Python, fit(model=...) also takes a network of one's own", choices=NETWORK_NAMES)
    width: int = option(RECIPE, 64, "channels of the network's first block (64 in both: the "
        "custom ResNet's prep layer, airbench's first group); the later blocks keep their "
        "ratios to it (ResNet-9 1:2:4:8, airbench 1:4:4). Narrower trains faster: width "
        "sweeps, quick tries, tests", parse="count", metavar="CHANNELS")
    epochs: int = option(RECIPE, 24, "training epochs", parse="count")
    batch_size: int = option(RECIPE, 512, "global training batch, split evenly across torchrun "
        "ranks", parse="count")
    peak_fraction: float = option(RECIPE, 5 / 24, "where One Cycle peaks, as a fraction of the "
        "run (epoch 5 of 24)", parse="fraction", **NO_RANGE_TEST)
    lr_max: float | tuple[float, ...] | None = option(RECIPE, None, "peak LR (default: found by "
        "the LR range test); several, comma-separated: an LR sweep", parse="learning_rates",
        metavar="LR[,LR...]", **NO_RANGE_TEST)
    lr_min: float | None = option(RECIPE, None, "start and end LR (default: found by the range "
        "test, or LRMAX / lr_min_divisor)", parse="learning_rate", metavar="LR", **NO_RANGE_TEST)
    lr_min_divisor: float = option(RECIPE, 25.0, "LRMIN = LRMAX / this when no onset is found "
        "(OneCycleLR's div_factor)", parse="positive")
    lr_final_divisor: float = option(RECIPE, 1.0, "the cycle ends at LRMIN / this (1: at LRMIN, "
        "no annihilation, as the assignment asks)", parse="positive", **NO_RANGE_TEST)
    momentum: float = option(RECIPE, 0.9, "SGD momentum", parse="fraction")
    nesterov: bool = option(RECIPE, True, "Nesterov momentum")
    weight_decay: float = option(RECIPE, 5e-4, "L2 weight decay", parse="non_negative")
    optimizer: str = option(RECIPE, "sgd", "sgd: SGD for every parameter; muon: "
        "torch.optim.Muon (orthogonalised momentum) for the convolution filters, each rescaled "
        "to norm sqrt(out channels) before its step (airbench94_muon's), SGD for the rest "
        "(engine/muon.py)", choices=OPTIMIZER_NAMES)
    muon_lr_scale: float = option(RECIPE, 1.0, "with --optimizer muon: the filters' LR is this "
        "times the schedule's LR", parse="positive")
    muon_momentum: float = option(RECIPE, 0.6, "with --optimizer muon: the filters' momentum "
        "(Nesterov; airbench94_muon: 0.6)", parse="fraction")
    cycle_momentum: bool = option(RECIPE, False, "cycle momentum max -> base -> max against the "
        "LR", **NO_RANGE_TEST)
    base_momentum: float = option(RECIPE, 0.85, "lowest momentum of a cycle", parse="fraction",
        **NO_RANGE_TEST)
    max_momentum: float = option(RECIPE, 0.95, "highest momentum of a cycle", parse="fraction",
        **NO_RANGE_TEST)
    # Page scales the logits by 1/8 so that the softmax starts soft: worth ~0.5% accuracy.
    ema: float | None = option(RECIPE, None, "also keep an exponential moving average of the "
        "weights with this decay per step (0.99, say); evaluation and model.pt use the average",
        parse="fraction", metavar="DECAY", off=("--no-ema", None), **NO_RANGE_TEST)
    logit_scale: float = option(RECIPE, 0.125, "logits x this (the named networks; a model of "
        "one's own scales its own)", parse="positive")
    label_smoothing: float = option(RECIPE, 0.0, "label smoothing", parse="fraction")
    # Page's "bag of tricks" (ResNet-9 to 94% in 10 epochs): frozen scales, biases at 64x the LR.
    freeze_bn_scale: bool = option(RECIPE, False, "BatchNorm scales fixed at 1, not trained")
    bn_bias_lr_scale: float = option(RECIPE, 1.0, "BatchNorm biases train at this times the LR "
        "and this times less weight decay, so that their decay per step stays as it was (Page: "
        "64)", parse="positive", metavar="X")
    bias_decay: bool = option(RECIPE, True, "weight decay on biases and BatchNorm parameters too "
        "(--no-bias-decay: on convolution and linear weights only)")
    ghost_bn: int | None = option(RECIPE, None, "ghost BatchNorm: training statistics over "
        "sub-batches of G images (Page: 32 of 512); evaluation unchanged", parse="count",
        metavar="G", off=("--no-ghost-bn", None))
    lookahead: int | None = option(RECIPE, None, "lookahead: every K steps the weights are pulled "
        "to a slow average of themselves, its decay rising as 0.95^K x (step/steps)^3 "
        "(airbench's schedule; K 5, say)", parse="count", metavar="K", off=("--no-lookahead", None),
        **NO_RANGE_TEST)
    whitening_init: bool = option(RECIPE, False, "the first convolution starts as patch-"
        "whitening filters of the training images (then trains as any layer; Page's and "
        "airbench's whitening, as an initialisation)")
    whitening_bias_epochs: int | None = option(RECIPE, None, "the first convolution's bias "
        "(airbench's whitening layer's) trains for the first N epochs only (airbench: 3)",
        parse="count", metavar="N", off=("--no-whitening-bias-epochs", None), **NO_RANGE_TEST)
    whitening_bias_lr_scale: float | None = option(RECIPE, None, "the first convolution's "
        "bias (airbench's whitening layer's) trains at this times the LR and this times less "
        "weight decay (airbench94_muon: as its BatchNorm biases; default: as the other biases)",
        parse="positive", metavar="X", off=("--no-whitening-bias-lr-scale", None))
    dirac_init: bool = option(RECIPE, False, "the other convolutions start with their first "
        "filters as the identity (airbench's initialisation)")
    bn_reestimate: int | None = option(RECIPE, None, "after the last epoch, compute the "
        "BatchNorm statistics afresh over N training batches with the final weights (not with "
        "--ema)", parse="count", metavar="N", off=("--no-bn-reestimate", None), **NO_RANGE_TEST)
    flip: str = option(RECIPE, "random", "horizontal flips in training: random (p 0.5 per image "
        "and epoch), alternating (random in the first epoch, then each image's flip reversed "
        "every epoch) or none (for data whose mirror images are not of the same class: "
        "digits, text, signs; flip TTA is then refused)", choices=FLIP_MODES,
        off=("--no-flip", "none"))
    crop_padding: int = option(RECIPE, 4, "random crops of the image padded by this many "
        "pixels on each side (0: no crops)", parse="pixels", metavar="PIXELS")
    pad_mode: str = option(RECIPE, "mean", "what the crops' padding holds: mean (the dataset "
        "mean, 0 after normalisation; the assignment's) or reflect (the image mirrored at its "
        "edge, as airbench pads its translations)", choices=PAD_MODES, metavar="MODE")
    cutout: int = option(RECIPE, 8, "side of the square cut out of each training image (0: no "
        "cutout)", parse="pixels", metavar="PIXELS")
    seed: int = option(RECIPE, 0, "seeds the weights, the sample order and the augmentation",
        parse="seed")
    seeds: int = option(RECIPE, 1, "train N seeds (from --seed on) and report mean ± std",
        parse="count", metavar="N", **NO_RANGE_TEST)
    range_test_steps: int | None = option(RANGE, None, "steps of the LR range test (default: as "
        f"many as the training run has, at least {RANGE_TEST_MIN_STEPS} and at most "
        f"{RANGE_TEST_MAX_STEPS}; 100 for the recipe)", parse="count", metavar="N")
    range_test_start_lr: float = option(RANGE, 1e-4, "the sweep's first LR",
        parse="learning_rate", metavar="LR", aliases=("--start-lr",))
    range_test_end_lr: float = option(RANGE, 10.0, "the sweep's last LR", parse="learning_rate",
        metavar="LR", aliases=("--end-lr",))
    range_test: bool | None = option(RANGE, None, "run the LR range test (default: only when "
        "LRMAX is not given; with --range-test a sweep's plot marks the range test's LRMAX)",
        **NO_RANGE_TEST)
    eval_batch_size: int = option(EVALUATION, 1000, "test images per evaluation batch",
        parse="count", **NO_RANGE_TEST)
    tta: bool = option(EVALUATION, False, "also evaluate with flip test-time augmentation, and "
        "headline it", **NO_RANGE_TEST)
    tta_translate: bool = option(EVALUATION, False, "with --tta: also average the flip pairs of "
        "the image shifted 1 pixel up-left and 1 down-right (reflect-padded), as the public "
        "record scripts count accuracy", **NO_RANGE_TEST)
    # Evaluating 10,000 test images after each of 24 epochs is ~15% of a CPU run (issue 23).
    eval_every: int = option(EVALUATION, 1, "evaluate on the test split every N epochs, and "
        "always after the last", parse="count", metavar="N", **NO_RANGE_TEST)
    plots: bool = option(EVALUATION, True, "write the PNG plots")
    gradcam: bool = option(EVALUATION, False, "Grad-CAM grid of misclassified test images (pip "
        "install '.[gradcam]')", **NO_RANGE_TEST)
    tensorboard: bool = option(EVALUATION, False, "TensorBoard log in RUN_DIR/tensorboard (pip "
        "install '.[tensorboard]')", **NO_RANGE_TEST)
    amp: bool | None = option(SPEED, None, "mixed precision as the device runs it natively: "
        "bf16, or fp16 + GradScaler on GPUs without bf16; a CPU without native bf16 trains "
        "fp32, which is faster there (default: on with CUDA and on CPUs with native bf16)")
    channels_last: bool = option(SPEED, True, "channels_last memory format")
    compile: bool | None = option(SPEED, None, "torch.compile the model (default: on when CUDA "
        "is present)")
    # None: "reduce-overhead" (CUDA graphs), or "default" under DDP (distributed.py says why).
    # Measured outside fastcifar by a plain reference script of this recipe on an H200
    # (torch 2.11, batch 512): 3.40 ms/step with CUDA graphs against 5.68 ms in mode default.
    compile_mode: str | None = option(SPEED, None, "torch.compile mode (default: "
        "reduce-overhead; default under DDP)", choices=COMPILE_MODES)
    sync_bn: bool = option(SPEED, False, "SyncBatchNorm across torchrun ranks (CUDA)",
        **NO_RANGE_TEST)
    device: str | None = option(SPEED, None, "cpu, cuda or cuda:N (default: cuda if present, "
        "else cpu)")
    checkpoint_every: int | None = option(RUNS, None, "epochs between checkpoints (default: by "
        "time, see --checkpoint-seconds)", parse="count", metavar="N", **NO_RANGE_TEST)
    # A checkpoint is 53 MB written with fsync: 0.13-0.3 s on the development machine, which
    # per epoch would double an 8-second GPU run. By time, a fast run writes one (at the end).
    checkpoint_seconds: float = option(RUNS, 60.0, "at most one checkpoint per this many "
        "seconds of training (plus the last epoch and a stop)", parse="positive", metavar="S",
        **NO_RANGE_TEST)
    # fmt: on

    def __post_init__(self) -> None:
        with_plain_values(self)
        if isinstance(self.lr_max, list | tuple):  # a list from JSON, TOML or Python
            lr_max = tuple(self.lr_max)
            object.__setattr__(self, "lr_max", lr_max[0] if len(lr_max) == 1 else lr_max)
        check_config(self)

    @property
    def lr_maxes(self) -> tuple[float | None, ...]:
        """Every LRMAX of the plan: (None,) when it is to be found, several for a sweep."""
        if isinstance(self.lr_max, tuple):
            return self.lr_max
        return (self.lr_max,)

    @property
    def is_sweep(self) -> bool:
        return len(self.lr_maxes) > 1

    @property
    def runs(self) -> int:
        """How many runs the plan holds: seeds x LRMAX values."""
        return self.seeds * len(self.lr_maxes)

    @property
    def needs_range_test(self) -> bool:
        return self.range_test if self.range_test is not None else self.lr_max is None

    def one_run(self, seed: int, lr_max: float | None) -> TrainConfig:
        """The config of one run of the plan."""
        return replace(self, seed=seed, lr_max=lr_max, seeds=1, range_test=None)

    def resolved_range_test_steps(self, training_steps: int) -> int:
        """The range test's length: as given, else as many steps as the training run has,
        at least RANGE_TEST_MIN_STEPS and at most RANGE_TEST_MAX_STEPS (100 for the recipe)."""
        if self.range_test_steps is not None:
            return self.range_test_steps
        return min(max(training_steps, RANGE_TEST_MIN_STEPS), RANGE_TEST_MAX_STEPS)

    def training_steps(self, train_images: int) -> int:
        """Steps of one run on `train_images` images (the last partial batch is dropped);
        ConfigError when One Cycle would have fewer than 3."""
        from fastcifar.system.caller import named

        per_epoch = train_images // self.batch_size
        if per_epoch == 0:
            raise ConfigError(
                f"{named('batch_size')} {self.batch_size} is larger than the {train_images:,} "
                f"training images: not one whole batch fits (the last partial batch is dropped); "
                f"lower {named('batch_size')}"
            )
        steps = self.epochs * per_epoch
        if steps < 3:  # One Cycle needs a first, a peak and a last step
            raise ConfigError(
                f"{self.epochs} epoch(s) of {per_epoch} batch(es) make {steps} training steps; "
                f"One Cycle needs at least 3: raise {named('epochs')} or {named('train_subset')}"
            )
        return steps

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if isinstance(values["lr_max"], tuple):
            values["lr_max"] = list(values["lr_max"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "the recorded config") -> TrainConfig:
        """Rebuild from a recorded config, ignoring keys that newer versions dropped."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a table of settings, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        values = with_recipe({key: value for key, value in values.items() if key in known})
        try:
            return cls(**values)
        except TypeError as error:  # a value of the wrong type inside validate()
            raise ConfigError(f"{where} holds a value of the wrong type ({error})") from None


# fmt: off
@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the config; never part of what a run records as its config."""

    out: str | None = option(RUNS, None, "run folder (default: runs/<date>-<time>-<id>)")
    overwrite: bool = option(RUNS, False, "replace the run in --out (only once the new run has "
        "its first checkpoint)")
    resume: str | None = option(RUNS, None, "continue an unfinished run with its recorded config",
        metavar="RUN_DIR", **NO_RANGE_TEST)
    auto_resume: bool = option(RUNS, False, "continue the unfinished run in --out if it has this "
        "config (on by itself after a torchrun restart)", **NO_RANGE_TEST)
    max_time: float | None = option(RUNS, None, "stop cleanly after this long (90s, 15m, 2h, "
        "1:30:00), resumable", parse="duration", metavar="TIME", **NO_RANGE_TEST)
    max_steps: int | None = option(RUNS, None, "stop cleanly after this many training steps of "
        "a run, resumable", parse="count", metavar="N", **NO_RANGE_TEST)
    time_budget: float | None = option(RUNS, None, "train as many epochs as fit this long on "
        "this machine (30m, 2h), planned from a measured step, the evaluation and the range test "
        "before the run starts; One Cycle over them (overrides --epochs)", parse="duration",
        metavar="TIME", **NO_RANGE_TEST)
    quiet: bool = option(RUNS, False, "print only warnings and errors (no progress, no epoch "
        "lines); the run folder records everything as always")
    parallel: str = option(RUNS, "auto", "under torchrun: 'runs' gives each rank whole runs of "
        "--seeds/--lr-max, 'data' trains every run across all ranks (DDP); auto: runs for "
        "several runs, else data", choices=PARALLEL_MODES, **NO_RANGE_TEST)
    # fmt: on

    # Options that may accompany --resume (they do not change what is trained).
    BESIDE_RESUME = ("max_time", "max_steps", "parallel", "quiet")

    def __post_init__(self) -> None:
        with_plain_values(self)
