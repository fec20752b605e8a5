"""Synthetic splits and a decoder that recovers each output image's augmentation from the spec.

The coordinate split encodes every pixel's position in its value (channel 0 = 2*row + 3,
channel 1 = 2*col + 3, channel 2 = a constant), so one output image tells its crop offset,
flip and cutout corner. All values are integers: after de-normalisation a real pixel is an
integer, while a fill pixel is exactly 0.0 in every normalised channel (the non-integer mean),
so the two can never be confused.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fastcifar.data.augmentation import SPEC, AugmentationSpec, EpochDraws
from fastcifar.data.dataset import CifarSplit
from fastcifar.data.loaders import BatchLoader, LoaderOptions, MissingBackendError, make_loader
from fastcifar.data.normalisation import CIFAR10_MEAN, CIFAR10_STD

SIZE, PAD, CUT = SPEC.image_size, SPEC.pad, SPEC.cutout_size
# CI sets this so that a broken FFCV/DALI install fails the tests instead of skipping them.
REQUIRE_ENV = "FASTCIFAR_REQUIRE_BACKENDS"


def import_backend(module: str):
    """Import the module of an optional back end; when it cannot load, skip the calling test
    module (fail instead under $FASTCIFAR_REQUIRE_BACKENDS)."""
    try:
        return importlib.import_module(module)
    except MissingBackendError as error:
        if os.environ.get(REQUIRE_ENV):
            raise
        pytest.skip(str(error), allow_module_level=True)


def build_loader(name: str, split: CifarSplit, device: str = "cpu", **options) -> BatchLoader:
    """`make_loader` (on CPU unless told); a missing FFCV/DALI skips (fails under
    $FASTCIFAR_REQUIRE_BACKENDS); any other error fails. On the CPU the torch loader augments
    eagerly, as a CPU slice does: its compiled form equals the eager one exactly, shown for
    each kind of spec in tests/test_torch_loader.py (a compile is seconds a shape here)."""
    options.setdefault("compile_augmentation", device != "cpu")
    loader_options = LoaderOptions(device=torch.device(device), **options)
    try:
        return make_loader(name, split, loader_options)
    except MissingBackendError as error:
        if os.environ.get(REQUIRE_ENV):
            raise
        pytest.skip(str(error))


def random_split(count: int, seed: int = 0) -> CifarSplit:
    """Random pixels; labels are the example ids 0..count-1, so each output names its source."""
    images = np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
    return CifarSplit(images, np.arange(count, dtype=np.int64))


def coordinate_split(count: int) -> CifarSplit:
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    image = np.stack([2 * rows + 3, 2 * cols + 3, np.full_like(rows, 200)], axis=-1)
    images = np.broadcast_to(image.astype(np.uint8), (count, SIZE, SIZE, 3)).copy()
    return CifarSplit(images, np.arange(count, dtype=np.int64))  # labels are example ids


def denormalise(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) normalised -> (B, H, W, 3) on the 0..255 scale, float64."""
    pixels = images.permute(0, 2, 3, 1).double().cpu().numpy()
    return pixels * np.array(CIFAR10_STD) + np.array(CIFAR10_MEAN)


def reference_normalise(images: np.ndarray) -> np.ndarray:
    """What the spec says un-augmented images become: (x - mean) / std, as (B, 3, H, W)."""
    normalised = (images.astype(np.float64) - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    return normalised.transpose(0, 3, 1, 2)


def reference_augment(
    images: np.ndarray, draws: EpochDraws, served: np.ndarray, spec: AugmentationSpec
) -> np.ndarray:
    """What the spec says the images of ids `served` become under `draws`, written plainly:
    normalise, pad (0.0 is the mean; or np.pad's "reflect"), crop, flip, cut out; (B, 3, H, W)."""
    normalised = reference_normalise(images).transpose(0, 2, 3, 1)
    border = ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad), (0, 0))
    padded = np.pad(normalised, border, mode="reflect" if spec.reflect else "constant")
    size, cut = spec.image_size, spec.cutout_size
    out = np.empty((len(served), size, size, 3))
    for i, image in enumerate(served):
        row, col = draws.crop_row[image], draws.crop_col[image]
        crop = padded[image, row : row + size, col : col + size]
        out[i] = crop[:, ::-1] if draws.flip[image] else crop
        cut_row, cut_col = draws.cutout_row[image], draws.cutout_col[image]
        out[i, cut_row : cut_row + cut, cut_col : cut_col + cut] = 0.0
    return out.transpose(0, 3, 1, 2)


@dataclass
class Decoded:
    """Per image: crop offsets into the padded image, flip, cutout corner and cutout size."""

    crop_row: np.ndarray
    crop_col: np.ndarray
    flip: np.ndarray
    cut_row: np.ndarray
    cut_col: np.ndarray
    cut_pixels: np.ndarray
    cut_clipped: np.ndarray  # the square overlaps padding, which hides part of it


