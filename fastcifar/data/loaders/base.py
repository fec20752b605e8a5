"""The interface every batch loader back end implements, and what they share.

Every back end implements `BatchLoader`: iterating it runs one epoch and yields
`(images, labels)` on the training device, where images are normalised float32
(B, 3, 32, 32) tensors in channels_last memory format and labels are int64 (B,).
The order and the augmentation of epoch e come from `augmentation.draw_epoch(seed, e)`, so
every back end serves the same samples with the same draws; each back end only applies them.
`set_epoch` chooses the next epoch (and where in it to start), which is how a run resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fastcifar.data.augmentation import SPEC, AugmentationSpec, EpochDraws, draw_epoch, rank_order
from fastcifar.data.normalisation import CIFAR10, Normalisation

# File names of the FFCV .beton files of the two splits (written by data_prep/write_beton.py).


class BatchLoader(Protocol):
    batch_size: int  # per rank

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (images, labels) on the training device; the next one follows."""

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """The next iteration runs `epoch`, starting at batch `skip_batches`."""


# On the CPU the torch loader's compiled augmentation ran at 430k img/s against 110k eager
# (batch 512, the 2-core AMX Xeon, torch 2.14.1): 7.7 us an image saved, for a compile of 0.8 s
# (inductor's cache warm) to 9 s (cold), so it pays from ~0.1M to ~1.2M images. Every recipe
# (8 or more epochs of 50,000) compiles, as its recorded runs did; slices and first tries, which
# compiling made seconds slower, augment eagerly.
COMPILE_PAYS_FROM = 400_000
# A loader of one's own (CifarTensorLoader.from_arrays) does not know its epochs: it decides as
# a run of the recipe's length would.
ASSUMED_EPOCHS = 24


def compile_pays(device: torch.device, images: int, model_compiled: bool) -> bool:
    """Whether a run that augments `images` images on `device` compiles the augmentation: always
    on a GPU (eagerly its ~20 small kernels launch one by one) and with a compiled model (the
    warm-up compiles both); on the CPU from COMPILE_PAYS_FROM images."""
    return device.type != "cpu" or model_compiled or images >= COMPILE_PAYS_FROM


@dataclass(frozen=True)
class LoaderOptions:
    """What every back end needs to know; `augment` applies the spec, `shuffle` a seeded order."""

    batch_size: int  # per rank: the global batch divided by world_size
    device: torch.device
    augment: bool = False
    shuffle: bool = False
    drop_last: bool = False
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    spec: AugmentationSpec = field(default=SPEC)
    normalisation: Normalisation = CIFAR10  # the data set's statistics; fills become 0.0
    # torch loader: torch.compile the per-batch augmentation (falls back to eager on failure);
    # a training run sets it by `compile_pays`.
    compile_augmentation: bool = True
    # FFCV reads .beton files; where to find (or write) the one for this split.
    beton_path: Path | None = None

    def batches_per_epoch(self, examples: int) -> int:
        if self.drop_last:
            return examples // (self.batch_size * self.world_size)
        return -(-examples // self.batch_size)

    def epoch(self, count: int, epoch: int) -> tuple[EpochDraws, np.ndarray]:
        """The draws of `epoch` and this rank's sample order, batch after batch."""
        draws = draw_epoch(count, self.seed, epoch, shuffle=self.shuffle, spec=self.spec)
        order = rank_order(draws.order, self.batch_size, self.rank, self.world_size, self.drop_last)
        return draws, order


class EpochCounter:
    """Which epoch the next iteration runs, and from which batch (shared by the back ends)."""

    def __init__(self) -> None:
        self.next_epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if epoch < 0 or skip_batches < 0:
            raise ValueError(f"epoch and skip_batches must be >= 0, got {epoch}, {skip_batches}")
        self.next_epoch, self.skip_batches = epoch, skip_batches

    def start(self) -> tuple[int, int]:
        """(epoch, first batch) of the iteration that starts now; advances to the next epoch."""
        started = self.next_epoch, self.skip_batches
        self.next_epoch, self.skip_batches = self.next_epoch + 1, 0
        return started
