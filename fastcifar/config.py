"""The one typed place for every default of a training run; CLI flags map onto these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fastcifar.loaders import LOADER_NAMES

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    # Data
    data_dir: str | None = None  # None: $FASTCIFAR_DATA, else ~/.cache/fastcifar
    loader: str = "torch"  # torch | ffcv | dali; all three apply the same augmentation spec
    train_subset: int | None = None  # first N training images, for quick runs
    beton_dir: str | None = None  # FFCV .beton files (written if missing); None: the data folder
    # Recipe (DAWNBench ResNet-9, Page's "How to train your ResNet")
    epochs: int = 24
    batch_size: int = 512
    eval_batch_size: int = 1000  # divides the 10,000 test images: one shape, one compiled graph
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
    range_test_steps: int = 100
    range_test_start_lr: float = 1e-4
    range_test_end_lr: float = 10.0
    # Speed
    amp: bool = False  # bf16 autocast where supported, else fp16 with GradScaler
    channels_last: bool = True
    compile: bool | None = None  # None: on when CUDA is present
    compile_mode: str = "reduce-overhead"  # CUDA graphs: 3.40 ms/step vs 5.68 default (H200)
    # Run
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    out: str | None = None  # run folder; None: runs/<timestamp>
    plots: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require(
            self.loader in LOADER_NAMES,
            f"unknown loader {self.loader!r}: choose one of {', '.join(LOADER_NAMES)}",
        )
        for name in ("epochs", "batch_size", "eval_batch_size", "range_test_steps"):
            value = getattr(self, name)
            _require(value >= 1, f"{name} must be a positive integer, got {value}")
        if self.train_subset is not None:
            _require(
                self.train_subset >= self.batch_size,
                f"train_subset ({self.train_subset}) must be at least batch_size "
                f"({self.batch_size}): training drops the last partial batch",
            )
        for name in ("lr_max", "lr_min"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} must be positive, got {value}")
        _require(
            not (self.lr_min is not None and self.lr_max is None),
            "lr_min needs lr_max too (or neither, to find both by the LR range test)",
        )
        if self.lr_min is not None and self.lr_max is not None:
            _require(
                self.lr_min <= self.lr_max,
                f"lr_min ({self.lr_min}) must not exceed lr_max ({self.lr_max})",
            )
        _require(
            0 < self.peak_fraction < 1,
            f"peak_fraction must lie in (0, 1), got {self.peak_fraction}",
        )
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}")
        _require(
            0 <= self.label_smoothing < 1,
            f"label_smoothing must lie in [0, 1), got {self.label_smoothing}",
        )
        _require(
            0 < self.range_test_start_lr < self.range_test_end_lr,
            "range test needs 0 < range_test_start_lr < range_test_end_lr",
        )
        _require(self.lr_min_divisor >= 1, "lr_min_divisor must be >= 1")
        _require(
            self.compile_mode in COMPILE_MODES,
            f"unknown compile mode {self.compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from a recorded config, ignoring keys that newer versions dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
