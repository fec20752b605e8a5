"""LR range test (Smith 2015; fastai's lr_find): sweep the LR exponentially for a hundred or so
steps, record the loss, and read LRMAX and LRMIN off the smoothed curve.

Written here rather than taken from torch-lr-finder because that library smooths without bias
correction, suggests a single LR (steepest gradient) instead of both bounds, has no bf16 autocast,
and expects a torch DataLoader; we need both bounds, bf16, and our GPU loaders.

How the bounds are read (bias-corrected exponential moving average of the loss vs log LR):
  * LRMAX = (LR at the floor of the valley, i.e. the minimum smoothed loss) / 10. On least
    squares, where SGD provably diverges above 2/L, this landed 1.6-6.7x below 2/L over sweeps of
    100-400 steps, batch sizes 64-512 and start LRs 1e-6..1e-2 (tests/test_lr_range_test.py).
    The alternatives measured worse there: the steepest-descent point came out 3.5x to 10^5x
    too low (it fires as soon as the loss starts to move), and fastai's "valley" pick depends on
    where the sweep starts (it counts the flat start as part of the valley).
  * LRMIN = onset: the first LR at which the smoothed loss has fallen by ONSET_FRACTION of its
    total fall (start to minimum); below it the LR is too small to move the loss. If the loss
    never falls, or the onset is not below LRMAX, LRMIN = LRMAX / lr_min_divisor (25, the
    div_factor that OneCycleLR uses by default).
The sweep stops early once the smoothed loss exceeds DIVERGENCE_FACTOR x its minimum or a loss is
not finite. Model weights, BatchNorm statistics and optimizer state are restored afterwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from fastcifar.device import Precision
from fastcifar.engine import StepContext, training_step

SMOOTHING = 0.98
DIVERGENCE_FACTOR = 4.0
ONSET_FRACTION = 0.05
VALLEY_DIVISOR = 10.0


@dataclass
class RangeTestResult:
    lrs: list[float]
    losses: list[float]  # raw per-step losses
    smoothed: list[float]  # bias-corrected exponential moving average
    lr_max: float
    lr_min: float
    lr_max_method: str
    lr_min_method: str
    stop_reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def suggest_bounds(
    lrs: list[float], smoothed: list[float], lr_min_divisor: float
) -> tuple[float, float, str, str]:
    """(lr_max, lr_min, how lr_max was found, how lr_min was found); see the module docstring."""
    floor = int(np.argmin(smoothed))
    lr_max = lrs[floor] / VALLEY_DIVISOR
    max_method = f"valley floor / {VALLEY_DIVISOR:g} (minimum smoothed loss at LR {lrs[floor]:.3g})"
    lowest = smoothed[floor]
    threshold = smoothed[0] - ONSET_FRACTION * (smoothed[0] - lowest)
    onset = next((i for i, value in enumerate(smoothed) if value < threshold), None)
    if lowest < smoothed[0] and onset is not None and lrs[onset] < lr_max:
        return lr_max, lrs[onset], max_method, f"onset: loss down {ONSET_FRACTION:.0%} of its fall"
    return lr_max, lr_max / lr_min_divisor, max_method, f"LRMAX / {lr_min_divisor:g} (no onset)"


def _repeat(batches: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the LR range test got a loader with no batches")


def lr_range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    start_lr: float = 1e-4,
    end_lr: float = 10.0,
    steps: int = 100,
    precision: Precision | None = None,
    lr_min_divisor: float = 25.0,
) -> RangeTestResult:
    """Sweep the LR from `start_lr` to `end_lr` over `steps` steps; restore all state afterwards."""
    if steps < 2:
        raise ValueError(f"the LR range test needs at least 2 steps, got {steps}")
    precision = precision or Precision("cpu", None)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        lrs, losses, smoothed, reason = _sweep(
            model, optimizer, _repeat(batches), loss_fn, start_lr, end_lr, steps, precision
        )
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
    if len(lrs) < 2:
        raise RuntimeError(
            f"the LR range test diverged at its first step (LR {start_lr:g}): "
            "lower --range-test-start-lr"
        )
    lr_max, lr_min, max_method, min_method = suggest_bounds(lrs, smoothed, lr_min_divisor)
    return RangeTestResult(lrs, losses, smoothed, lr_max, lr_min, max_method, min_method, reason)


def _sweep(model, optimizer, batches, loss_fn, start_lr, end_lr, steps, precision):
    growth = (end_lr / start_lr) ** (1 / (steps - 1))
    context = StepContext(model, optimizer, loss_fn, precision, precision.make_scaler())
    lrs, raw, smoothed, average = [], [], [], 0.0
    model.train()
    with tqdm(range(steps), desc="LR range test", unit="step", leave=False) as bar:
        for step in bar:
            lr = start_lr * growth**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = next(batches)
            summed_loss, _ = training_step(context, images, labels)
            # One host read per step is fine here: the range test is a few hundred steps, once.
            value = summed_loss.item() / labels.shape[0]
            if not math.isfinite(value):
                return lrs, raw, smoothed, f"loss not finite at LR {lr:.3g}"
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            lrs.append(lr)
            raw.append(value)
            smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
            bar.set_postfix(lr=f"{lr:.3g}", loss=f"{smoothed[-1]:.3f}")
            if smoothed[-1] > DIVERGENCE_FACTOR * min(smoothed):
                return lrs, raw, smoothed, f"diverged at LR {lr:.3g}"
    return lrs, raw, smoothed, "completed the sweep"
