"""Batch loaders: one interface, three back ends (torch-native, FFCV, DALI).

Every back end implements `BatchLoader`: iterating it runs one epoch and yields
`(images, labels)` on the training device, where images are normalised float32
(B, 3, 32, 32) tensors in channels_last memory format and labels are int64 (B,).
Each new iteration is a new epoch with fresh, seeded random draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from fastcifar.augmentation import SPEC, AugmentationSpec
from fastcifar.data_source import CifarSplit

LOADER_NAMES = ("torch", "ffcv", "dali")
# File names of the FFCV .beton files of the two splits (written by data_prep/write_beton.py).
BETON_NAMES = {"train": "cifar10_train.beton", "test": "cifar10_test.beton"}


class BatchLoader(Protocol):
    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (images, labels) on the training device."""


@dataclass(frozen=True)
class LoaderOptions:
    """What every back end needs to know; `augment` applies the spec, `shuffle` a seeded order."""

    batch_size: int
    device: torch.device
    augment: bool = False
    shuffle: bool = False
    drop_last: bool = False
    seed: int = 0
    spec: AugmentationSpec = field(default=SPEC)
    # torch loader: torch.compile the per-batch augmentation (falls back to eager on failure).
    compile_augmentation: bool = True
    # FFCV reads .beton files; where to find (or write) the one for this split.
    beton_path: Path | None = None

    def batches_per_epoch(self, examples: int) -> int:
        if self.drop_last:
            return examples // self.batch_size
        return -(-examples // self.batch_size)


class MissingBackendError(RuntimeError):
    """An optional loader back end is not installed."""


def make_loader(name: str, split: CifarSplit, options: LoaderOptions) -> BatchLoader:
    """Build the named back end over `split`."""
    if name == "torch":
        from fastcifar.loaders.torch_loader import CifarTensorLoader

        return CifarTensorLoader(split, options)
    if name == "ffcv":
        from fastcifar.loaders.ffcv_loader import CifarFfcvLoader

        return CifarFfcvLoader(split, options)
    if name == "dali":
        from fastcifar.loaders.dali_loader import CifarDaliLoader

        return CifarDaliLoader(split, options)
    raise ValueError(f"unknown loader {name!r}: choose one of {', '.join(LOADER_NAMES)}")
