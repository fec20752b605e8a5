"""The optimizer (SGD, Nesterov; or Muon for the filters, engine/muon.py) and the One Cycle
schedule: linear LRMIN -> LRMAX (peak at epoch 5 of 24) -> LRMIN, stepped per batch.

No annihilation by default: the cycle ends at LRMIN (final_div_factor = 1), as the assignment
recipe asks; `final_divisor` ends it at LRMIN / final_divisor instead (airbench's cycle runs
0.2 -> 1 -> 0.07 of its peak).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from fastcifar.engine.initialisation import image_convolution
from fastcifar.engine.muon import SgdMuon, is_filter
from fastcifar.errors import ConfigError
from fastcifar.system.device import cpu_bf16_support


@dataclass(frozen=True)
class LrBounds:
    """The two anchors of the cycle, and how each was obtained (recorded in summary.json)."""

    lr_min: float
    lr_max: float
    source: dict[str, Any]


def peak_step(total_steps: int, peak_fraction: float) -> int:
    """Index of the step at which the LR is LRMAX: the first step of epoch 5 for 24 epochs
    (never the first or the last step, so that both ramps exist)."""
    return min(max(round(peak_fraction * total_steps), 1), total_steps - 2)


def one_cycle_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    lr_min: float,
    lr_max: float,
    total_steps: int,
    peak_fraction: float,
    cycle_momentum: bool = False,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    final_divisor: float = 1.0,
) -> OneCycleLR:
    """`OneCycleLR` placed so that step 0 = LRMIN, step `peak_step` = LRMAX, last step = LRMIN
    (/ `final_divisor`)."""
    if total_steps < 3:
        raise ValueError(f"a one-cycle schedule needs at least 3 steps, got {total_steps}")
    peak = peak_step(total_steps, peak_fraction)
    # OneCycleLR's warm-up phase ends (LR = max) at step pct_start * total_steps - 1.
    pct_start = (peak + 1.0) / total_steps
    return OneCycleLR(
        optimizer,
        max_lr=[lr_max * scale for scale in lr_scales(optimizer)],
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="linear",
        div_factor=lr_max / lr_min,
        final_div_factor=final_divisor,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        three_phase=False,
    )


def one_cycle_lr(
    step: int,
    *,
    lr_min: float,
    lr_max: float,
    total_steps: int,
    peak_fraction: float,
    final_divisor: float = 1.0,
) -> float:
    """The LR of `step` under `one_cycle_schedule`, computed directly (no optimizer, no memory
    proportional to the run): linear from LRMIN up to LRMAX at the peak, then down to LRMIN
    (/ `final_divisor`)."""
    peak = peak_step(total_steps, peak_fraction)
    if step <= peak:
        return lr_min + (lr_max - lr_min) * step / peak
    end = lr_min / final_divisor
    return lr_max + (end - lr_max) * (step - peak) / (total_steps - 1 - peak)


def schedule_points(
    *,
    lr_min: float,
    lr_max: float,
    total_steps: int,
    peak_fraction: float,
    final_divisor: float = 1.0,
    points: int = 2000,
) -> tuple[list[int], list[float]]:
    """(steps, LRs) at up to `points` steps, the peak and both ends included: enough to plot
    any schedule, however many steps it has."""
    peak = peak_step(total_steps, peak_fraction)
    count = min(points, total_steps)
    steps = sorted({round(i * (total_steps - 1) / (count - 1)) for i in range(count)} | {peak})
    shape = dict(lr_min=lr_min, lr_max=lr_max, total_steps=total_steps, peak_fraction=peak_fraction,
                 final_divisor=final_divisor)  # fmt: skip
    return steps, [one_cycle_lr(step, **shape) for step in steps]


def given_bounds(config: Any, how_max: str = "given") -> LrBounds | None:
    """The bounds `config` (a TrainConfig) fixes: LRMIN given, or LRMAX / lr_min_divisor; None:
    find them."""
    if config.lr_max is None or isinstance(config.lr_max, tuple):
        return None
    if config.lr_min is not None:
        return LrBounds(config.lr_min, config.lr_max, {"lr_max": how_max, "lr_min": "given"})
    how_min = f"LRMAX / {config.lr_min_divisor:g}"
    lr_min = config.lr_max / config.lr_min_divisor
    return LrBounds(lr_min, config.lr_max, {"lr_max": how_max, "lr_min": how_min})


@dataclass(frozen=True)
class ParameterGroups:
    """How the optimizer treats BatchNorm and bias parameters (TrainConfig's freeze_bn_scale,
    bn_bias_lr_scale, bias_decay and whitening_bias_lr_scale). The default, one group for
    every parameter, is the assignment recipe's (and the only layout of checkpoints written
    before these options)."""

    freeze_bn_scale: bool = False
    bn_bias_lr_scale: float = 1.0
    bias_decay: bool = True
    whitening_bias_lr_scale: float | None = None  # None: with the other biases

    @property
    def split(self) -> bool:
        return (
            self.bn_bias_lr_scale != 1.0
            or not self.bias_decay
            or self.whitening_bias_lr_scale is not None
        )

    def groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Param groups: weights; BatchNorm biases at `lr_scale` x the LR with weight decay /
        lr_scale (the same decay per step, lr x wd); other biases and BatchNorm scales. Each
        group's `lr_scale` is what the schedule and the range test multiply its LR by."""
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
        bn_biases = {id(m.bias) for m in norms if m.bias is not None}
        bn_scales = {id(m.weight) for m in norms if m.weight is not None}
        trained = [p for p in model.parameters() if p.requires_grad]
        if not self.split:
            return [{"params": trained, "weight_decay": weight_decay, "lr_scale": 1.0}]
        other_decay = weight_decay if self.bias_decay else 0.0
        scale = self.bn_bias_lr_scale
        whitening = self._whitening_bias(model)
        own = bn_biases | {id(p) for p in whitening}
        weights = [p for p in trained if p.ndim > 1 and id(p) not in bn_scales]
        biases = [p for p in trained if id(p) in bn_biases]
        others = [p for p in trained if p.ndim <= 1 and id(p) not in own]
        groups = [
            {"params": weights, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": biases, "weight_decay": other_decay / scale, "lr_scale": scale},
            {"params": others, "weight_decay": other_decay, "lr_scale": 1.0},
        ]
        if whitening:
            ratio = self.whitening_bias_lr_scale or 1.0
            groups.append({"params": whitening, "weight_decay": other_decay / ratio,
                           "lr_scale": ratio})  # fmt: skip
        return [group for group in groups if group["params"]]

    def _whitening_bias(self, model: nn.Module) -> list[nn.Parameter]:
        """The image convolution's bias when it has an LR of its own (else [])."""
        if self.whitening_bias_lr_scale is None:
            return []
        first = image_convolution(model)
        if first is None or first.bias is None:
            raise ConfigError(
                "--whitening-bias-lr-scale needs a network whose first convolution has a bias "
                "(--model airbench's whitening layer)"
            )
        return [first.bias]


def freeze_bn_scales(model: nn.Module) -> None:
    """BatchNorm scales stay at their initial 1: not trained, not in the optimizer."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.weight is not None:
            module.weight.requires_grad_(False)


@dataclass(frozen=True)
class MuonSettings:
    """--optimizer muon: the filters' LR as a multiple of the schedule's, and their momentum."""

    lr_scale: float = 1.0
    momentum: float = 0.6


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    groups: ParameterGroups = ParameterGroups(),
    muon: MuonSettings | None = None,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the fused CUDA kernel updates all parameters in one launch);
    with `muon`, the convolution filters step by Muon instead (engine/muon.py)."""
    cuda = next(model.parameters()).is_cuda
    fused = cuda or None
    param_groups = groups.groups(model, weight_decay)
    for group in param_groups:
        group["lr"] = lr * group["lr_scale"]
    if muon is not None:
        filters = [p for group in param_groups for p in group["params"] if is_filter(p)]
        rest = [{**group, "params": [p for p in group["params"] if not is_filter(p)]}
                for group in param_groups]  # fmt: skip
        return SgdMuon([group for group in rest if group["params"]], filters, lr=lr,
                       momentum=momentum, nesterov=nesterov, muon_lr_scale=muon.lr_scale,
                       muon_momentum=muon.momentum, fused=fused,
                       newton_schulz_fp32=not cuda and not cpu_bf16_support()[0])  # fmt: skip
    return torch.optim.SGD(
        param_groups,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
        fused=fused,
    )


def lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's multiple of the schedule's LR (1 for every group by default)."""
    return [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
