"""Ghost BatchNorm: in training, each BatchNorm normalises every sub-batch of `size` images by
that sub-batch's own statistics (Hoffer et al., 2017; Page's ResNet-9 used 32 of 512); in
evaluation it is the plain BatchNorm with its running statistics. The running statistics move
once per step, towards the mean of the sub-batches' statistics.

The layers keep their parameters and buffers (`convert` swaps the class in place), so the
network, its parameter count, its state dict, checkpoints and model.pt are those of the plain
network: a ghost-BatchNorm run is evaluated, exported and resumed as any other.
"""

from __future__ import annotations

import torch
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are per sub-batch of `ghost_size` images."""

    ghost_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.ghost_size:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % self.ghost_size:
            raise ValueError(f"a batch of {n} images does not split into sub-batches of "
                             f"{self.ghost_size}")  # fmt: skip
        # Channels-last memory is (image, row, column, channel): sub-batches of whole images are
        # then a free view (sub-batch, pixels, channel), reduced over its middle dimension.
        pixels = x.permute(0, 2, 3, 1).reshape(n // self.ghost_size, self.ghost_size * h * w, c)
        # Statistics in fp32 whatever autocast made of x (bf16 variances lose the small ones),
        # as nn.BatchNorm2d computes them.
        var, mean = torch.var_mean(pixels.float(), dim=1, correction=0, keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        if self.track_running_stats and self.running_mean is not None:
            self._track(mean, var, self.ghost_size * h * w)
        out = torch.addcmul(shift.to(x.dtype), pixels, scale.to(x.dtype))
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        unbiased = var * (count / max(count - 1, 1))
        self.num_batches_tracked.add_(1)
        # momentum None: an exact average over the batches so far, as nn.BatchNorm2d keeps it.
        momentum = self.momentum or 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.mean(dim=0).flatten().to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.mean(dim=0).flatten().to(self.running_var.dtype), momentum)


def convert(model: nn.Module, ghost_size: int) -> nn.Module:
    """Every nn.BatchNorm2d of `model` made a GhostBatchNorm2d of `ghost_size`, in place."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GhostBatchNorm2d
            module.ghost_size = ghost_size
    return model
