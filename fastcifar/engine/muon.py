"""--optimizer muon: torch.optim.Muon (momentum orthogonalised by Newton-Schulz iterations) for
the convolution filters, SGD for every other parameter, as one optimizer.

Muon takes 2-D parameters, so each filter bank (out, in, k, k) is handed to it as an
(out, in*k*k) matrix that shares the filter's memory: Muon's step lands on the network's own
weights. Orthogonalisation does not depend on the order of a matrix's columns, so a
channels_last filter is viewed as (out, k*k*in) instead, without a copy. Before each step a
filter bank is rescaled to Frobenius norm sqrt(out), as airbench94_muon does: its step is then
a rotation of fixed size, and no weight decay is needed (the Muon group has none). Muon's
step is torch's: its default LR adjustment, sqrt(max(1, rows / columns)), is 1 for every filter
of airbench's network (the script has none) and 1.54 for the ResNet's 3 -> 64 first layer.

torch's Newton-Schulz iteration runs in bf16, always. On a CPU without native bf16 that is the
slow path: capped to AVX2 on the AMX Xeon, its 3 iterations on a 256 x 2304 filter bank took
571 ms in bf16 against 11 ms in fp32, and one 2-epoch slice of --recipe airbench-muon 10.4 s of
training against ~0.2 s uncapped. There `SgdMuon` iterates in fp32 (`newton_schulz_fp32`), as
the network itself trains in fp32 there.

`SgdMuon` is one `torch.optim.Optimizer` whose param groups hold every trained parameter, the
filters last with `lr_scale` = TrainConfig.muon_lr_scale: the One Cycle schedule, the LR
range test, a gradient scaler and `zero_grad` see one optimizer, and its state dict holds both
halves, so a checkpoint resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fastcifar.errors import ConfigError

NS_STEPS = 3  # airbench94_muon's Newton-Schulz iterations (torch's default is 5)


def is_filter(parameter: torch.Tensor) -> bool:
    """A convolution's filter bank (out, in, kh, kw): what Muon steps."""
    return parameter.ndim == 4


class SgdMuon(torch.optim.Optimizer):
    """SGD (Nesterov where asked) over `sgd_groups`, torch.optim.Muon over `filters`; see the
    module docstring."""

    def __init__(
        self,
        sgd_groups: list[dict[str, Any]],
        filters: list[nn.Parameter],
        *,
        lr: float,
        momentum: float,
        nesterov: bool,
        muon_lr_scale: float,
        muon_momentum: float,
        fused: bool | None = None,
        newton_schulz_fp32: bool = False,
    ) -> None:
        if not filters:
            raise ConfigError("--optimizer muon steps convolution filters: this network has none")
        muon_group = {"params": filters, "lr": lr * muon_lr_scale, "lr_scale": muon_lr_scale,
                      "momentum": muon_momentum, "weight_decay": 0.0, "muon": True}  # fmt: skip
        super().__init__([*sgd_groups, muon_group], {"lr": lr, "momentum": momentum})
        # The SGD half steps the outer group dicts themselves (see _share_groups), so that the
        # LR the schedule or the range test sets is the LR it steps with.
        self.sgd = None
        if sgd_groups:  # none when every other parameter is frozen
            self.sgd = torch.optim.SGD(self.param_groups[:-1], lr=lr, momentum=momentum,
                                       nesterov=nesterov and momentum > 0, fused=fused)  # fmt: skip
        self.matrices = [_matrix(f.detach(), f) for f in filters]
        for weight, matrix in zip(filters, self.matrices, strict=True):
            _check_shared(weight, matrix)
        self.newton_schulz_fp32 = newton_schulz_fp32
        self.muon = torch.optim.Muon(
            self.matrices, lr=muon_group["lr"], momentum=muon_momentum, nesterov=True,
            weight_decay=0.0, ns_steps=NS_STEPS,
        )  # fmt: skip

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("SgdMuon takes no closure")
        if self.sgd is not None:
            self._share_groups()
            self.sgd.step()
        group, inner = self.param_groups[-1], self.muon.param_groups[0]
        inner["lr"], inner["momentum"] = group["lr"], group["momentum"]
        for weight, matrix in zip(group["params"], self.matrices, strict=True):
            _check_shared(weight, matrix)
            if weight.grad is not None:
                matrix.grad = _matrix(weight.grad, weight)
                matrix.mul_(math.sqrt(len(matrix)) / matrix.norm())
        with _newton_schulz_in_fp32() if self.newton_schulz_fp32 else contextlib.nullcontext():
            self.muon.step()
        for matrix in self.matrices:
            matrix.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"sgd": None if self.sgd is None else self.sgd.state_dict(),
                "muon": self.muon.state_dict(),
                "muon_group": {k: v for k, v in self.param_groups[-1].items()
                               if k != "params"}}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"sgd", "muon", "muon_group"}:
            raise ValueError("this optimizer state is not of --optimizer muon")
        if (state_dict["sgd"] is None) != (self.sgd is None):
            raise ValueError("this optimizer state was saved for other trained parameters")
        if self.sgd is not None:
            self.sgd.load_state_dict(state_dict["sgd"])
            # torch's load gives the SGD half new group dicts: their values go to ours.
            for outer, loaded in zip(self.param_groups[:-1], self.sgd.param_groups, strict=True):
                outer.update({k: v for k, v in loaded.items() if k != "params"})
            self._share_groups()
        self.muon.load_state_dict(state_dict["muon"])
        self.param_groups[-1].update(state_dict["muon_group"])

    def _share_groups(self) -> None:
        """The SGD half steps our group dicts, not copies (torch's load_state_dict replaces
        them; a schedule writes into ours)."""
        self.sgd.param_groups = self.param_groups[:-1]


def orthogonalise_fp32(
    grad: torch.Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float
) -> torch.Tensor:
    """The quintic Newton-Schulz iteration torch.optim.Muon takes (same arguments, same
    steps), in fp32: `grad` scaled to spectral norm <= 1, then pushed towards the orthogonal
    factor of its polar decomposition, on its wide orientation."""
    a, b, c = ns_coefficients
    tall = grad.size(0) > grad.size(1)
    matrix = grad.float().T if tall else grad.float()
    matrix = matrix / matrix.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = matrix @ matrix.T
        matrix = torch.addmm(matrix, torch.addmm(gram, gram, gram, beta=b, alpha=c), matrix, beta=a)
    return matrix.T if tall else matrix


@contextlib.contextmanager
def _newton_schulz_in_fp32() -> Iterator[None]:
    """torch.optim.Muon's step with `orthogonalise_fp32` for its bf16 iteration. The step calls
    the private module function by name (torch 2.9 to 2.14); a torch without it keeps its own
    (tests/test_muon.py checks that the fp32 iteration is the one taken)."""
    module = torch.optim._muon
    original = getattr(module, "_zeropower_via_newtonschulz", None)
    if original is None:
        yield
        return
    module._zeropower_via_newtonschulz = orthogonalise_fp32
    try:
        yield
    finally:
        module._zeropower_via_newtonschulz = original


def _check_shared(weight: torch.Tensor, matrix: torch.Tensor) -> None:
    if weight.untyped_storage().data_ptr() != matrix.untyped_storage().data_ptr():
        raise RuntimeError("a filter's memory is not its Muon matrix's: build the optimizer "
                           "after the network's .to(device, memory_format=...)")  # fmt: skip


def _matrix(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` (a filter bank or its gradient) as an (out, rest) matrix in the order of
    `like`'s memory: a view of it when its layout allows, else a copy."""
    if not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.reshape(len(tensor), -1)
