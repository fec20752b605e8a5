"""Torch-native loader: the whole dataset lives on the training device as uint8, and each batch
is cropped, flipped, cut out and normalised by one gather plus a few element-wise tensor ops.

No per-sample Python and no DataLoader workers: on a GPU the augmentation costs a few kernel
launches per batch; on a CPU it is vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fastcifar.augmentation import CIFAR10_MEAN, CIFAR10_STD
from fastcifar.data_source import CifarSplit
from fastcifar.loaders import LoaderOptions


class CifarTensorLoader:
    """`BatchLoader` over a device-resident uint8 copy of `split`."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        if len(split) == 0:
            raise ValueError("cannot build a loader over an empty split")
        self.options = options
        self.batch_size = options.batch_size
        device = options.device
        self.images = torch.from_numpy(split.images).to(device)  # (N, 32, 32, 3) uint8
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean = torch.tensor(CIFAR10_MEAN, device=device)
        self.inv_std = 1.0 / torch.tensor(CIFAR10_STD, device=device)
        self.pixel_index = torch.arange(options.spec.image_size, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(options.seed)

    def __len__(self) -> int:
        return self.options.batches_per_epoch(len(self.labels))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        order = self._epoch_order(count)
        # Draw the whole epoch's augmentation at once: one RNG call per parameter, not per batch.
        params = self._draw_augmentation(count) if self.options.augment else None
        for batch in range(len(self)):
            indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            if params is None:
                pixels = self.images.index_select(0, indices)
                images = self._normalise(pixels).permute(0, 3, 1, 2)
            else:
                images = self._augment(indices, {k: v[indices] for k, v in params.items()})
            yield images, self.labels.index_select(0, indices)

    def _epoch_order(self, count: int) -> torch.Tensor:
        if self.options.shuffle:
            return torch.randperm(count, device=self.images.device, generator=self.generator)
        return torch.arange(count, device=self.images.device)

    def _draw_augmentation(self, count: int) -> dict[str, torch.Tensor]:
        spec = self.options.spec

        def integers(high: int) -> torch.Tensor:
            return torch.randint(
                0, high, (count,), device=self.images.device, generator=self.generator
            )

        flip = torch.rand(count, device=self.images.device, generator=self.generator)
        return {
            "crop_row": integers(spec.crop_offsets),
            "crop_col": integers(spec.crop_offsets),
            "flip": flip < spec.flip_probability,
            "cutout_row": integers(spec.cutout_corners),
            "cutout_col": integers(spec.cutout_corners),
        }

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) * self.inv_std

    def _augment(self, indices: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Crop + flip as one gather with out-of-image positions masked, then cutout as a mask.

        The gather reads HWC pixels, so `permute` yields NCHW in channels_last memory for free.
        """
        spec = self.options.spec
        size, ar = spec.image_size, self.pixel_index
        rows = params["crop_row"][:, None] - spec.pad + ar
        # Output column j of a flipped crop reads crop column size-1-j.
        crop_cols = torch.where(params["flip"][:, None], size - 1 - ar, ar)
        cols = params["crop_col"][:, None] - spec.pad + crop_cols
        inside_rows = (rows >= 0) & (rows < size)
        inside_cols = (cols >= 0) & (cols < size)
        pixels = self.images[
            indices[:, None, None],
            rows.clamp(0, size - 1)[:, :, None],
            cols.clamp(0, size - 1)[:, None, :],
        ]
        keep = inside_rows[:, :, None] & inside_cols[:, None, :]
        keep &= ~(
            self._square(params["cutout_row"])[:, :, None]
            & self._square(params["cutout_col"])[:, None, :]
        )
        # Normalised mean is 0, so zeroing fills padding and cutout with the dataset mean.
        images = self._normalise(pixels) * keep[..., None]
        return images.permute(0, 3, 1, 2)

    def _square(self, corner: torch.Tensor) -> torch.Tensor:
        ar = self.pixel_index
        return (ar >= corner[:, None]) & (ar < corner[:, None] + self.options.spec.cutout_size)
