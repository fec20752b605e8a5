"""--ema DECAY: an exponential moving average of the weights, a part of the training state.

After every optimizer step each floating-point weight and BatchNorm statistic of the average
moves towards the model's: average = decay * average + (1 - decay) * weight. The run evaluates
the average and saves it as model.pt; its checkpoint keeps both (the live weights go on
training), so a resume is bit-identical with the average as without it. A typical decay for
this recipe's 2,352 steps is 0.99 to 0.999 (a memory of 100 to 1,000 steps).

The decay warms up: step t (0-based, of the run) uses min(decay, (1 + t) / (10 + t)), as
TensorFlow's ExponentialMovingAverage with num_updates does, so that a short run's average is
not still mostly the initial weights (0.99 over 8 steps kept 92% of them: chance accuracy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The exponential moving average of `model`'s floating-point state (see the docstring)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = model, decay
        live = self._live()
        self.average = {name: tensor.detach().clone() for name, tensor in live.items()}
        # Every step updates these: the lists are made once, not a state_dict per step (the
        # weights are updated in place, so the tensors stay the model's).
        self._pairs = (list(self.average.values()), [live[name] for name in self.average])

    def _live(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """The update after global step `step`, with the warmed-up decay."""
        averaged, live = self._pairs
        torch._foreach_lerp_(averaged, live, 1.0 - self.decay_at(step))

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside this context, its own weights again after."""
        live = self._live()
        kept = {name: tensor.detach().clone() for name, tensor in live.items()}
        with torch.no_grad():
            for name, tensor in live.items():
                tensor.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in live.items():
                    tensor.copy_(kept[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "average": dict(self.average)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("decay") != self.decay or set(state.get("average", {})) != set(self.average):
            raise ValueError("the weight average was kept with another decay or for another model")
        with torch.no_grad():
            for name, tensor in state["average"].items():
                self.average[name].copy_(tensor)
