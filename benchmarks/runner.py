"""Timed training epochs and loader-only epochs, through fastcifar's own engine.

A row's trainer is the one `python -m fastcifar.train` builds
(`fastcifar.training.trainer.build`), with its One Cycle state, and an epoch is the engine's
(`engine.run_steps`: augmentation + forward + loss + backward + SGD step + LR schedule, then the
epoch's one read-back), so the suite times what a run runs. Each timed region starts and
ends with a device synchronisation; warm-up epochs (compilation, autotuning, CUDA-graph recording,
worker start-up) are timed on their own and never mixed into the epoch figure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.settings import (
    FULL_EPOCH_IMAGES,
    OPTIONAL_LOADERS,
    RECIPE_EPOCHS,
    REFERENCE,
    BenchConfig,
    BenchSizes,
)
from fastcifar.data.dataset import CifarSplit, Dataset
from fastcifar.data.loaders import LoaderOptions, compile_pays, make_loader
from fastcifar.data.spec import CIFAR10
from fastcifar.engine.compilation import CompileCounts, compile_counts
from fastcifar.engine.schedule import given_bounds
from fastcifar.engine.step import EpochAccumulator, run_steps
from fastcifar.records.config import TrainConfig
from fastcifar.system.device import timed
from fastcifar.system.distributed import Distributed
from fastcifar.training.loop import new_state
from fastcifar.training.trainer import Trainer, build

# Speed does not depend on the learning rate; this keeps synthetic-data training finite.
LR_MAX = 0.4
CLASS_NAMES = tuple(str(index) for index in range(10))


def synthetic_split(count: int, seed: int = 0) -> CifarSplit:
    """Random uint8 images and labels of CIFAR-10's shape: the speed is that of real data."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return CifarSplit(images, rng.integers(0, 10, size=count, dtype=np.int64))


@dataclass(frozen=True)
class BenchEnv:
    """What every benchmark shares: device, sizes, the synthetic data, a scratch folder."""

    device: torch.device
    sizes: BenchSizes
    train_split: CifarSplit
    loader_split: CifarSplit
    scratch: Path


class ContiguousBatches:
    """Hands a channels_last loader's batches over as plain NCHW, to time the NCHW model."""

    def __init__(self, batches: Iterable) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.batches:
            yield images.contiguous(), labels


def train_config(
    config: BenchConfig, sizes: BenchSizes, device: torch.device, beton_dir: Path
) -> TrainConfig:
    """The TrainConfig of a row: its loader, precision, layout and compile mode; the recipe's
    other settings; LR bounds given (speed does not depend on them)."""
    return TrainConfig(
        loader=config.loader if config.loader != REFERENCE else "torch",
        beton_dir=str(beton_dir),
        batch_size=sizes.batch_size,
        epochs=sizes.warmup_epochs + sizes.timed_epochs,
        lr_max=LR_MAX,
        amp=config.amp,
        channels_last=config.channels_last,
        compile=config.compile_mode is not None,
        compile_mode=config.compile_mode,
        device=str(device),
        plots=False,
    )


def _batches(
    config: BenchConfig, trainer: Trainer, split: CifarSplit, sizes: BenchSizes, device
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The trainer's own loader (the torch loader's augmentation compiled as in the recipe's
    whole run); the reference pipeline for its row; plain NCHW batches for the NCHW rows (the
    model of those rows is NCHW too)."""
    if config.loader == REFERENCE:
        return build_batches(config, split, sizes.batch_size, device, Path())
    loader = trainer.train_loader
    if config.loader == "torch":
        # The epoch stands for one of the recipe's, whose whole run decides whether the
        # augmentation compiles (compile_pays); this row's few epochs alone would not.
        images = RECIPE_EPOCHS * FULL_EPOCH_IMAGES
        compiled = compile_pays(device, images, model_compiled=trainer.compiled)
        loader = make_loader("torch", split, replace(loader.options, compile_augmentation=compiled))
    return loader if config.channels_last else ContiguousBatches(loader)


def synthetic_betons(beton_dir: Path, split: CifarSplit) -> Path:
    """The one folder of a synthetic split's beton: the loader rows and the training rows of
    one size share it (the beton is checked against the split before it is used)."""
    return beton_dir / f"synthetic-{len(split)}"


def build_batches(
    config: BenchConfig, split: CifarSplit, batch_size: int, device: torch.device, beton_dir: Path
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The augmented, shuffled batches of a loader-only row (no model)."""
    if config.loader == REFERENCE:
        from benchmarks.reference_pipeline import ReferenceBatches

        return ReferenceBatches(split, batch_size, device)
    options = LoaderOptions(
        batch_size=batch_size,
        device=device,
        augment=True,
        shuffle=True,
        drop_last=True,
        beton_path=synthetic_betons(beton_dir, split) / CIFAR10.beton_names["train"],
    )
    return make_loader(config.loader, split, options)


