"""The one typed place for every default of a training run; CLI flags map onto these fields.

Nothing here imports torch, so that `--help` and flag errors answer in a fraction of a second.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastcifar.errors import ConfigError

LOADER_NAMES = ("torch", "ffcv", "dali")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Sane upper bounds: beyond them a value is a typo, and the run would only exhaust memory or time.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 50_000  # the whole CIFAR-10 training split
MAX_RANGE_TEST_STEPS = 10_000
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take it
# The range test's default length: as many steps as the training run has, within these bounds.
RANGE_TEST_MIN_STEPS, RANGE_TEST_MAX_STEPS = 10, 100
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class TrainConfig:
    # Data
    data_dir: str | None = (
        None  # None: $FASTCIFAR_DATA, else ~/.cache/fastcifar (recorded resolved)
    )
    loader: str = "torch"  # torch | ffcv | dali; all three apply the same augmentation spec
    train_subset: int | None = None  # first N training images, for quick runs
    test_subset: int | None = None  # first N test images, for quick runs
    beton_dir: str | None = None  # FFCV .beton files (written if missing); None: the data folder
    # Recipe (DAWNBench ResNet-9, Page's "How to train your ResNet")
    epochs: int = 24
    batch_size: int = 512  # the global batch: split evenly across ranks under torchrun
    eval_batch_size: int = 1000  # the last batch is padded, so any size keeps one compiled shape
    peak_fraction: float = 5 / 24  # One Cycle peaks at epoch 5 of 24 (scaled for other lengths)
    lr_max: float | None = None  # None: found by the LR range test
    lr_min: float | None = None  # None: found by the LR range test (or lr_max / lr_min_divisor)
    lr_min_divisor: float = 25.0  # OneCycleLR's default div_factor, used when no onset is found
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    cycle_momentum: bool = False  # True: momentum cycles max_momentum -> base_momentum -> max
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    # Page's recipe scales logits by 1/8 so the softmax starts soft; it is worth ~0.5% accuracy.
    logit_scale: float = 0.125
    label_smoothing: float = 0.0
    # LR range test
    range_test_steps: int | None = None  # None: see `resolved_range_test_steps`
    range_test_start_lr: float = 1e-4
    range_test_end_lr: float = 10.0
    # Evaluation
    tta: bool = False  # also evaluate with flip test-time augmentation, and headline it
    # Speed
    amp: bool | None = None  # None: on where the device runs bf16/fp16 natively (device.py)
    channels_last: bool = True
    compile: bool | None = None  # None: on when CUDA is present
    # None: "reduce-overhead" (CUDA graphs), or "default" under torchrun (experiment.py says
    # why). CUDA graphs were measured outside fastcifar, by a plain reference script of this
    # recipe on an H200 (torch 2.11, batch 512): 3.40 ms/step against 5.68 ms in mode default.
    compile_mode: str | None = None
    sync_bn: bool = False  # SyncBatchNorm across ranks under torchrun (CUDA only)
    # Run
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always has one)
    plots: bool = True
    gradcam: bool = False  # Grad-CAM grid of misclassified test images (extra: gradcam)
    tensorboard: bool = False  # RUN_DIR/tensorboard/ event files (extra: tensorboard)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require(
            self.loader in LOADER_NAMES,
            f"unknown loader {self.loader!r}: choose one of {', '.join(LOADER_NAMES)}",
        )
        _check_integers(self)
        _check_learning_rates(self)
        _check_fractions(self)
        _require(
            self.compile_mode is None or self.compile_mode in COMPILE_MODES,
            f"unknown compile mode {self.compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}",
        )
        _require(
            self.device is None or DEVICE_PATTERN.fullmatch(self.device) is not None,
            f"unknown device {self.device!r}: fastcifar runs on cpu, cuda or cuda:N",
        )

    def resolved_range_test_steps(self, training_steps: int) -> int:
        """The range test's length: as given, else as many steps as the training run has,
        at least RANGE_TEST_MIN_STEPS and at most RANGE_TEST_MAX_STEPS (100 for the recipe)."""
        if self.range_test_steps is not None:
            return self.range_test_steps
        return min(max(training_steps, RANGE_TEST_MIN_STEPS), RANGE_TEST_MAX_STEPS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from a recorded config, ignoring keys that newer versions dropped."""
        if not isinstance(values, dict):
            raise ConfigError(
                f"a recorded config must be a JSON object, got {type(values).__name__}"
            )
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except TypeError as error:  # a value of the wrong type inside validate()
            raise ConfigError(
                f"the recorded config holds a value of the wrong type ({error})"
            ) from None


def _check_integers(config: TrainConfig) -> None:
    bounds = {
        "epochs": MAX_EPOCHS,
        "batch_size": MAX_BATCH_SIZE,
        "eval_batch_size": MAX_BATCH_SIZE,
        "range_test_steps": MAX_RANGE_TEST_STEPS,
        "checkpoint_every": MAX_EPOCHS,
        "train_subset": None,
        "test_subset": None,
    }
    for name, high in bounds.items():
        value = getattr(config, name)
        if value is None and name in ("range_test_steps", "train_subset", "test_subset"):
            continue
        if name == "range_test_steps":  # a curve needs two points
            _require(
                isinstance(value, int) and value >= 2,
                f"range_test_steps must be at least 2, got {value!r}",
            )
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{name} must be a positive integer, got {value!r}",
        )
        if high is not None:
            _require(value <= high, f"{name} must be at most {high:,}, got {value:,}")
    _require(
        isinstance(config.seed, int) and 0 <= config.seed <= MAX_SEED,
        f"seed must be an integer from 0 to {MAX_SEED}, got {config.seed!r}",
    )
    if config.train_subset is not None:
        _require(
            config.train_subset >= config.batch_size,
            f"train_subset ({config.train_subset}) must be at least batch_size "
            f"({config.batch_size}): training drops the last partial batch",
        )


def _check_learning_rates(config: TrainConfig) -> None:
    for name in ("lr_max", "lr_min"):
        value = getattr(config, name)
        _require(
            value is None or (math.isfinite(value) and value > 0),
            f"{name} must be a finite positive number, got {value}",
        )
    _require(
        not (config.lr_min is not None and config.lr_max is None),
        "lr_min needs lr_max too (or neither, to find both by the LR range test)",
    )
    if config.lr_min is not None and config.lr_max is not None:
        _require(
            config.lr_min <= config.lr_max,
            f"lr_min ({config.lr_min}) must not exceed lr_max ({config.lr_max})",
        )
    _require(
        math.isfinite(config.range_test_end_lr)
        and 0 < config.range_test_start_lr < config.range_test_end_lr,
        "range test needs 0 < range_test_start_lr < range_test_end_lr, both finite",
    )
    _require(
        math.isfinite(config.lr_min_divisor) and config.lr_min_divisor >= 1,
        "lr_min_divisor must be a finite number >= 1",
    )


def _check_fractions(config: TrainConfig) -> None:
    _require(
        0 < config.peak_fraction < 1,
        f"peak_fraction must lie in (0, 1), got {config.peak_fraction}",
    )
    _require(
        math.isfinite(config.weight_decay) and config.weight_decay >= 0,
        f"weight_decay must be a finite number >= 0, got {config.weight_decay}",
    )
    _require(0 <= config.momentum < 1, f"momentum must lie in [0, 1), got {config.momentum}")
    _require(
        0 <= config.label_smoothing < 1,
        f"label_smoothing must lie in [0, 1), got {config.label_smoothing}",
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
