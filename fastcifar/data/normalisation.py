"""Per-channel normalisation: the statistics of a data set, and the one function that applies
them on the device (every loader, the evaluation and `predict` call it).

CIFAR-10 keeps its known statistics; a data set of one's own gets those of its training split.
The augmentation spec's fills (padding and cutout) are the dataset mean: exactly 0.0 after this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Per-channel mean and std of the 50,000 CIFAR-10 training images, on the 0..255 scale
# (the values used by the DAWNBench/Page recipe).
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)
# Chunks of the training split whose statistics are summed, so that a large split of one's own
# never needs a float64 copy of itself.
STATISTICS_CHUNK = 10_000


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std on the 0..255 scale."""

    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    @classmethod
    def of_images(cls, images: np.ndarray) -> Normalisation:
        """The statistics of uint8 (N, H, W, 3) images (a constant channel gets std 1)."""
        count = images.shape[0] * images.shape[1] * images.shape[2]
        total, squares = np.zeros(3), np.zeros(3)
        for start in range(0, len(images), STATISTICS_CHUNK):
            chunk = images[start : start + STATISTICS_CHUNK].reshape(-1, 3).astype(np.float64)
            total += chunk.sum(axis=0)
            squares += (chunk**2).sum(axis=0)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        std = np.where(std > 1e-6, std, 1.0)
        return cls(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict) -> Normalisation:
        """As to_dict wrote it; ValueError unless three means in 0..255 and three stds above 0
        (a std of 0 would divide every pixel by zero)."""
        try:
            mean, std = tuple(map(float, values["mean"])), tuple(map(float, values["std"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a mean and std per channel ({error})") from None
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"needs 3 means and 3 stds, got {len(mean)} and {len(std)}")
        if not all(0.0 <= m <= 255.0 for m in mean) or not all(0.0 < v <= 255.0 for v in std):
            raise ValueError(f"mean {list(mean)}, std {list(std)}: not pixel statistics")
        return cls(mean, std)  # type: ignore[arg-type]

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / std) per channel on `device`, for `normalise`."""
        return (
            torch.tensor(self.mean, device=device),
            1.0 / torch.tensor(self.std, device=device),
        )


CIFAR10 = Normalisation()


def normalise(
    pixels: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) in channels_last memory; pixels
    where `keep` (B, H, W) is 0 become 0.0, the dataset mean."""
    normalised = (pixels.float() - mean) * inv_std
    if keep is not None:
        normalised = normalised * keep[..., None]
    # Permuting NHWC memory gives NCHW in channels_last layout for free.
    return normalised.permute(0, 3, 1, 2)


def to_batch(
    images: np.ndarray, device: torch.device, normalisation: Normalisation = CIFAR10
) -> torch.Tensor:
    """uint8 (N, H, W, 3) images as a normalised (N, 3, H, W) batch in channels_last on
    `device`, exactly as the loaders serve them."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return normalise(pixels, *normalisation.on(device), None)
