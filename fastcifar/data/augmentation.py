"""The augmentation spec and its random draws, written down once; every loader back end applies
these draws and is tested against the spec.

Training images go through, in this order:
  1. RandomCrop 32x32 after padding 4 pixels on each side (9 x 9 = 81 equally likely offsets);
  2. FlipLR with probability 0.5 (flip_mode "random"); or, "alternating", each image flipped at
     random in epoch 0 and its flip reversed every epoch after (epochs 1, 3, ... show the other
     side: the public record scripts' alternating flip); or "none";
  3. Cutout: one 8x8 square lying fully inside the 32x32 image (25 x 25 equally likely corners).
Padding pixels are filled with the dataset mean, which is exactly 0 after normalisation (pad_mode
"mean", the assignment's), or mirror the image at its edge without repeating the edge pixel
(pad_mode "reflect", torch's "reflect" padding, as airbench pads its translations): padded
coordinate -1 reads 1, coordinate 32 reads 30. Cutout pixels are always the mean (0).

Every image draws its own offsets, flip and cutout corner. The order of an epoch and every draw
are a function of (seed, epoch) alone, drawn here for the whole split: the three back ends, any
number of ranks, and a run resumed from a checkpoint therefore all see the same epoch. Under
torchrun each global batch is split into one contiguous slice per rank, so the ranks' samples
are disjoint and together they are exactly the single-process batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAW_NAMES = ("crop_row", "crop_col", "flip", "cutout_row", "cutout_col")


@dataclass(frozen=True)
class AugmentationSpec:
    """Geometry of the training augmentation (see the module docstring for the semantics)."""

    image_size: int = 32
    pad: int = 4
    flip_probability: float = 0.5
    cutout_size: int = 8
    flip_mode: str = "random"  # or "alternating", "none" (see the module docstring)
    pad_mode: str = "mean"  # or "reflect" (see the module docstring)

    @property
    def reflect(self) -> bool:
        return self.pad_mode == "reflect"

    @property
    def crop_offsets(self) -> int:
        """Number of distinct crop offsets per axis (offset 0 .. 2*pad into the padded image)."""
        return 2 * self.pad + 1

    @property
    def cutout_corners(self) -> int:
        """Number of distinct cutout corners per axis (the square never leaves the image)."""
        return self.image_size - self.cutout_size + 1


SPEC = AugmentationSpec()


@dataclass(frozen=True)
class EpochDraws:
    """One epoch: the sample order and, per sample index, its augmentation draws."""

    order: np.ndarray  # (N,) int64, a permutation (or 0..N-1 without shuffling)
    crop_row: np.ndarray  # (N,) int64 offsets into the padded image, 0..2*pad
    crop_col: np.ndarray
    flip: np.ndarray  # (N,) bool
    cutout_row: np.ndarray  # (N,) int64 corners, 0..size-cutout
    cutout_col: np.ndarray

    def params(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in DRAW_NAMES}


def epoch_generator(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """An independent random stream per (seed, epoch, stream); nothing else feeds it."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def draw_epoch(
    count: int, seed: int, epoch: int, *, shuffle: bool, spec: AugmentationSpec = SPEC
) -> EpochDraws:
    """The order and the augmentation draws of `epoch` for a split of `count` images."""
    order = (
        epoch_generator(seed, epoch, 0).permutation(count)
        if shuffle
        else np.arange(count, dtype=np.int64)
    )
    draws = epoch_generator(seed, epoch, 1)
    crop = draws.integers(0, spec.crop_offsets, size=(2, count))
    flip = draws.random(count) < spec.flip_probability  # drawn in every mode: same crops, cutouts
    cutout = draws.integers(0, spec.cutout_corners, size=(2, count))
    if spec.flip_mode == "alternating":
        first = epoch_generator(seed, 0, 2).random(count) < spec.flip_probability
        flip = first ^ bool(epoch % 2)
    elif spec.flip_mode == "none":
        flip = np.zeros(count, dtype=bool)
    return EpochDraws(order.astype(np.int64), crop[0], crop[1], flip, cutout[0], cutout[1])


def rank_order(
    order: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1, drop_last: bool = True
) -> np.ndarray:
    """This rank's samples of `order`, batch after batch: of every global batch of
    `batch_size * world_size` samples, the rank takes the contiguous slice number `rank`."""
    if world_size == 1 and not drop_last:
        return order
    if not drop_last:
        raise ValueError("sharding across ranks needs drop_last (every rank the same batches)")
    global_batch = batch_size * world_size
    steps = len(order) // global_batch
    batches = order[: steps * global_batch].reshape(steps, world_size, batch_size)
    return batches[:, rank].reshape(-1)
