"""Everything a run needs to continue, in one object: a checkpoint is `checkpoint()` of it and
a resume is `restore()`; there is no second list of things to save.

The stateful parts of a run are named once, in `parts` (model, optimizer, scheduler, scaler,
the global RNGs, and any added later: `add("ema", ...)`), and every operation on them is one
loop over that mapping: saved, restored, checked for finiteness; a part may also act after
every training step (`after_step(step)`, the engine's hook, told the run's global step), after
every epoch's steps (`end_of_epoch(epoch)`) and
lend its weights to the evaluation and to model.pt (`applied`). A new run (or each run of a
multi-run, after the trainer is re-seeded) builds its parts afresh.

The loader needs no state of its own: epoch e's order and augmentation are a function of
(seed, e), so `epoch` and `step_in_epoch` say exactly where it resumes.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fastcifar.engine.model import load_weights
from fastcifar.engine.schedule import LrBounds
from fastcifar.engine.step import EpochTotals
from fastcifar.errors import CheckpointError, first_line
from fastcifar.records.checkpoint import Checkpoint
from fastcifar.records.metrics_row import MetricsRow

# What trained a run before its checkpoint, where that checkpoint predates segments (2026-12-06).
UNRECORDED_SEGMENT = {"start": "after epoch 0", "commit": "not recorded", "torch": "not recorded"}


class Part(Protocol):
    """A stateful part of a run. It may also define `after_step(step)` (called after every
    optimizer step with that step's 0-based index in the run), `end_of_epoch(epoch)` (called
    after an epoch's steps, before its evaluation, with its 1-based number) and `applied()` (a
    context in which its weights are the model's)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class GlobalRng:
    """The global generators as a part (see rng_states)."""

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_states(state)


@dataclass
class TrainingState:
    parts: dict[str, Part]  # see the module docstring; "model" is the plain module
    bounds: LrBounds
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps done in the epoch in progress (a mid-epoch stop)
    partial: EpochTotals = field(default_factory=EpochTotals)  # that epoch's totals so far
    history: list[MetricsRow] = field(default_factory=list)  # one row per completed epoch
    step_losses: list[float] = field(default_factory=list)  # completed epochs' per-step losses
    elapsed: float = 0.0  # wall seconds of the run up to this state, over every process
    segments: list[dict[str, Any]] = field(default_factory=list)  # provenance.segment, each process

    @classmethod
    def of(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
        bounds: LrBounds,
    ) -> TrainingState:
        """The state of a run at its start; `model` the plain module (never the compiled or DDP
        wrapper)."""
        parts: dict[str, Part] = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
        if scaler is not None:
            parts["scaler"] = scaler
        parts["rng"] = GlobalRng()
        return cls(parts, bounds)

    @property
    def model(self) -> nn.Module:
        return self.parts["model"]  # type: ignore[return-value]

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return self.parts["scheduler"]  # type: ignore[return-value]

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self.parts.get("scaler")  # type: ignore[return-value]

    @property
    def started(self) -> bool:
        return bool(self.epoch or self.step_in_epoch)

    def add(self, name: str, part: Part) -> None:
        """A part of an option (the weight average of --ema, say), saved and restored with the
        others."""
        if name in self.parts:
            raise ValueError(f"the training state has a part {name!r} already")
        self.parts[name] = part

    def end_of_epoch(self) -> None:
        """After the training steps of epoch `self.epoch + 1`, before its evaluation and
        checkpoint: each part's `end_of_epoch(epoch)` (1-based)."""
        for part in self.parts.values():
            if hasattr(part, "end_of_epoch"):
                part.end_of_epoch(self.epoch + 1)

    def after_step(self, first_step: int) -> Callable[[], None] | None:
        """What runs after every optimizer step (the engine's hook) from global step
        `first_step` on: each part's `after_step(step)`; None when no part has one."""
        hooks = [part.after_step for part in self.parts.values() if hasattr(part, "after_step")]
        if not hooks:
            return None
        steps = itertools.count(first_step)

        def every_hook() -> None:
            step = next(steps)
            for hook in hooks:
                hook(step)

        return every_hook

    @contextlib.contextmanager
    def evaluated(self) -> Iterator[None]:
        """Within this context the model holds the weights that are evaluated and saved as
        model.pt: a part's average where one lends it, else the live ones."""
        with contextlib.ExitStack() as stack:
            for part in self.parts.values():
                if hasattr(part, "applied"):
                    stack.enter_context(part.applied())
            yield

    def is_finite(self) -> bool:
        """Whether every floating-point tensor of every part (weights, BatchNorm statistics,
        momentum, averages) is finite: reduced on the device, one host read."""
        tensors = [t for part in self.parts.values() for t in _tensors(part.state_dict())
                   if t.is_floating_point()]  # fmt: skip
        return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def checkpoint(self, config: dict[str, Any], how: dict[str, Any]) -> Checkpoint:
        """This state as a checkpoint of the run configured by `config`; `how`: world_size,
        rank_batch, threads and loader."""
        return Checkpoint(
            config=config,
            parts={name: part.state_dict() for name, part in self.parts.items()},
            lr_min=self.bounds.lr_min,
            lr_max=self.bounds.lr_max,
            lr_source=self.bounds.source,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            partial=self.partial.to_dict(),
            history=[row.to_dict() for row in self.history],
            step_losses=self.step_losses,
            elapsed=self.elapsed,
            segments=list(self.segments),
            **how,
        )

    def restore(self, checkpoint: Checkpoint, path: Path) -> None:
        """Continue from `checkpoint` (already checked field by field; its bounds are the ones
        this state was built with): every part from its state; a part the checkpoint lacks, or
        one that does not fit, is one line naming the file."""
        # A GradScaler comes and goes with the device's precision (fp16 on a GPU without bf16),
        # not with the run: one the checkpoint lacks starts fresh, one it has is ignored.
        mine, saved = set(self.parts) - {"scaler"}, set(checkpoint.parts) - {"scaler"}
        if mine != saved:
            raise CheckpointError(
                f"{path} holds the parts {', '.join(sorted(checkpoint.parts))} and this run has "
                f"{', '.join(sorted(self.parts))}: it was saved by a run trained otherwise"
            )
        misfit = load_weights(self.model, checkpoint.model)
        if misfit is not None:
            raise CheckpointError(f"{path} does not fit this run's model ({misfit})")
        try:
            for name, part in self.parts.items():
                if name != "model" and name in checkpoint.parts:
                    part.load_state_dict(checkpoint.parts[name])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(
                f"{path} does not fit this run's model ({first_line(error)})"
            ) from None
        self.epoch, self.step_in_epoch = checkpoint.epoch, checkpoint.step_in_epoch
        self.partial = EpochTotals(**checkpoint.partial)
        self.history = [MetricsRow.of(row) for row in checkpoint.history]
        self.step_losses = list(checkpoint.step_losses)
        self.elapsed = float(checkpoint.elapsed)
        self.segments = list(checkpoint.segments) or [UNRECORDED_SEGMENT]


def option_parts(trainer: Any) -> dict[str, Part]:
    """The parts a run's options add to its state, built afresh for `trainer` (a Trainer): the
    weight average of --ema, the slow copy of --lookahead, the re-estimate of --bn-reestimate,
    the whitening bias of --whitening-bias-epochs."""
    model, config, total_steps = trainer.model, trainer.config, trainer.total_steps
    parts: dict[str, Part] = {}
    if config.ema is not None:
        from fastcifar.training.ema import WeightAverage

        parts["ema"] = WeightAverage(model, config.ema)
    if config.lookahead is not None:
        from fastcifar.training.lookahead import Lookahead

        parts["lookahead"] = Lookahead(model, config.lookahead, total_steps)
    if config.bn_reestimate is not None:
        from fastcifar.training.bn_reestimate import BatchNormReestimate

        parts["bn_reestimate"] = BatchNormReestimate(trainer, config.bn_reestimate)
    if config.whitening_bias_epochs is not None:
        from fastcifar.training.whitening_bias import WhiteningBias

        parts["whitening_bias"] = WhiteningBias(model, config.whitening_bias_epochs)
    return parts


def _tensors(state: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a state dict, however nested (an optimizer's is)."""
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from _tensors(value)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from _tensors(value)


def rng_states() -> dict[str, Any]:
    """Every global generator. fastcifar's own draws do not use them (they are keyed by seed and
    epoch); they are kept so that code added to a run later resumes exactly as well."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": list(_python_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(_python_tuple(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _numpy_state() -> list[Any]:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]


def _python_state() -> tuple[Any, ...]:
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def _python_tuple(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return version, tuple(internal), gauss
