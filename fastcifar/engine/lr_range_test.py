"""LR range test (Smith 2015; fastai's lr_find): sweep the LR exponentially for a hundred or so
steps, record the loss, and read LRMAX and LRMIN off the smoothed curve.

Written here rather than taken from torch-lr-finder because that library smooths without bias
correction, suggests a single LR (steepest gradient) instead of both bounds, has no bf16 autocast,
and expects a torch DataLoader; we need both bounds, bf16, and our GPU loaders.

How the bounds are read (bias-corrected exponential moving average of the loss vs log LR):
  * LRMAX = the LR at the floor of the valley (the minimum smoothed loss), but at most a tenth of
    the LR at which the loss blew up (the smoothed loss past DIVERGENCE_FACTOR x its floor), if
    it did. The two cases are two kinds of curve:
    - A loss that blows up has a hard edge (least squares: SGD diverges above 2/L), and the
      smoothed floor lags past it (1.0-6.5x 2/L over sweeps of 100-400 steps, batch sizes 64-512,
      start LRs 1e-6..1e-2), so LRMAX keeps a decade below the blow-up, which came at 1.1-9.4x
      2/L there: LRMAX landed at 0.11-0.94x 2/L (tests/test_lr_range_test.py).
    - The custom ResNet's loss does not blow up. On the full CIFAR-10 (2026-12-06, seed 0, bf16,
      the default sweep: 100 steps from LR 1e-4 to 10) the raw loss fell from 2.32 to its lowest
      (1.64) at LR 0.12, spiked once at 0.15, swung between 1.8 and 3.3 from 0.3 on, and was at
      2.0 by LR 10; the smoothed loss never passed 1.08x its floor, at LR 0.433. That floor is
      the peak Page tuned by hand for this net (0.4), and One Cycle's 5-epoch warm-up gets the
      net there. A tenth of it (0.0433, this module's earlier reading) cost 1.25 points: 92.45%
      (flip TTA 93.15%) after 24 epochs against 93.70% (94.41%) at LRMAX 0.4, same seed and
      machine (benchmarks/results/cpu-recipe-intel-xeon-amx-2-cores-2026-12-06/); the floor
      itself (this reading) reached 93.84% (94.50%) there, 0.14 points above 0.4. Another
      sweep of this net (5,000 images, 40 steps, fp32) put the floor at 0.29, without blowing
      up either.
    The floor sits past the raw minimum by the smoothing's lag (about 50 steps of memory: 0.55
    decades here), so it depends on the sweep's length and span; the default sweep is the one
    measured. Where the loss only just blows up, LRMAX steps down about 10x between the cases.
    The alternatives measured worse on least squares: the steepest-descent point came out 3.5x
    to 10^5x too low (it fires as soon as the loss starts to move), and fastai's "valley" pick
    depends on where the sweep starts (it counts the flat start as part of the valley).
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
from fastcifar.system.caller import named
from fastcifar.system.progress import progress

SMOOTHING = 0.98
DIVERGENCE_FACTOR = 4.0
ONSET_FRACTION = 0.05
BLOW_UP_DIVISOR = 10.0


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
    blow_up_lr: float | None = None  # the LR at which the loss blew up; None if it did not

    @property
    def floor(self) -> int:
        """The step at the valley floor that LRMAX is read from."""
        return valley_floor(self.smoothed)

    def to_dict(self) -> dict:
        return asdict(self)


# A sweep of fewer steps only samples the curve: its lowest point may be its first by noise, so
# it is not refused for that (its LRMAX says so instead); a longer one whose loss never fell is.
VALLEY_MIN_STEPS = 10


def valley_floor(smoothed: list[float]) -> int:
    """The step of the minimum smoothed loss."""
    return int(np.argmin(smoothed))


def suggest_bounds(
    lrs: list[float], smoothed: list[float], lr_min_divisor: float, blow_up_lr: float | None = None
) -> tuple[float, float, str, str]:
    """(lr_max, lr_min, how lr_max was found, how lr_min was found); see the module docstring."""
    floor = valley_floor(smoothed)
    lr_max, max_method = lrs[floor], f"valley floor (minimum smoothed loss at LR {lrs[floor]:.3g})"
    if blow_up_lr is not None and blow_up_lr / BLOW_UP_DIVISOR < lr_max:
        lr_max = blow_up_lr / BLOW_UP_DIVISOR
        max_method = (
            f"blow-up / {BLOW_UP_DIVISOR:g} (the loss blew up at LR {blow_up_lr:.3g}; "
            f"valley floor at LR {lrs[floor]:.3g})"
        )
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
    out_of_time: Callable[[], bool] = lambda: False,
    time_is_up: Callable[[], BaseException] = TimeoutError,
) -> RangeTestResult:
    """Sweep the LR from `start_lr` to `end_lr` over `steps` training steps of `ctx`, then
    restore the weights and buffers of `restore` and the optimizer's state.

    Each step's loss, this rank's stop request and whether its time is up are summed over the
    `ranks` in one collective (`sum_over_ranks`), so every rank sees the global batch's loss,
    decides alike, and stops at the same step: `interrupted()` (a signal) or `time_is_up()`
    (--max-time) is raised on all of them together, a signal first."""
    if steps < 2:
        raise ValueError(f"the LR range test needs at least 2 steps, got {steps}")
    if isinstance(ctx.forward, torch.nn.Module):
        ctx.forward.train()  # an evaluation may have left the model in eval mode
    else:
        restore.train()
    sweep = _Sweep(ctx, lambda values: sum_over_ranks(values).tolist(), ranks)
    with state_restored(restore, ctx.optimizer):
        stops = _Stops(stop_requested, interrupted, out_of_time, time_is_up)
        reason = sweep.run(_repeat(batches), start_lr, end_lr, steps, stops)
    if len(sweep.lrs) < 2:
        raise RangeTestError(
            f"the LR range test diverged at its first step (LR {start_lr:g}): "
            f"lower {named('start_lr')} (find_lr) or give {named('lr_max')}"
        )
    at_start = valley_floor(sweep.smoothed) == 0
    if at_start and len(sweep.lrs) >= VALLEY_MIN_STEPS:
        raise RangeTestError(
            f"the LR range test found no valley: the smoothed loss was lowest at the sweep's "
            f"first step (LR {sweep.lrs[0]:g}) and never fell as the LR rose over "
            f"{len(sweep.lrs)} steps; give {named('lr_max')}, or sweep longer "
            f"({named('range_test_steps')}) from another {named('range_test_start_lr')}"
        )
    lr_max, lr_min, max_method, min_method = suggest_bounds(
        sweep.lrs, sweep.smoothed, lr_min_divisor, sweep.blow_up_lr
    )
    if at_start:  # a sweep too short to tell a valley from noise: said, and recorded
        max_method += (
            f"; the sweep's first step, over only {len(sweep.lrs)} steps: too short to find a "
            f"valley, give {named('lr_max')} or sweep at least {VALLEY_MIN_STEPS} steps"
        )
    return RangeTestResult(
        sweep.lrs,
        sweep.raw,
        sweep.smoothed,
        lr_max,
        lr_min,
        max_method,
        min_method,
        reason,
        sweep.blow_up_lr,
    )


@dataclass(frozen=True)
class _Stops:
    """What may end a sweep early: a signal, then the deadline (each asked, each raised)."""

    requested: Callable[[], bool]
    interrupted: Callable[[], BaseException]
    out_of_time: Callable[[], bool]
    time_is_up: Callable[[], BaseException]


class _Sweep:
    def __init__(self, ctx: StepContext, reduce: Callable[[torch.Tensor], list], ranks: int):
        self.ctx, self.reduce, self.ranks = ctx, reduce, ranks
        self.lrs: list[float] = []
        self.raw: list[float] = []
        self.smoothed: list[float] = []
        self.blow_up_lr: float | None = None

    def run(
        self,
        batches: Iterator,
        start_lr: float,
        end_lr: float,
        steps: int,
        stops: _Stops,
    ) -> str:
        growth = (end_lr / start_lr) ** (1 / (steps - 1))
        average = 0.0
        for step in progress(range(steps), "LR range test", unit="step", nested=True):
            lr = start_lr * growth**step
            for group in self.ctx.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # BatchNorm biases' multiple
            loss, _ = training_step(self.ctx, *next(batches))
            # One host read per step is fine here: the range test is a few hundred steps, once.
            flags = [float(stops.requested()), float(stops.out_of_time())]
            loss_sum, signalled, late = self.reduce(
                torch.stack([loss.float(), *map(loss.new_tensor, flags)])
            )
            value = loss_sum / self.ranks
            if signalled:
                raise stops.interrupted()
            if late:
                raise stops.time_is_up()
            if not math.isfinite(value):
                self.blow_up_lr = lr
                return f"loss not finite at LR {lr:.3g}"
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            self.lrs.append(lr)
            self.raw.append(value)
            self.smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
            if self.smoothed[-1] > DIVERGENCE_FACTOR * min(self.smoothed):
                self.blow_up_lr = lr
                return f"diverged at LR {lr:.3g}"
        return "completed the sweep"
