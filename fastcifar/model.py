"""The DAWNBench "custom ResNet" (ResNet-9), exactly as in the seed's table.

    PrepLayer   conv 3x3 64, BN, ReLU                                  -> 64 x 32 x 32
    Layer1      X = conv 3x3 128, MaxPool 2, BN, ReLU                   -> 128 x 16 x 16
                R1 = ResBlock(conv-BN-ReLU-conv-BN-ReLU)(X); X + R1
    Layer2      conv 3x3 256, MaxPool 2, BN, ReLU                       -> 256 x 8 x 8
    Layer3      X = conv 3x3 512, MaxPool 2, BN, ReLU                   -> 512 x 4 x 4
                R2 = ResBlock(X); X + R2
    MaxPool 4 -> FC 512 -> 10 -> softmax

6,573,130 parameters (convolutions without bias, BN with affine weights, FC with bias).

The network returns logits. Softmax is applied by `predict_proba` and, as log-softmax, inside the
cross-entropy loss: feeding softmax outputs into CrossEntropyLoss (as the seed solution did) applies
softmax twice, which squashes the outputs into a narrow band so the gradients all but vanish.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(channels_in: int, channels_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + ResBlock(x), where ResBlock is conv-BN-ReLU-conv-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv_bn_relu(channels, channels), conv_bn_relu(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResNet9(nn.Module):
    """Custom ResNet returning logits multiplied by `logit_scale` (Page's recipe uses 0.125)."""

    def __init__(self, num_classes: int = 10, logit_scale: float = 1.0) -> None:
        super().__init__()
        self.logit_scale = logit_scale
        self.prep = conv_bn_relu(3, 64)
        self.layer1 = nn.Sequential(conv_bn_relu(64, 128, pool=True), Residual(128))
        self.layer2 = conv_bn_relu(128, 256, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(256, 512, pool=True), Residual(512))
        self.pool = nn.MaxPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.flatten(self.pool(x))) * self.logit_scale

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits)."""
        return torch.softmax(self(x).float(), dim=1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(
    device: torch.device,
    logit_scale: float = 0.125,
    channels_last: bool = True,
    seed: int | None = None,
) -> ResNet9:
    """A freshly initialised ResNet9 on `device`, in channels_last memory when asked.

    The weights are drawn on the CPU from `seed` (when given), so they are the same on every
    device and in every process."""
    if seed is not None:
        torch.manual_seed(seed)
    model = ResNet9(logit_scale=logit_scale).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def reinitialise(model: nn.Module, seed: int, logit_scale: float) -> None:
    """Give `model` the initial weights of `build_model(seed=seed)`, copied in place: the
    tensors stay the same objects, so compiled graphs and CUDA graphs stay valid."""
    torch.manual_seed(seed)
    model.load_state_dict(ResNet9(logit_scale=logit_scale).state_dict())
