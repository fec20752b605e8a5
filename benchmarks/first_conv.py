"""What the first convolution (3 -> 64 channels, with its BN and ReLU) costs in a training step,
and whether running it another way is cheaper (issue 23): its forward + backward timed alone,
as the recipe runs it (channels_last, the device's mixed precision), in fp32, and with the input
and weights zero-padded to 4 or 8 channels (the same function: the extra channels are zeros);
beside it one whole training step of the network, for its share. Eager on every device (the
trainer compiles on a GPU, where fusion may change the shares).

    python -m benchmarks.first_conv [--device cpu|cuda] [--batch-size 512] [--repeats 5]
                                    [--out FILE.md]

Prints a markdown table (and writes it to --out, where `python -m benchmarks.publish` shows
benchmarks/results/first-conv-*.md); the figures are medians over `--repeats` after one
warm-up, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastcifar.engine.model import ResNet9, conv_bn_relu
from fastcifar.errors import ConfigError
from fastcifar.system.device import Precision, device_name, pick_device, timed

CALLS_PER_GPU_REPEAT = 20


@dataclass(frozen=True)
class Timing:
    variant: str
    seconds: float


def padded_prep(prep: nn.Sequential, channels: int) -> nn.Sequential:
    """A copy of the prep layer whose conv takes `channels` inputs, the added ones zero-weighted."""
    conv = prep[0]
    wider = conv_bn_relu(channels, conv.out_channels)
    wider = wider.to(conv.weight.device, memory_format=torch.channels_last)
    wider[1].load_state_dict(prep[1].state_dict())  # the BatchNorm
    with torch.no_grad():
        wider[0].weight.zero_()
        wider[0].weight[:, : conv.in_channels] = conv.weight
    return wider


def pad_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    extra = images.new_zeros(images.shape[0], channels - images.shape[1], *images.shape[2:])
    return torch.cat([images, extra], dim=1).contiguous(memory_format=torch.channels_last)


def median_seconds(work: Callable[[], None], repeats: int, device: torch.device) -> float:
    work()  # warm-up: oneDNN (cuDNN) picks and caches its kernels on the first call
    # A GPU runs a call in about a millisecond: time CALLS_PER_GPU_REPEAT calls between two
    # synchronisations, so that one launch and one sync do not make the figure.
    calls = 1 if device.type == "cpu" else CALLS_PER_GPU_REPEAT

    def repeat() -> None:
        for _ in range(calls):
            work()

    return statistics.median(timed(device, repeat) / calls for _ in range(repeats))


def forward_backward(layer: nn.Module, images: torch.Tensor, precision: Precision | None):
    def work() -> None:
        layer.zero_grad(set_to_none=True)
        if precision is None:
            out = layer(images)
        else:
            with precision.autocast():
                out = layer(images)
        out.float().sum().backward()

    return work


def measure(
    batch_size: int = 512, repeats: int = 5, device: torch.device | None = None
) -> list[Timing]:
    """The timings of the first conv's variants and of one whole step, on `device` (the CPU
    unless given)."""
    torch.manual_seed(0)
    device = device or torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer runs it; the warm-up searches
    precision = Precision.choose(device, None)
    model = ResNet9().to(device, memory_format=torch.channels_last).train()
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    native = precision.name

    def median(work: Callable[[], None]) -> float:
        return median_seconds(work, repeats, device)

    rows = [
        Timing(f"first conv, {native} (as trained)", median(
            forward_backward(model.prep, images, precision))),
        Timing("first conv, fp32", median(forward_backward(model.prep, images, None))),
    ]  # fmt: skip
    for channels in (4, 8):
        wider, padded = padded_prep(model.prep, channels), pad_channels(images, channels)
        variant = f"first conv, {native}, input padded to {channels} channels"
        rows.append(Timing(variant, median(forward_backward(wider, padded, precision))))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model(images).float(), labels)
        loss.backward()

    rows.append(Timing(f"whole step (forward + backward), {native}", median(step)))
    return rows


def render(rows: list[Timing], batch_size: int, device: torch.device | None = None) -> str:
    step = rows[-1].seconds
    lines = [
        f"{device_name(device or torch.device('cpu'))}, torch {torch.__version__}, batch "
        f"{batch_size}, channels_last, eager; forward + backward, median milliseconds",
        "",
        "| Variant | ms | Share of the step |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {row.variant} | {1e3 * row.seconds:,.3f} | {row.seconds / step:.1%} |" for row in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_conv", description=__doc__)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if "
                        "present, else cpu)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ConfigError as error:
        parser.error(str(error))
    text = render(measure(args.batch_size, args.repeats, device), args.batch_size, device)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
