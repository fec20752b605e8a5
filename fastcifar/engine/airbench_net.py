"""The record-class network: airbench94's architecture (Keller Jordan, "94% on CIFAR-10 in 3.29
seconds on a single GPU", arXiv 2404.00498), written here from the paper's description.

    Whitening   conv 2x2 24, no padding (frozen: set from the data)  -> 24 x 31 x 31
                GELU
    Group 1     conv 3x3 64, MaxPool 2, BN, GELU, conv 3x3 64, BN, GELU      -> 64 x 15 x 15
    Group 2     conv 3x3 256, MaxPool 2, BN, GELU, conv 3x3 256, BN, GELU    -> 256 x 7 x 7
    Group 3     conv 3x3 256, MaxPool 2, BN, GELU, conv 3x3 256, BN, GELU    -> 256 x 3 x 3
    MaxPool 3 -> FC 256 -> 10 (no bias) -> logits x 1/9

1,972,792 parameters, 1,971,352 of them trained by the `airbench` recipe (the whitening filters
and the BatchNorm scales stay fixed). The whitening layer's filters are the eigenvectors of the
covariance of the training images' 2x2 patches, each with its negative (`--whitening-init`,
engine/initialisation.py); its bias trains. BatchNorm as the paper has it: eps 1e-12, running
statistics updated with momentum 0.4 (its "0.6" is the share of the old statistics). The groups'
channels above are `width` 64 (TrainConfig.width); another width scales them, 1:4:4.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

WHITENING_WIDTH = 24  # 2 x the 12 dimensions of a 2x2 RGB patch
WIDTHS = (64, 256, 256)  # at width 64
BN_EPS, BN_MOMENTUM = 1e-12, 0.4


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvGroup(nn.Sequential):
    """conv, max-pool 2, BN, GELU, conv, BN, GELU: one resolution of the network."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(
            nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
            nn.MaxPool2d(2),
            _batch_norm(channels_out),
            nn.GELU(),
            nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1, bias=False),
            _batch_norm(channels_out),
            nn.GELU(),
        )


class AirbenchNet(nn.Module):
    """See the module docstring; returns logits times `logit_scale` (the paper's 1/9)."""

    def __init__(self, num_classes: int = 10, logit_scale: float = 1 / 9, width: int = 64) -> None:
        super().__init__()
        self.logit_scale = logit_scale
        self.whiten = nn.Conv2d(3, WHITENING_WIDTH, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # a fixed transform of the input
        self.act = nn.GELU()
        channels = [at_64 * width // 64 for at_64 in WIDTHS]
        widths = itertools.pairwise((WHITENING_WIDTH, *channels))
        self.groups = nn.Sequential(*(ConvGroup(a, b) for a, b in widths))
        self.pool = nn.MaxPool2d(3)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.fc(self.flatten(self.pool(x))) * self.logit_scale

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits)."""
        return torch.softmax(self(x).float(), dim=1)
