"""The training step, one training epoch and a whole-test-set evaluation.

Nothing in the step loop reads a value back to the host: losses and correct counts accumulate in
device tensors and are read once per epoch, so the GPU never waits for Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from fastcifar.device import Precision


@dataclass
class StepContext:
    """Everything a training step needs besides the batch."""

    model: nn.Module  # possibly torch.compile'd
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    precision: Precision
    scaler: torch.amp.GradScaler | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


@dataclass(frozen=True)
class EpochTotals:
    loss: float  # mean per-example loss
    accuracy: float
    examples: int


def mark_step_begin() -> None:
    # CUDA-graph trees reuse output memory across replays; marking each step tells them it is safe.
    if torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()


def training_step(
    ctx: StepContext, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step; returns the batch's summed loss and correct count as device tensors."""
    mark_step_begin()
    with ctx.precision.autocast():
        logits = ctx.model(images)
        loss = ctx.loss_fn(logits.float(), labels)
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
    correct = (logits.argmax(dim=1) == labels).sum()
    return loss.detach() * labels.shape[0], correct


def train_epoch(ctx: StepContext, loader: Iterable, progress: bool = False) -> EpochTotals:
    ctx.model.train()
    loss_sum = correct = None
    examples = 0
    for images, labels in tqdm(loader, desc="  batches", leave=False, disable=not progress):
        batch_loss, batch_correct = training_step(ctx, images, labels)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        examples += labels.shape[0]
    return EpochTotals(loss_sum.item() / examples, correct.item() / examples, examples)


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean over every test image (not a mean of batch means)
    accuracy: float
    predictions: torch.Tensor  # (N,) on the CPU
    labels: torch.Tensor  # (N,) on the CPU


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, precision: Precision, progress: bool = False
) -> Evaluation:
    model.eval()
    losses, predictions, labels_seen = [], [], []
    for images, labels in tqdm(loader, desc="  evaluate", leave=False, disable=not progress):
        mark_step_begin()
        with precision.autocast():
            logits = model(images).float()
        losses.append(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        predictions.append(logits.argmax(dim=1))
        labels_seen.append(labels)
    predicted = torch.cat(predictions).cpu()
    truth = torch.cat(labels_seen).cpu()
    total_loss = torch.stack(losses).sum().item()
    return Evaluation(
        loss=total_loss / len(truth),
        accuracy=(predicted == truth).float().mean().item(),
        predictions=predicted,
        labels=truth,
    )
