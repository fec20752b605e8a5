"""Torch-native loader: the whole split lives on the training device as uint8, and each batch
is cropped, flipped, cut out and normalised by one gather plus element-wise tensor ops.

No per-sample Python and no DataLoader workers. The per-batch work is one function, compiled
where that pays (`base.compile_pays`): on the 2-core development CPU it ran at 346k img/s compiled
against 81k for the eager version with boolean-mask broadcasts (benchmarks/, batch 512), and on
a GPU compiling fuses its ~20 small kernels into one or two.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator

import torch

from fastcifar.data.augmentation import DRAW_NAMES
from fastcifar.data.dataset import CifarSplit, split_from_arrays
from fastcifar.data.loaders.base import ASSUMED_EPOCHS, EpochCounter, LoaderOptions, compile_pays
from fastcifar.data.normalisation import Normalisation, normalise
from fastcifar.system.device import pick_device

if not torch.cuda.is_available():
    # torch.compile imports cpp_extension, which warns "No CUDA runtime is found" on every
    # CPU-only run of a machine that has a CUDA toolkit; that says nothing about fastcifar.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def augment_batch(
    pixels: torch.Tensor,
    crop_row: torch.Tensor,
    crop_col: torch.Tensor,
    flip: torch.Tensor,
    cutout_row: torch.Tensor,
    cutout_col: torch.Tensor,
    mean: torch.Tensor,
    inv_std: torch.Tensor,
    pad: int,
    cutout: int,
    reflect: bool = False,
) -> torch.Tensor:
    """The spec on a uint8 HWC batch: pad, crop, flip, cut out, normalise; channels_last NCHW out.

    The crop and flip are one gather from the batch at each output pixel's source coordinates;
    a coordinate in the padding reads its mirror pixel (`reflect`) or is zeroed by one mask
    after normalising with the cut-out pixels (0 is the dataset mean).
    """
    batch, size, channels = pixels.shape[0], pixels.shape[1], pixels.shape[3]
    ar = torch.arange(size, device=pixels.device)
    rows = crop_row[:, None] - pad + ar  # source coordinates; outside 0..size-1 in the padding
    # Output column j of a flipped crop reads crop column size-1-j.
    cols = crop_col[:, None] - pad + torch.where(flip[:, None], size - 1 - ar, ar)
    cut_rows = (ar >= cutout_row[:, None]) & (ar < cutout_row[:, None] + cutout)
    cut_cols = (ar >= cutout_col[:, None]) & (ar < cutout_col[:, None] + cutout)
    keep = ~(cut_rows[:, :, None] & cut_cols[:, None, :])
    if reflect:
        rows, cols = _reflect(rows, size), _reflect(cols, size)
    else:
        inside_rows = (rows >= 0) & (rows < size)
        inside_cols = (cols >= 0) & (cols < size)
        keep = keep & inside_rows[:, :, None] & inside_cols[:, None, :]
        rows, cols = rows.clamp(0, size - 1), cols.clamp(0, size - 1)
    flat = (rows[:, :, None] * size + cols[:, None, :]).reshape(batch, size * size, 1)
    cropped = pixels.reshape(batch, size * size, channels).gather(1, flat.expand(-1, -1, channels))
    return normalise(cropped.reshape(batch, size, size, channels), mean, inv_std, keep)


def _reflect(coordinate: torch.Tensor, size: int) -> torch.Tensor:
    """The source pixel of a padded coordinate under reflect padding (-1 -> 1, size -> size-2)."""
    mirrored = torch.minimum(coordinate, 2 * (size - 1) - coordinate)
    return torch.where(coordinate < 0, -coordinate, mirrored)


@functools.cache
def compiled_augment_batch() -> Callable:
    """`augment_batch` compiled, made on first use: creating it imports the inductor, a second
    of start-up (2-core CPU) that a run which augments eagerly need not pay."""
    return torch.compile(augment_batch, dynamic=False)


class CifarTensorLoader:
    """`BatchLoader` over a device-resident uint8 copy of `split`. Iterating it runs one
    epoch; the next iteration runs the next epoch (or the one `set_epoch` names)."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        self.options = options
        self.batch_size = options.batch_size
        device = options.device
        self.images = torch.from_numpy(split.images).to(device)  # (N, 32, 32, 3) uint8
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean, self.inv_std = options.normalisation.on(device)
        self.counter = EpochCounter()
        compiles = options.augment and options.compile_augmentation  # no augmentation: no compile
        self._augment: Callable = compiled_augment_batch() if compiles else augment_batch

    def __len__(self) -> int:
        return self.options.batches_per_epoch(len(self.labels))

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.counter.set_epoch(epoch, skip_batches)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's samples of `epoch`, in the order they are served (on the CPU)."""
        return torch.from_numpy(self.options.epoch(len(self.labels), epoch)[1])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = self.counter.start()
        draws, order = self.options.epoch(len(self.labels), epoch)  # as epoch_indices says
        device = self.images.device
        # One copy per epoch of the order and of the draws and labels in serving order: a
        # batch then slices them (views), and gathers only its images.
        params = None
        if self.options.augment:
            drawn = draws.params()
            params = [torch.from_numpy(drawn[k][order]).to(device) for k in DRAW_NAMES]
        order = torch.from_numpy(order).to(device)
        labels = self.labels.index_select(0, order)
        for batch in range(first, len(self)):
            served = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            pixels = self.images.index_select(0, order[served])
            if params is None:
                images = normalise(pixels, self.mean, self.inv_std, None)
            else:
                images = self._augment_pixels(pixels, [p[served] for p in params])
            yield images, labels[served]

    def _augment_pixels(self, pixels: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        spec = self.options.spec
        arguments = (*params, self.mean, self.inv_std, spec.pad, spec.cutout_size, spec.reflect)
        try:
            return self._augment(pixels, *arguments)
        except Exception as error:  # any compiler failure: fall back to eager, loudly
            if self._augment is augment_batch:
                raise
            warnings.warn(
                f"torch.compile of the augmentation failed ({type(error).__name__}: {error}); "
                "running it eagerly (slower). Install a C++ compiler (g++) to compile on CPU.",
                stacklevel=2,
            )
            self._augment = augment_batch
            return augment_batch(pixels, *arguments)

    @classmethod
    def from_arrays(
        cls,
        images: object,
        labels: object,
        *,
        batch_size: int = 512,
        device: str | torch.device | None = None,
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        normalisation: Normalisation | None = None,
        compile_augmentation: bool | None = None,
    ) -> CifarTensorLoader:
        """The loader over images and labels of one's own (as `fastcifar.as_dataset` takes
        them), for a training loop of one's own: the augmentation spec, seeded per epoch;
        normalised with `normalisation`, by default the images' own statistics; on CUDA when
        there is a GPU, unless `device` says otherwise. The augmentation is compiled where that
        pays for the recipe's 24 epochs of these images (`compile_pays`: always on a GPU, on
        the CPU from 16,667 images), unless `compile_augmentation` says otherwise."""
        split = split_from_arrays(images, labels)
        picked = pick_device(None if device is None else str(device))
        if compile_augmentation is None:
            images_served = ASSUMED_EPOCHS * len(split.labels)
            compile_augmentation = compile_pays(picked, images_served, model_compiled=False)
        options = LoaderOptions(
            batch_size=batch_size,
            device=picked,
            augment=augment,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            normalisation=normalisation or Normalisation.of_images(split.images),
            compile_augmentation=compile_augmentation,
        )
        return cls(split, options)
