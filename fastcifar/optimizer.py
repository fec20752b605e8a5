"""The optimizer of the recipe."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
) -> torch.optim.SGD:
    """SGD with Nesterov momentum; the fused CUDA kernel updates all parameters in one launch."""
    fused = next(model.parameters()).is_cuda
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
        fused=fused or None,
    )
