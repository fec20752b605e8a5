"""--lookahead K: every K optimizer steps the weights are pulled toward a slow copy of
themselves, and the slow copy is where training goes on from (Zhang et al., 2019; the public
record scripts of CIFAR-10 use it).

At each pull: slow = decay * slow + (1 - decay) * weights, then weights = slow. The decay rises
over the run as 0.95^K * (step / steps)^3, the schedule airbench94 publishes: near 0 early (the
pull changes nothing while the weights move fast), about 0.77 for K = 5 at the end, where it
averages out the last steps' noise. The last step of the run always pulls, so the trained
weights end on the slow copy. Floating-point BatchNorm statistics are pulled with the weights.
A part of the training state: its slow copy is checkpointed, so a resume is bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DECAY_PER_STEP = 0.95


class Lookahead:
    """See the module docstring; `total_steps`: the run's optimizer steps."""

    def __init__(self, model: nn.Module, every: int, total_steps: int) -> None:
        self.every, self.total_steps = every, total_steps
        live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self.slow = {name: tensor.detach().clone() for name, tensor in live.items()}
        # The tensors every pull touches, listed once (the model's are updated in place).
        self._pairs = (list(self.slow.values()), list(live.values()))

    def decay(self, steps_done: int) -> float:
        return DECAY_PER_STEP**self.every * (steps_done / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """After global step `step` (0-based): a pull every K steps and at the last."""
        done = step + 1
        if done % self.every and done != self.total_steps:
            return
        slow, live = self._pairs
        torch._foreach_lerp_(slow, live, 1.0 - self.decay(done))
        torch._foreach_copy_(live, slow)

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "total_steps": self.total_steps, "slow": dict(self.slow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("every"), state.get("total_steps")) != (self.every, self.total_steps) or set(
            state.get("slow", {})
        ) != set(self.slow):
            raise ValueError("the lookahead copy was kept for another schedule or another model")
        with torch.no_grad():
            for name, tensor in state["slow"].items():
                self.slow[name].copy_(tensor)