def decode_augmented(images: torch.Tensor, pad: int = PAD, cut_size: int = CUT) -> Decoded:
    """Recover each image's draws, asserting that the image is exactly what the spec allows:
    a pure crop (+ flip) of the source padded by `pad`, padding filled with 0.0, and fill pixels
    not explained by padding forming one `cut_size` square (lying inside the image) cut by the
    padding, or none where `cut_size` is 0 (then the cutout fields are empty)."""
    normalised = images.permute(0, 2, 3, 1).cpu().numpy()
    fill = (normalised == 0.0).all(axis=-1)
    pixels = denormalise(images)
    real = ~fill
    assert np.abs(pixels[real] - np.round(pixels[real])).max() < 1e-3, "a real pixel moved"
    assert np.all(pixels[real][:, 2].round() == 200), "pixels were blended or shifted in value"
    source_row = (pixels[..., 0].round() - 3) / 2
    source_col = (pixels[..., 1].round() - 3) / 2
    y, x = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    crop_row = _constant(source_row - y + pad, real, "rows are not one crop offset")
    unflipped = _is_constant(source_col - x, real)
    flipped = _is_constant(source_col + x, real)
    assert np.all(unflipped ^ flipped), "columns are neither a crop nor a flipped crop"
    col_shift = np.where(flipped[:, None, None], SIZE - 1 - x, x)
    crop_col = _constant(source_col - col_shift + pad, real, "columns are not one crop offset")
    assert crop_row.min() >= 0 and crop_row.max() <= 2 * pad, f"crop row outside 0..{2 * pad}"
    assert crop_col.min() >= 0 and crop_col.max() <= 2 * pad, f"crop col outside 0..{2 * pad}"
    inside = _inside(crop_row[:, None, None] - pad + y) & _inside(
        crop_col[:, None, None] - pad + col_shift
    )
    assert not np.any(~inside & real), "padding was not filled with the mean (0.0)"
    cut = fill & inside
    if cut_size == 0:
        assert not cut.any(), "pixels were cut out with cutout 0"
        empty = np.zeros(len(images), dtype=int)
        return Decoded(crop_row.astype(int), crop_col.astype(int), flipped, empty, empty,
                       empty, empty.astype(bool))  # fmt: skip
    cut_row, row_clipped = _cut_corner(cut.any(axis=2), inside.any(axis=2), cut_size)
    cut_col, col_clipped = _cut_corner(cut.any(axis=1), inside.any(axis=1), cut_size)
    cut_pixels = cut.sum(axis=(1, 2))
    box = cut.any(axis=2).sum(axis=1) * cut.any(axis=1).sum(axis=1)
    assert np.all(cut_pixels == box), "the cut-out pixels do not form one rectangle"
    return Decoded(
        crop_row.astype(int),
        crop_col.astype(int),
        flipped,
        cut_row,
        cut_col,
        cut_pixels,
        row_clipped | col_clipped,
    )


def _is_constant(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    low = np.where(mask, values, np.inf).min(axis=(1, 2))
    high = np.where(mask, values, -np.inf).max(axis=(1, 2))
    return low == high


def _constant(values: np.ndarray, mask: np.ndarray, message: str) -> np.ndarray:
    assert np.all(_is_constant(values, mask)), message
    return np.where(mask, values, np.inf).min(axis=(1, 2))


def _inside(coordinate: np.ndarray) -> np.ndarray:
    return (coordinate >= 0) & (coordinate < SIZE)


def _cut_corner(
    cut_lines: np.ndarray, real_lines: np.ndarray, cut: int = CUT
) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: the corner c in 0..SIZE-cut whose square [c, c+cut) meets the real
    (unpadded) lines in exactly the cut lines; asserts that exactly one such corner exists."""
    assert cut_lines.any(axis=1).all(), "an image has no cutout"
    lines = np.arange(SIZE)
    cut_lo = np.where(cut_lines, lines, SIZE).min(axis=1)
    cut_hi = np.where(cut_lines, lines, -1).max(axis=1)
    assert np.all(cut_lines.sum(axis=1) == cut_hi - cut_lo + 1), "the cutout has gaps"
    real_lo = np.where(real_lines, lines, SIZE).min(axis=1)
    real_hi = np.where(real_lines, lines, -1).max(axis=1)
    corners = np.arange(SIZE - cut + 1)[None, :]
    meets_lo = np.maximum(corners, real_lo[:, None]) == cut_lo[:, None]
    meets_hi = np.minimum(corners + cut - 1, real_hi[:, None]) == cut_hi[:, None]
    matches = meets_lo & meets_hi
    assert np.all(matches.sum(axis=1) == 1), f"a cutout is not a {cut}x{cut} square in the image"
    return matches.argmax(axis=1), cut_hi - cut_lo + 1 < cut
