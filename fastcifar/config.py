"""The one typed place for every setting: `TrainConfig` (what to train, recorded with every run)
and `RunOptions` (how this invocation runs it). Each field is declared once, with the help text,
choices and value type that the command-line flags are generated from (`fastcifar.cli`), and
read from and written to TOML files (`--config`, `--print-config`).

Nothing here imports torch, so that `--help` and flag errors answer in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fastcifar.config_checks import COMPILE_MODES, LOADER_NAMES, PARALLEL_MODES, check_config
from fastcifar.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The range test's default length: as many steps as the training run has, within these bounds.
RANGE_TEST_MIN_STEPS, RANGE_TEST_MAX_STEPS = 10, 100
CIFAR10_TRAIN_IMAGES = 50_000


def option(default: Any, help: str, **flag: Any) -> Any:
    """A field with what its command-line flag needs: `help`, and optionally `group`, `parse`
    (a value parser of fastcifar.cli), `choices`, `metavar`, `aliases`, `find_lr` (False: the
    range-test command has no such flag)."""
    return field(default=default, metadata={"help": help, **flag})


DATA, RECIPE, RANGE, EVALUATION, SPEED, RUNS = (
    "data",
    "recipe",
    "LR range test",
    "evaluation and reporting",
    "speed",
    "runs",
)


@dataclass(frozen=True)
class TrainConfig:
    """What to train. Recorded resolved in config.json; `--print-config` prints it as TOML."""

    data_dir: str | None = option(
        None,
        "folder holding cifar-10-batches-bin/ (default: $FASTCIFAR_DATA, else "
        "~/.cache/fastcifar; downloaded there if missing)",
        group=DATA,
    )
    loader: str = option("torch", "batch loader back end", group=DATA, choices=LOADER_NAMES)
    train_subset: int | None = option(
        None,
        "use the first N training images (quick runs)",
        group=DATA,
        parse="count",
        metavar="N",
    )
    test_subset: int | None = option(
        None,
        "use the first N test images (quick runs)",
        group=DATA,
        parse="count",
        metavar="N",
        find_lr=False,
    )
    beton_dir: str | None = option(
        None,
        "folder of the FFCV .beton files, written there if missing (default: a cache folder "
        "keyed by the data's checksums, never the data folder)",
        group=DATA,
    )
    # The recipe: DAWNBench ResNet-9, Page's "How to train your ResNet".
    epochs: int = option(24, "training epochs", group=RECIPE, parse="count")
    batch_size: int = option(
        512,
        "global training batch, split evenly across torchrun ranks",
        group=RECIPE,
        parse="count",
    )
    peak_fraction: float = option(
        5 / 24,
        "where One Cycle peaks, as a fraction of the run (epoch 5 of 24)",
        group=RECIPE,
        parse="fraction",
        find_lr=False,
    )
    lr_max: float | tuple[float, ...] | None = option(
        None,
        "peak LR (default: found by the LR range test); several, comma-separated: an LR sweep",
        group=RECIPE,
        parse="learning_rates",
        metavar="LR[,LR...]",
        find_lr=False,
    )
    lr_min: float | None = option(
        None,
        "start and end LR (default: found by the range test, or LRMAX / lr_min_divisor)",
        group=RECIPE,
        parse="learning_rate",
        metavar="LR",
        find_lr=False,
    )
    lr_min_divisor: float = option(
        25.0,
        "LRMIN = LRMAX / this when no onset is found (OneCycleLR's div_factor)",
        group=RECIPE,
        parse="positive",
    )
    momentum: float = option(0.9, "SGD momentum", group=RECIPE, parse="fraction")
    nesterov: bool = option(True, "Nesterov momentum", group=RECIPE)
    weight_decay: float = option(5e-4, "L2 weight decay", group=RECIPE, parse="non_negative")
    cycle_momentum: bool = option(
        False, "cycle momentum max -> base -> max against the LR", group=RECIPE, find_lr=False
    )
    base_momentum: float = option(
        0.85, "lowest momentum of a cycle", group=RECIPE, parse="fraction", find_lr=False
    )
    max_momentum: float = option(
        0.95, "highest momentum of a cycle", group=RECIPE, parse="fraction", find_lr=False
    )
    # Page scales the logits by 1/8 so that the softmax starts soft: worth ~0.5% accuracy.
    logit_scale: float = option(
        0.125, "logits x this (ResNet-9 only)", group=RECIPE, parse="positive"
    )
    label_smoothing: float = option(0.0, "label smoothing", group=RECIPE, parse="fraction")
    seed: int = option(
        0,
        "seeds the weights, the sample order and the augmentation",
        group=RECIPE,
        parse="seed",
    )
    seeds: int = option(
        1,
        "train N seeds (from --seed on) and report mean ± std",
        group=RECIPE,
        parse="count",
        metavar="N",
        find_lr=False,
    )
    range_test_steps: int | None = option(
        None,
        f"steps of the LR range test (default: as many as the training run has, at least "
        f"{RANGE_TEST_MIN_STEPS} and at most {RANGE_TEST_MAX_STEPS}; 100 for the recipe)",
        group=RANGE,
        parse="count",
        metavar="N",
    )
    range_test_start_lr: float = option(
        1e-4,
        "the sweep's first LR",
        group=RANGE,
        parse="learning_rate",
        metavar="LR",
        aliases=("--start-lr",),
    )
    range_test_end_lr: float = option(
        10.0,
        "the sweep's last LR",
        group=RANGE,
        parse="learning_rate",
        metavar="LR",
        aliases=("--end-lr",),
    )
    range_test: bool | None = option(
        None,
        "run the LR range test (default: only when LRMAX is not given; with --range-test a "
        "sweep's plot marks the range test's LRMAX)",
        group=RANGE,
        find_lr=False,
    )
    eval_batch_size: int = option(
        1000,
        "test images per evaluation batch",
        group=EVALUATION,
        parse="count",
        find_lr=False,
    )
    tta: bool = option(
        False,
        "also evaluate with flip test-time augmentation, and headline it",
        group=EVALUATION,
        find_lr=False,
    )
    plots: bool = option(True, "write the PNG plots", group=EVALUATION)
    gradcam: bool = option(
        False,
        "Grad-CAM grid of misclassified test images (pip install '.[gradcam]')",
        group=EVALUATION,
        find_lr=False,
    )
    tensorboard: bool = option(
        False,
        "TensorBoard log in RUN_DIR/tensorboard (pip install '.[tensorboard]')",
        group=EVALUATION,
        find_lr=False,
    )
    amp: bool | None = option(
        None,
        "mixed precision as the device runs it natively: bf16, or fp16 + GradScaler on GPUs "
        "without bf16; a CPU without native bf16 trains fp32, which is faster there "
        "(default: on with CUDA and on CPUs with native bf16)",
        group=SPEED,
    )
    channels_last: bool = option(True, "channels_last memory format", group=SPEED)
    compile: bool | None = option(
        None, "torch.compile the model (default: on when CUDA is present)", group=SPEED
    )
    # None: "reduce-overhead" (CUDA graphs), or "default" under DDP (distributed.py says why).
    # Measured outside fastcifar by a plain reference script of this recipe on an H200
    # (torch 2.11, batch 512): 3.40 ms/step with CUDA graphs against 5.68 ms in mode default.
    compile_mode: str | None = option(
        None,
        "torch.compile mode (default: reduce-overhead; default under DDP)",
        group=SPEED,
        choices=COMPILE_MODES,
    )
    sync_bn: bool = option(
        False, "SyncBatchNorm across torchrun ranks (CUDA)", group=SPEED, find_lr=False
    )
    device: str | None = option(
        None, "cpu, cuda or cuda:N (default: cuda if present, else cpu)", group=SPEED
    )
    checkpoint_every: int | None = option(
        None,
        "epochs between checkpoints (default: by time, see --checkpoint-seconds)",
        group=RUNS,
        parse="count",
        metavar="N",
        find_lr=False,
    )
    # A checkpoint is 53 MB written with fsync: 0.13-0.3 s on the development machine, which
    # per epoch would double an 8-second GPU run. By time, a fast run writes one (at the end).
    checkpoint_seconds: float = option(
        60.0,
        "at most one checkpoint per this many seconds of training (plus the last epoch and a stop)",
        group=RUNS,
        parse="positive",
        metavar="S",
        find_lr=False,
    )

    def __post_init__(self) -> None:
        if isinstance(self.lr_max, list):  # from JSON or TOML
            object.__setattr__(self, "lr_max", tuple(self.lr_max))
        self.validate()

    def validate(self) -> None:
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
        per_epoch = train_images // self.batch_size
        steps = self.epochs * per_epoch
        if steps < 3:  # One Cycle needs a first, a peak and a last step
            raise ConfigError(
                f"{self.epochs} epoch(s) of {per_epoch} batch(es) make {steps} training steps; "
                "One Cycle needs at least 3: raise --epochs or --train-subset"
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
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except TypeError as error:  # a value of the wrong type inside validate()
            raise ConfigError(f"{where} holds a value of the wrong type ({error})") from None

    def to_toml(self) -> str:
        """The config as TOML: every setting with its help as a comment; None (the default
        of every optional setting) is left out, which TOML cannot write anyway."""
        lines = ["# fastcifar training config: python -m fastcifar.train --config THIS_FILE", ""]
        for item in fields(self):
            value = getattr(self, item.name)
            lines.append(f"# {item.metadata['help']}")
            prefix = "# " if value is None else ""
            lines.append(f"{prefix}{item.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)  # ints, and strings in TOML's basic-string escapes


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML config file; unknown keys are one ConfigError with a suggestion."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path} is not valid TOML ({error})") from None
    known = [f.name for f in fields(TrainConfig)]
    for key in values:
        if key not in known:
            raise ConfigError(f"--config {path}: unknown setting {key!r}{suggestion(key, known)}")
    return values


def suggestion(word: str, candidates: list[str]) -> str:
    """ "; did you mean 'epochs'?" for the closest candidate, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the config; never part of what a run records as its config."""

    out: str | None = option(None, "run folder (default: runs/<date>-<time>-<id>)", group=RUNS)
    overwrite: bool = option(
        False,
        "replace the run in --out (only once the new run has its first checkpoint)",
        group=RUNS,
    )
    resume: str | None = option(
        None,
        "continue an unfinished run with its recorded config",
        group=RUNS,
        metavar="RUN_DIR",
        find_lr=False,
    )
    auto_resume: bool = option(
        False,
        "continue the unfinished run in --out if it has this config (on by itself after a "
        "torchrun restart)",
        group=RUNS,
        find_lr=False,
    )
    max_time: float | None = option(
        None,
        "stop cleanly after this long (90s, 15m, 2h, 1:30:00), resumable",
        group=RUNS,
        parse="duration",
        metavar="TIME",
        find_lr=False,
    )
    max_steps: int | None = option(
        None,
        "stop cleanly after this many training steps of a run, resumable",
        group=RUNS,
        parse="count",
        metavar="N",
        find_lr=False,
    )
    parallel: str = option(
        "auto",
        "under torchrun: 'runs' gives each rank whole runs of --seeds/--lr-max, 'data' "
        "trains every run across all ranks (DDP); auto: runs for several runs, else data",
        group=RUNS,
        choices=PARALLEL_MODES,
        find_lr=False,
    )

    # Options that may accompany --resume (they do not change what is trained).
    BESIDE_RESUME = ("max_time", "max_steps", "parallel")
