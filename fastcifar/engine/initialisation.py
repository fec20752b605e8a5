"""Initial weights that are not random draws, from the public record recipes, with the network
left as it is (its layers and its parameter count; everything stays trained):

* whitening (`--whitening-init`): the first convolution on the image (3 input channels, a k x k
  kernel) starts as patch-whitening filters: the eigenvectors of the covariance of its k x k
  input patches, over the first WHITENING_IMAGES training images as the loader normalises
  them, each scaled by 1 / sqrt(eigenvalue + WHITENING_EPS) and paired with its negative (Page's
  fixed whitening layer and airbench's first layer; here only where a trained layer starts). A
  layer with fewer than 2 x 3 x k^2 filters takes the leading ones; more keep their random draw.
* dirac (`--dirac-init`): every other convolution with at least as many outputs as inputs
  starts with its first `in` filters as the identity (airbench's initialisation).

Both are functions of the data and of nothing random, so a seed's initial weights stay a
function of the seed and the data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fastcifar.data.normalisation import Normalisation

WHITENING_IMAGES = 5000
WHITENING_EPS = 5e-4  # airbench's: keeps the near-zero eigenvalues' filters finite
CHUNK = 500  # images per pass over the patches (bounded memory)


def whitening_filters(
    images: np.ndarray, normalisation: Normalisation, kernel: int
) -> torch.Tensor:
    """(2 * 3k^2, 3, k, k) whitening filters of the uint8 HWC `images`' k x k patches, the
    largest-variance directions first, each followed by its negative."""
    mean = torch.tensor(normalisation.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(normalisation.std, dtype=torch.float64).view(1, 3, 1, 1)
    dims = 3 * kernel * kernel
    total = 0
    first = torch.zeros(dims, dtype=torch.float64)
    second = torch.zeros(dims, dims, dtype=torch.float64)
    for start in range(0, len(images), CHUNK):
        chunk = torch.from_numpy(images[start : start + CHUNK]).permute(0, 3, 1, 2).double()
        patches = nn.functional.unfold((chunk - mean) / std, kernel)  # (N, dims, positions)
        patches = patches.transpose(1, 2).reshape(-1, dims)
        total += len(patches)
        first += patches.sum(dim=0)
        second += patches.T @ patches
    centre = first / total
    covariance = second / total - torch.outer(centre, centre)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    filters = vectors.T / torch.sqrt(values.clamp_min(0) + WHITENING_EPS)[:, None]
    filters = filters.reshape(dims, 3, kernel, kernel)
    return torch.stack([filters, -filters], dim=1).reshape(2 * dims, 3, kernel, kernel).float()


def image_convolution(model: nn.Module) -> nn.Conv2d | None:
    """The first convolution on the image (3 input channels): where a whitening layer is."""
    return next(
        (m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None
    )


def initialise(
    model: nn.Module,
    *,
    whitening: bool,
    dirac: bool,
    images: np.ndarray | None = None,
    normalisation: Normalisation | None = None,
) -> None:
    """Apply the initialisations asked for to `model`'s convolutions, in place (see the module
    docstring); `images`: the training split's, for whitening."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    first = image_convolution(model)
    with torch.no_grad():
        if whitening and first is not None and images is not None and normalisation is not None:
            kernel = first.kernel_size[0]
            filters = whitening_filters(images[:WHITENING_IMAGES], normalisation, kernel)
            count = min(len(filters), first.out_channels)
            first.weight[:count].copy_(filters[:count].to(first.weight.dtype))
        if dirac:
            for conv in convolutions:
                square = conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2
                if (conv is first and whitening) or conv.groups != 1 or not square:
                    continue
                if conv.out_channels >= conv.in_channels:
                    nn.init.dirac_(conv.weight[: conv.in_channels])
