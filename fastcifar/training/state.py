"""Everything a run needs to continue, in one object: a checkpoint is `checkpoint()` of it and
a resume is `restore()`; there is no second list of things to save.

The loader needs no state of its own: epoch e's order and augmentation are a function of
(seed, e), so `epoch` and `step_in_epoch` say exactly where it resumes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcifar.engine.model import load_weights
from fastcifar.engine.schedule import LrBounds
from fastcifar.engine.step import EpochTotals
from fastcifar.errors import CheckpointError, first_line
from fastcifar.records.checkpoint import Checkpoint


@dataclass
class TrainingState:
    model: nn.Module  # the plain module (never the compiled or DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    bounds: LrBounds
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps done in the epoch in progress (a mid-epoch stop)
    partial: EpochTotals = field(default_factory=EpochTotals)  # that epoch's totals so far
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per epoch
    step_losses: list[float] = field(default_factory=list)  # completed epochs' per-step losses
    elapsed: float = 0.0  # wall seconds of the run up to this state, over every process

    @property
    def started(self) -> bool:
        return bool(self.epoch or self.step_in_epoch)

    def checkpoint(self, config: dict[str, Any], how: dict[str, Any]) -> Checkpoint:
        """This state as a checkpoint of the run configured by `config`; `how`: world_size,
        rank_batch, threads and loader."""
        return Checkpoint(
            config=config,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            lr_min=self.bounds.lr_min,
            lr_max=self.bounds.lr_max,
            lr_source=self.bounds.source,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            partial=self.partial.to_dict(),
            history=self.history,
            step_losses=self.step_losses,
            elapsed=self.elapsed,
            rng=rng_states(),
            **how,
        )

    def restore(self, checkpoint: Checkpoint, path: Path) -> None:
        """Continue from `checkpoint` (already checked field by field; its bounds are the ones
        this state was built with); weights or optimizer state that do not fit this model are
        one line naming the file."""
        misfit = load_weights(self.model, checkpoint.model)
        if misfit is not None:
            raise CheckpointError(f"{path} does not fit this run's model ({misfit})")
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.scheduler.load_state_dict(checkpoint.scheduler)
            if self.scaler is not None and checkpoint.scaler is not None:
                self.scaler.load_state_dict(checkpoint.scaler)
            set_rng_states(checkpoint.rng)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(
                f"{path} does not fit this run's model ({first_line(error)})"
            ) from None
        self.epoch, self.step_in_epoch = checkpoint.epoch, checkpoint.step_in_epoch
        self.partial = EpochTotals(**checkpoint.partial)
        self.history = list(checkpoint.history)
        self.step_losses = list(checkpoint.step_losses)
        self.elapsed = float(checkpoint.elapsed)


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
