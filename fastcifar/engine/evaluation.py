"""Evaluation on the test split: fixed-shape batches, optional TTA, sharded across ranks.

TTA levels: flip averages the logits of each image and of its mirror image; flip + translate
(as the public record scripts count accuracy) averages that pair with the mean of the pairs of
the image shifted by TTA_SHIFT pixel up-left and down-right (reflect padding), half and half:
six forward passes per image.

Every evaluation batch has the same shape: the last one is padded with blank images labelled
-1, which the loss ignores and no prediction can match. One compiled graph (and one CUDA graph)
therefore serves every batch, whatever the test-set size or `eval_batch_size`, and padding
never counts. The batch is at most `eval_batch_size`, sized so that the batches cover a shard
with as little padding as possible (10,000 images on 8 ranks: 2 batches of 625 each, none).
Under torchrun each rank evaluates one contiguous shard; loss sums and correct counts are
all-reduced, predictions all-gathered, so every test image counts exactly once.
The test split always goes through this device-resident path, whichever training loader is
used: it has no augmentation, and nothing is faster than a gather on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fastcifar.data.dataset import CifarSplit
from fastcifar.data.normalisation import CIFAR10, Normalisation, normalise
from fastcifar.engine.step import mark_step_begin
from fastcifar.system.device import Precision
from fastcifar.system.distributed import Distributed
from fastcifar.system.progress import progress

PADDING_LABEL = -1
TTA_SHIFT = 1  # pixels; airbench94's published level-2 TTA shifts by 1


class EvalBatches:
    """This rank's shard of `split` on `device`, in batches of one fixed size."""

    def __init__(
        self,
        split: CifarSplit,
        batch_size: int,
        device: torch.device,
        dist: Distributed,
        normalisation: Normalisation = CIFAR10,
    ) -> None:
        total = len(split)
        per_rank = -(-total // dist.world_size)
        # Real (not padding) images of each rank's shard; this rank's start at rank * per_rank.
        self.shard_counts = [
            min(per_rank, max(0, total - rank * per_rank)) for rank in range(dist.world_size)
        ]
        start = min(dist.rank * per_rank, total)
        self.count = self.shard_counts[dist.rank]
        self.batches = -(-per_rank // max(1, batch_size))  # the same on every rank
        self.batch_size = -(-per_rank // self.batches)
        padded = self.batches * self.batch_size
        images = torch.zeros((padded, *split.images.shape[1:]), dtype=torch.uint8)
        images[: self.count] = torch.from_numpy(split.images[start : start + self.count])
        labels = torch.full((padded,), PADDING_LABEL, dtype=torch.int64)
        labels[: self.count] = torch.from_numpy(split.labels[start : start + self.count])
        self.images, self.labels = images.to(device), labels.to(device)
        self.mean, self.inv_std = normalisation.on(device)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in range(self.batches):
            rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            yield normalise(self.images[rows], self.mean, self.inv_std, None), self.labels[rows]


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(summed loss, correct count) of a batch, padding excluded, as one float64 pair."""
    loss = nn.functional.cross_entropy(logits, labels, ignore_index=PADDING_LABEL, reduction="sum")
    correct = (logits.argmax(dim=1) == labels).sum()
    return torch.stack([loss.double(), correct.double()])


def shifted_pair(images: torch.Tensor, shift: int = TTA_SHIFT) -> tuple[torch.Tensor, ...]:
    """`images` (N, C, H, W) moved `shift` pixels up-left and down-right, edges reflected."""
    height, width = images.shape[2], images.shape[3]
    padded = nn.functional.pad(images, (shift,) * 4, mode="reflect")
    up_left = padded[:, :, 2 * shift :, 2 * shift :]
    down_right = padded[:, :, :height, :width]
    return up_left.contiguous(memory_format=torch.channels_last), down_right.contiguous(
        memory_format=torch.channels_last
    )


class EvalForward(nn.Module):
    """model -> per batch: (plain scores, plain predictions[, TTA scores, TTA predictions]);
    the TTA of the module docstring, with the shifted copies when `translate`."""

    def __init__(
        self, model: nn.Module, precision: Precision, tta: bool, translate: bool = False
    ) -> None:
        super().__init__()
        self.model, self.precision = model, precision
        self.tta, self.translate = tta, tta and translate

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model(images).float()

    def _flip_pair(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        plain = self._logits(images) if logits is None else logits
        return (plain + self._logits(images.flip(3))) / 2

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self._logits(images)
        outputs = (_scores(logits, labels), logits.argmax(dim=1))
        if self.tta:
            averaged = self._flip_pair(images, logits)
            if self.translate:
                shifted = [self._flip_pair(copy) for copy in shifted_pair(images)]
                averaged = (averaged + (shifted[0] + shifted[1]) / 2) / 2
            outputs += (_scores(averaged, labels), averaged.argmax(dim=1))
        return outputs


@dataclass(frozen=True)
class Scores:
    loss: float  # mean over every test image (not a mean of batch means)
    accuracy: float
    predictions: torch.Tensor  # (N,) on the CPU, in test-set order


@dataclass(frozen=True)
class Evaluation:
    plain: Scores
    tta: Scores | None  # TTA (flip, or flip + translate), when asked for
    labels: torch.Tensor  # (N,) on the CPU

    def headline(self) -> Scores:
        """TTA when it was asked for, else the plain evaluation."""
        return self.tta or self.plain


@torch.no_grad()
def evaluate(
    forward: nn.Module, batches: EvalBatches, labels: torch.Tensor, dist: Distributed
) -> Evaluation:
    """Run `forward` (an EvalForward, possibly compiled) over every batch; `labels` are the
    whole test split's, in order. A collective under torchrun: every rank must call it."""
    forward.eval()
    sums: list[torch.Tensor] = []
    predictions: list[list[torch.Tensor]] = []
    for images, batch_labels in progress(batches, "evaluate", unit="batch", nested=True):
        mark_step_begin()
        outputs = forward(images, batch_labels)
        # Copies: a CUDA-graph replay of the next batch overwrites the outputs.
        sums.append(torch.stack(outputs[0::2]).clone())
        predictions.append([p.clone() for p in outputs[1::2]])
    totals = dist.all_reduce_sum(torch.stack(sums).sum(dim=0)).cpu()  # (variants, 2)
    variants = []
    for index, (loss_sum, correct) in enumerate(totals.tolist()):
        local = torch.cat([p[index] for p in predictions])
        ordered = _gather_predictions(local, batches, dist)
        variants.append(Scores(loss_sum / len(labels), correct / len(labels), ordered))
    return Evaluation(variants[0], variants[1] if len(variants) > 1 else None, labels)


def _gather_predictions(
    local: torch.Tensor, batches: EvalBatches, dist: Distributed
) -> torch.Tensor:
    """Every rank's real predictions (padding dropped), concatenated in test-set order."""
    shards = dist.all_gather(local)
    counts = batches.shard_counts
    return torch.cat([shard[:count] for shard, count in zip(shards, counts, strict=True)]).cpu()


def evaluate_split(
    model: nn.Module,
    split: CifarSplit,
    device: torch.device,
    batch_size: int = 1000,
    tta: bool = False,
    normalisation: Normalisation = CIFAR10,
    tta_translate: bool = False,
) -> Evaluation:
    """A saved model on a test split, in one process and in fp32 (what `evaluate` and
    `explain` report; training evaluates under its own precision, so the last digit of a bf16
    run's accuracy may differ)."""
    single = Distributed()
    forward = EvalForward(model, Precision(device.type, None), tta, tta_translate)
    labels = torch.from_numpy(split.labels)
    batches = EvalBatches(split, batch_size, device, single, normalisation)
    return evaluate(forward, batches, labels, single)
