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

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fastcifar.engine.step import StepContext, state_restored, training_step
from fastcifar.errors import RangeTestError
from fastcifar.system.progress import progress

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

    @property
    def floor(self) -> int:
        """The step at the valley floor that LRMAX is read from."""
        return valley_floor(self.smoothed)

    def to_dict(self) -> dict:
        return asdict(self)


def valley_floor(smoothed: list[float]) -> int:
    """The step of the minimum smoothed loss."""
    return int(np.argmin(smoothed))


def suggest_bounds(
    lrs: list[float], smoothed: list[float], lr_min_divisor: float
) -> tuple[float, float, str, str]:
    """(lr_max, lr_min, how lr_max was found, how lr_min was found); see the module docstring."""
    floor = valley_floor(smoothed)
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
    ctx: StepContext,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    restore: torch.nn.Module,
    start_lr: float = 1e-4,
    end_lr: float = 10.0,
    steps: int = 100,
    lr_min_divisor: float = 25.0,
    sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda values: values,
    ranks: int = 1,
    stop_requested: Callable[[], bool] = lambda: False,
    interrupted: Callable[[], BaseException] = KeyboardInterrupt,
) -> RangeTestResult:
    """Sweep the LR from `start_lr` to `end_lr` over `steps` training steps of `ctx`, then
    restore the weights and buffers of `restore` and the optimizer's state.

    Each step's loss and this rank's stop request are summed over the `ranks` in one
    collective (`sum_over_ranks`), so every rank sees the global batch's loss, decides alike,
    and stops at the same step: `interrupted()` is raised on all of them together."""
    if steps < 2:
        raise ValueError(f"the LR range test needs at least 2 steps, got {steps}")
    if isinstance(ctx.forward, torch.nn.Module):
        ctx.forward.train()  # an evaluation may have left the model in eval mode
    else:
        restore.train()
    sweep = _Sweep(ctx, lambda values: sum_over_ranks(values).tolist(), ranks)
    with state_restored(restore, ctx.optimizer):
        reason = sweep.run(_repeat(batches), start_lr, end_lr, steps, stop_requested, interrupted)
    if len(sweep.lrs) < 2:
        raise RangeTestError(
            f"the LR range test diverged at its first step (LR {start_lr:g}): "
            "lower --start-lr (find_lr) or give --lr-max"
        )
    lr_max, lr_min, max_method, min_method = suggest_bounds(
        sweep.lrs, sweep.smoothed, lr_min_divisor
    )
    return RangeTestResult(
        sweep.lrs, sweep.raw, sweep.smoothed, lr_max, lr_min, max_method, min_method, reason
    )


class _Sweep:
    def __init__(self, ctx: StepContext, reduce: Callable[[torch.Tensor], list], ranks: int):
        self.ctx, self.reduce, self.ranks = ctx, reduce, ranks
        self.lrs: list[float] = []
        self.raw: list[float] = []
        self.smoothed: list[float] = []

    def run(
        self,
        batches: Iterator,
        start_lr: float,
        end_lr: float,
        steps: int,
        stop_requested: Callable[[], bool],
        interrupted: Callable[[], BaseException],
    ) -> str:
        growth = (end_lr / start_lr) ** (1 / (steps - 1))
        average = 0.0
        for step in progress(range(steps), "LR range test", unit="step", nested=True):
            lr = start_lr * growth**step
            for group in self.ctx.optimizer.param_groups:
                group["lr"] = lr
            loss, _ = training_step(self.ctx, *next(batches))
            # One host read per step is fine here: the range test is a few hundred steps, once.
            local = torch.stack([loss.float(), loss.new_tensor(float(stop_requested()))])
            loss_sum, stop = self.reduce(local)
            value = loss_sum / self.ranks
            if stop:
                raise interrupted()
            if not math.isfinite(value):
                return f"loss not finite at LR {lr:.3g}"
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            self.lrs.append(lr)
            self.raw.append(value)
            self.smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
            if self.smoothed[-1] > DIVERGENCE_FACTOR * min(self.smoothed):
                return f"diverged at LR {lr:.3g}"
        return "completed the sweep"
