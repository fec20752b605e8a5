"""--whitening-bias-epochs N: the bias of the first convolution (a fixed whitening layer's, as
airbench's network has it) trains for the first N epochs only, then stays as it is: the paper's
script trains it for 3 of its 10 epochs. A part of the training state on the end-of-epoch hook;
whether it is frozen is checkpointed, so that a resumed run freezes exactly where it did.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastcifar.engine.initialisation import image_convolution
from fastcifar.errors import ConfigError


class WhiteningBias:
    """See the module docstring; `model`: the network, whose first convolution on the image
    must have a bias."""

    def __init__(self, model: nn.Module, epochs: int) -> None:
        first = image_convolution(model)
        if first is None or first.bias is None:
            raise ConfigError(
                "--whitening-bias-epochs needs a network whose first convolution has a bias "
                "(--model airbench's whitening layer)"
            )
        self.bias, self.epochs = first.bias, epochs
        self.bias.requires_grad_(True)  # a new run (or the next of a plan) trains it again

    def end_of_epoch(self, epoch: int) -> None:
        """After epoch `epoch` (1-based): frozen once `epochs` have trained it."""
        if epoch >= self.epochs:
            self.bias.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "frozen": not self.bias.requires_grad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("epochs") != self.epochs:
            raise ValueError("the whitening bias was set to train for another number of epochs")
        self.bias.requires_grad_(not state["frozen"])
