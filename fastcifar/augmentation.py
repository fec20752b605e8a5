"""The augmentation spec, written down once; every loader back end is tested against it.

Training images go through, in this order:
  1. RandomCrop 32x32 after padding 4 pixels on each side (9 x 9 = 81 equally likely offsets);
  2. FlipLR with probability 0.5;
  3. Cutout: one 8x8 square lying fully inside the 32x32 image (25 x 25 equally likely corners).
Padding and cutout pixels are filled with the dataset mean, which is exactly 0 after normalisation.
Every image draws its own offsets, flip and cutout corner; the draws are seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per-channel mean and std of the 50,000 CIFAR-10 training images, on the 0..255 scale
# (the values used by the DAWNBench/Page recipe).
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)


@dataclass(frozen=True)
class AugmentationSpec:
    """Geometry of the training augmentation (see the module docstring for the semantics)."""

    image_size: int = 32
    pad: int = 4
    flip_probability: float = 0.5
    cutout_size: int = 8

    @property
    def crop_offsets(self) -> int:
        """Number of distinct crop offsets per axis (offset 0 .. 2*pad into the padded image)."""
        return 2 * self.pad + 1

    @property
    def cutout_corners(self) -> int:
        """Number of distinct cutout corners per axis (the square never leaves the image)."""
        return self.image_size - self.cutout_size + 1


SPEC = AugmentationSpec()
