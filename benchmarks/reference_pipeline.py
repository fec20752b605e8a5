"""The reference pipeline of the seed's kind: a map-style Dataset with per-sample torchvision
transforms, batched by a torch DataLoader in worker processes, fp32, NCHW, eager.

It applies the same augmentation spec as fastcifar's loaders (pad-4 crop, flip p=0.5, one 8x8
cutout fully inside; pad and cutout filled with the dataset mean), one PIL image at a time. Its
epoch time, measured in the same run, is the denominator that holds across machines.
torchvision is a benchmark-only dependency: fastcifar itself never imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fastcifar.data.augmentation import SPEC, AugmentationSpec
from fastcifar.data.dataset import CifarSplit
from fastcifar.data.normalisation import CIFAR10_MEAN, CIFAR10_STD


def reference_workers() -> int:
    """One worker per core, at most 8: what a tuned DataLoader of this kind uses."""
    return min(8, os.cpu_count() or 1)


class Cutout:
    """Zero one `size` x `size` square lying fully inside a normalised (C, H, W) tensor.

    Zero is the dataset mean after Normalize. Draws come from torch's generator, which the
    DataLoader seeds per worker, like torchvision's own random transforms.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        row = int(torch.randint(0, height - self.size + 1, ()))
        col = int(torch.randint(0, width - self.size + 1, ()))
        image[:, row : row + self.size, col : col + self.size] = 0
        return image


def reference_transform(spec: AugmentationSpec = SPEC) -> transforms.Compose:
    # PIL pads with whole pixel values, so the mean is rounded; it normalises to within 0.01 of 0.
    fill = tuple(round(channel) for channel in CIFAR10_MEAN)
    return transforms.Compose(
        [
            transforms.RandomCrop(spec.image_size, padding=spec.pad, fill=fill),
            transforms.RandomHorizontalFlip(spec.flip_probability),
            transforms.ToTensor(),
            transforms.Normalize([c / 255 for c in CIFAR10_MEAN], [c / 255 for c in CIFAR10_STD]),
            Cutout(spec.cutout_size),
        ]
    )


class CifarImageDataset(Dataset):
    """Map-style dataset over uint8 HWC images: one PIL image per `__getitem__`."""

    def __init__(self, split: CifarSplit, transform: transforms.Compose) -> None:
        self.images = split.images
        self.labels = split.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(np.ascontiguousarray(self.images[index]))
        return self.transform(image), int(self.labels[index])


class ReferenceBatches:
    """Iterating runs one epoch of the DataLoader and moves each batch to `device`."""

    def __init__(self, split: CifarSplit, batch_size: int, device: torch.device, seed: int = 0):
        self.device = device
        self.workers = reference_workers()
        self.loader = DataLoader(
            CifarImageDataset(split, reference_transform()),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.workers,
            # Kept alive between epochs and pinned for fast copies: the reference is the strongest
            # version of its kind, so the ratio against it is not inflated.
            persistent_workers=True,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )
