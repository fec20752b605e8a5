"""The training step and one training epoch.

Nothing in the step loop reads a value back to the host: losses, correct counts, per-step
losses and a non-finite flag accumulate in device tensors that are read once per epoch, so the
GPU never waits for Python. The model, the loss and the correct count are one module
(`TrainForward`), so that `torch.compile` makes them one graph.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from fastcifar.system.device import Precision


class TrainForward(nn.Module):
    """model -> (mean loss, correct count) of a batch; what each training step calls."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model, self.loss_fn, self.precision = model, loss_fn, precision

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.precision.autocast():
            logits = self.model(images)
        loss = self.loss_fn(logits.float(), labels)
        return loss, (logits.argmax(dim=1) == labels).sum()


@dataclass
class StepContext:
    """Everything a training step needs besides the batch."""

    forward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    after_step: Callable[[], None] | None = None  # e.g. a weight average's update


def mark_step_begin() -> None:
    # CUDA-graph trees reuse output memory across replays; marking each step tells them it is safe.
    if torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()


def training_step(
    ctx: StepContext, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step; returns the batch's mean loss and correct count as device tensors, to be
    consumed before the next step (a CUDA-graph replay overwrites them)."""
    mark_step_begin()
    loss, correct = ctx.forward(images, labels)
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scaler is None:
        loss.backward()
        ctx.optimizer.step()
    else:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    if ctx.scheduler is not None:
        ctx.scheduler.step()
    if ctx.after_step is not None:
        ctx.after_step()
    return loss.detach(), correct


@dataclass
class EpochTotals:
    """What an epoch (or the part of it done so far) adds up to, read back once.

    The epoch's loss is the exactly rounded mean of its per-step losses (math.fsum), so it does
    not depend on how the epoch was split: a resumed epoch reports the very same number."""

    step_losses: list[float] = field(default_factory=list)  # each step's global-batch mean loss
    correct: int = 0
    examples: int = 0
    first_non_finite_step: int | None = None  # step (within the epoch) of the first bad loss
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return math.fsum(self.step_losses) / max(len(self.step_losses), 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.examples, 1)

    def merged(self, later: EpochTotals) -> EpochTotals:
        """This part of an epoch followed by `later` (a resumed run's rest of the epoch)."""
        first_bad = self.first_non_finite_step
        if first_bad is None and later.first_non_finite_step is not None:
            first_bad = len(self.step_losses) + later.first_non_finite_step
        return EpochTotals(
            self.step_losses + later.step_losses,
            self.correct + later.correct,
            self.examples + later.examples,
            first_bad,
            self.seconds + later.seconds,
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class EpochAccumulator:
    """Per-step losses and correct counts kept on the device (two copies per step, no sums);
    `read` reduces them and is the epoch's one host synchronisation."""

    def __init__(self, steps: int, device: torch.device) -> None:
        self.losses = torch.zeros(steps, device=device)
        self.correct = torch.zeros(steps, dtype=torch.int64, device=device)
        self.steps_done = 0
        self.examples = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, batch_size: int) -> None:
        self.losses[self.steps_done] = loss
        self.correct[self.steps_done] = correct
        self.steps_done += 1
        self.examples += batch_size

    def read(self, reduce: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> EpochTotals:
        """Host values, summed over ranks by `reduce` (an all-reduce, or the identity)."""
        steps = self.steps_done
        if steps == 0:
            return EpochTotals()
        device = self.losses.device
        local = torch.cat(
            [
                self.losses[:steps].double() * batch_size,
                self.correct[:steps].sum().double().reshape(1),
                torch.tensor([float(self.examples)], device=device, dtype=torch.float64),
            ]
        )
        totals = reduce(local).tolist()
        global_batch = totals[steps + 1] / steps
        step_losses = [value / global_batch for value in totals[:steps]]
        first_bad = next((i for i, v in enumerate(step_losses) if not math.isfinite(v)), None)
        return EpochTotals(step_losses, round(totals[steps]), round(totals[steps + 1]), first_bad)


def run_steps(
    ctx: StepContext,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    accumulator: EpochAccumulator,
    should_stop: Callable[[int], bool] = lambda _steps: False,
) -> None:
    """Train on `batches`, adding each step to `accumulator`; stops early when `should_stop`
    (asked after every step with the number of steps done) says so."""
    for images, labels in batches:
        loss, correct = training_step(ctx, images, labels)
        accumulator.add(loss, correct, labels.shape[0])
        if should_stop(accumulator.steps_done):
            return


@contextlib.contextmanager
def state_restored(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Trial steps (warm-up, LR range test) inside the block leave no trace: the weights,
    buffers and optimizer state are put back as they were, whatever happens."""
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
