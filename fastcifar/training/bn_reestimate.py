"""--bn-reestimate N: after the last epoch's steps, every BatchNorm layer's running statistics
are computed afresh over N training batches with the final weights, as an exact average over
those batches, before the final evaluation and model.pt.

Why: the running statistics are a momentum average over the last few dozen steps, taken while
the weights still moved; after --lookahead's last pull the weights are an average whose own
statistics nobody measured. The batches are those the loader draws for the epoch after the
last (a function of the seed, like every epoch's), with the training augmentation, in the
training precision; the plain model, never the compiled one, so nothing is compiled for it.
Under data-parallel each rank re-estimates on its own share of every batch; the evaluation
takes rank 0's, as it does after every epoch. A part of the training state on its end-of-epoch
hook; it keeps no state but its setting, so a resume re-estimates exactly as a run never
stopped.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn


class BatchNormReestimate:
    """See the module docstring; `trainer`: the run's Trainer."""

    def __init__(self, trainer: Any, batches: int) -> None:
        self.trainer, self.batches = trainer, batches

    def end_of_epoch(self, epoch: int) -> None:
        """After epoch `epoch` (1-based) has trained: re-estimate after the last."""
        config = self.trainer.config
        if epoch != config.epochs:
            return
        model: nn.Module = self.trainer.model
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # an exact (cumulative) average over the batches
        loader = self.trainer.train_loader
        loader.set_epoch(config.epochs)
        was_training = model.training
        model.train()
        try:
            with torch.no_grad(), self.trainer.precision.autocast():
                for images, _ in itertools.islice(iter(loader), self.batches):
                    model(images)
        finally:
            model.train(was_training)
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batches") != self.batches:
            raise ValueError("the BatchNorm re-estimate was set for another number of batches")