@contextlib.contextmanager
def skip_if_backend_broken(loader: str) -> Iterator[None]:
    """FFCV and DALI are optional: where one cannot build or run, its rows are skipped, with why.

    CI sets $FASTCIFAR_REQUIRE_BACKENDS (as for tests/), and then a broken back end fails instead.
    """
    if loader not in OPTIONAL_LOADERS or os.environ.get("FASTCIFAR_REQUIRE_BACKENDS"):
        yield
        return
    try:
        yield
    except Exception as error:
        first_line = (str(error).splitlines() or [""])[0]
        pytest.skip(f"{loader} loader does not work here: {type(error).__name__}: {first_line}")


@dataclass
class EpochResult:
    config: BenchConfig
    images_per_epoch: int
    batch_size: int
    precision: str = "fp32"
    workers: int | None = None  # DataLoader workers (reference pipeline only)
    warmup_seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    # Compiled during the timed epochs (all must be 0): Dynamo frames, CUDA-graph recordings,
    # graphs CUDA graphs had to skip.
    recompiled_frames: int = 0
    rerecorded_cuda_graphs: int = 0
    cuda_graph_skips: int = 0

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["config"] = {**asdict(self.config), "label": self.config.label}
        return values


@dataclass
class LoaderResult:
    loader: str
    images_per_epoch: int
    workers: int | None = None
    warmup_seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TimedEpochs:
    """Warm-up epochs and timed epochs of `_epoch`, recorded in `self.result`."""

    device: torch.device
    result: EpochResult | LoaderResult

    def warm_up(self, epochs: int) -> None:
        for _ in range(epochs):
            self.result.warmup_seconds.append(timed(self.device, self._epoch))

    def run_epoch(self) -> None:
        """One timed epoch; pytest-benchmark calls this once per round."""
        self.result.epoch_seconds.append(timed(self.device, self._epoch))

    def _epoch(self) -> None:
        raise NotImplementedError


class EpochRunner(TimedEpochs):
    """One configuration's training epochs, through fastcifar's own engine: the trainer that
    `python -m fastcifar.train` builds (`trainer.build`), its One Cycle state, its step."""

    def __init__(
        self,
        config: BenchConfig,
        split: CifarSplit,
        sizes: BenchSizes,
        device: torch.device,
        beton_dir: Path,
    ) -> None:
        self.device = device
        if config.compile_mode:
            # Each compiled row starts as a fresh process would: a dozen compiled models in one
            # process exceed Dynamo's recompile limit (8) and would silently fall back to eager.
            torch._dynamo.reset()
        trainer = build(
            train_config(config, sizes, device, synthetic_betons(beton_dir, split)),
            Dataset(split, CifarSplit(split.images[:64], split.labels[:64]), CLASS_NAMES),
            device,
            Distributed(),
        )
        state = new_state(trainer, given_bounds(trainer.config))
        self.ctx = trainer.step_context(state.scheduler, state.scaler)
        self.batches = _batches(config, trainer, split, sizes, device)
        self.result = EpochResult(
            config,
            images_per_epoch=len(self.batches) * sizes.batch_size,
            batch_size=sizes.batch_size,
            precision=trainer.precision.name,
            workers=getattr(self.batches, "workers", None),
        )
        self.counts_after_warm_up = compile_counts()

    def warm_up(self, epochs: int) -> None:
        super().warm_up(epochs)
        self.counts_after_warm_up = compile_counts()

    def run_epoch(self) -> None:
        super().run_epoch()
        since: CompileCounts = compile_counts() - self.counts_after_warm_up
        self.result.recompiled_frames = since.dynamo_frames
        self.result.rerecorded_cuda_graphs = since.cuda_graphs
        self.result.cuda_graph_skips = since.cuda_graph_skips

    def _epoch(self) -> None:
        accumulator = EpochAccumulator(len(self.batches), self.device)
        run_steps(self.ctx, self.batches, accumulator)
        accumulator.read(lambda totals: totals, self.result.batch_size)


class LoaderRunner(TimedEpochs):
    """Epochs of batches alone (augmentation and transfer, no model), timed like training."""

    def __init__(self, batches: Iterable, name: str, batch_size: int, device: torch.device):
        self.batches = batches
        self.device = device
        self.result = LoaderResult(
            name, len(batches) * batch_size, workers=getattr(batches, "workers", None)
        )

    def _epoch(self) -> None:
        for _images, _labels in self.batches:
            pass
