"""Named presets of the training settings (`--recipe NAME`, `fit(recipe=...)`): each is a set of
TrainConfig values that a config starts from; flags, keywords and TOML keys given beside it
override them, and the run records every resolved value (config.json, `--print-config`).

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastcifar.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    summary: str  # one line for --help
    settings: Mapping[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    # The defaults of TrainConfig are this recipe: it changes nothing.
    "assignment": Recipe(
        "the DAWNBench ResNet-9 recipe (24 epochs, One Cycle between bounds the LR range test "
        "finds, peak at epoch 5)"
    ),
    # Page's steps that leave the network as it is (label smoothing 0.2, frozen BatchNorm scales
    # with 64x the LR on their biases, flip + translate TTA), the record scripts' lookahead,
    # alternating flips and their whitening and identity starts of the convolutions (here as
    # initialisations of trained layers), on half the epochs; LRMAX 0.4 is the assignment
    # recipe's recorded given peak (benchmarks/results/cpu-recipe-*), the cycle ending near zero
    # as Page's does. What each bought: benchmarks/results/cpu-time-to-94-*.
    "fast": Recipe(
        "the same network in 12 epochs: label smoothing 0.2, frozen BatchNorm scales, 64x LR on "
        "BatchNorm biases, lookahead, alternating flips, whitening and identity initialisation, "
        "flip + translate TTA, LRMAX 0.4",
        {
            "epochs": 12,
            "lr_max": 0.4,
            "lr_min_divisor": 100.0,
            "label_smoothing": 0.2,
            "freeze_bn_scale": True,
            "bn_bias_lr_scale": 64.0,
            "lookahead": 5,
            "flip": "alternating",
            "whitening_init": True,
            "dirac_init": True,
            "tta": True,
            "tta_translate": True,
            "eval_every": 4,
        },
    ),
    # airbench94's network and hyper-parameters (Jordan, arXiv 2404.00498), on this engine. Its
    # SGD sums the loss over the batch with LR 11.5 and weight decay 0.0153 "per 1024 images":
    # the same steps with the loss averaged are LR 11.5 / (1 + 1 / (1 - 0.85)) = 1.5 and a decay
    # per step of 0.0153 / 7.667 = 0.0020, i.e. weight decay 0.0020 / 1.5. Its schedule runs
    # 0.2 -> 1 (at 23% of the steps) -> 0.07 of the peak. Batch 1024 for 10 epochs of whole
    # batches (480 steps, 491,520 images) stands for its 9.9 epochs (476 steps, 487,424
    # images). LR and decay are its at batch 1024: another batch size changes both. Where this
    # differs from the paper's script: the whitening is of the centred patch covariance (its:
    # of the uncentred second moments; normalised patches have a mean near 0).
    "airbench": Recipe(
        "airbench94's network (1.97M parameters) and training in 10 epochs of batch 1024 "
        "(0.35 PFLOP): whitening, identity initialisation, label smoothing 0.2, lookahead, "
        "alternating flips, translations by 2 (reflected), flip + translate TTA",
        {
            "model": "airbench",
            "epochs": 10,
            "batch_size": 1024,
            "lr_max": 1.5,
            "lr_min_divisor": 5.0,
            "lr_final_divisor": 0.2 / 0.07,
            "peak_fraction": 0.23,
            "momentum": 0.85,
            "weight_decay": 0.0153 / (1 + 1 / (1 - 0.85)) / 1.5,
            "logit_scale": 1 / 9,
            "label_smoothing": 0.2,
            "freeze_bn_scale": True,
            "bn_bias_lr_scale": 64.0,
            "lookahead": 5,
            "flip": "alternating",
            "crop_padding": 2,
            "pad_mode": "reflect",
            "cutout": 0,
            "whitening_init": True,
            "whitening_bias_epochs": 3,
            "dirac_init": True,
            "tta": True,
            "tta_translate": True,
            "eval_every": 5,
        },
    ),
    # airbench94_muon's training (Jordan's Muon write-up and script; 94.01% mean over 200 runs,
    # 0.28 PFLOP) on the same network: the convolution filters step by Muon (LR 0.24, momentum
    # 0.6, Nesterov, each filter bank rescaled to norm sqrt(out) before its step, no decay), the
    # rest by SGD (momentum 0.85, Nesterov), batch 2000 for 8 epochs (200 steps), the LR falling
    # linearly from the start to ~0 (no warm-up), no lookahead. Its SGD sums the loss and its
    # head is the plain linear layer rescaled to unit std with the logits divided by 256: here
    # the loss is averaged and the head starts as torch's (std 1/sqrt(768)), so the same steps
    # are: logit scale sqrt(768)/256, head LR 0.67 x 2000 / 768 = 1.745 with weight decay
    # 0.004 / 1.745 (its decay per step, 2e-6 x 2000), BatchNorm biases at 0.053 x 2000 / 1.745
    # = 60.7x that LR with the same decay per step, the whitening bias too. Muon's LR is 0.24 /
    # 1.745 of the schedule's. Where this differs from the script: the whitening bias stops
    # after 3 epochs (its: its LR falls to 0 over them).
    "airbench-muon": Recipe(
        "airbench94_muon's training of airbench94's network in 8 epochs of batch 2000 (0.28 "
        "PFLOP): Muon for the convolution filters, SGD for the rest, the LR falling linearly; "
        "whitening, identity initialisation, label smoothing 0.2, alternating flips, "
        "translations by 2 (reflected), flip + translate TTA",
        {
            "model": "airbench",
            "epochs": 8,
            "batch_size": 2000,
            "optimizer": "muon",
            "lr_max": 0.67 * 2000 / 768,
            "muon_lr_scale": 0.24 / (0.67 * 2000 / 768),
            "muon_momentum": 0.6,
            "lr_min_divisor": 1.0,
            "peak_fraction": 0.001,  # the peak at step 1: no warm-up
            "lr_final_divisor": 200.0,  # the last of 200 steps at 1/200 of the peak, as its
            "momentum": 0.85,
            "weight_decay": 2e-6 * 2000 / (0.67 * 2000 / 768),
            "logit_scale": 768**0.5 / 256,
            "label_smoothing": 0.2,
            "freeze_bn_scale": True,
            "bn_bias_lr_scale": 0.053 * 768 / 0.67,
            "whitening_bias_lr_scale": 0.053 * 768 / 0.67,
            "flip": "alternating",
            "crop_padding": 2,
            "pad_mode": "reflect",
            "cutout": 0,
            "whitening_init": True,
            "whitening_bias_epochs": 3,
            "dirac_init": True,
            "tta": True,
            "tta_translate": True,
            "eval_every": 4,
        },
    ),
}
RECIPE_NAMES = tuple(RECIPES)


def with_recipe(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (TrainConfig keys) on top of the settings of the recipe they name (default:
    assignment)."""
    name = values.get("recipe", "assignment")
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPE_NAMES)}")
    return {**RECIPES[name].settings, **values}


# What runs recorded in benchmarks/results/ reached, by recipe and length: the line before a
# --time-budget run quotes it. Test accuracy (TTA as the recipe evaluates it); CPU runs.
RECORDED: dict[tuple[str, int], str] = {
    ("assignment", 24): "93.84% (flip TTA 94.50%), 1 seed, found bounds "
    "(benchmarks/results/cpu-recipe-intel-xeon-amx-2-cores-2026-12-06)",
    ("assignment", 12): "92.45% (flip TTA 93.21%, flip + translate 93.50%), 1 seed, found "
    "bounds (benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07)",
    ("fast", 10): "92.84% (flip + translate TTA 93.67%), 1 seed "
    "(benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07)",
    ("fast", 12): "93.41% ± 0.02% (flip + translate TTA 94.07% ± 0.11%), 2 seeds "
    "(benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07)",
    ("airbench", 10): "93.39% ± 0.14% (flip + translate TTA 94.03% ± 0.14%), 5 seeds "
    "(benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07)",
    ("airbench-muon", 8): "93.25% ± 0.17% (flip + translate TTA 94.01% ± 0.11%), 5 seeds "
    "(benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07)",
}


def recorded_accuracy(recipe: str, epochs: int) -> str:
    """What recorded runs of `recipe` reached at `epochs`, or at the recorded lengths nearest
    it; '' when none is recorded."""
    lengths = sorted(length for name, length in RECORDED if name == recipe)
    if not lengths:
        return ""
    if epochs in lengths:
        return f"recorded at {epochs} epochs: {RECORDED[recipe, epochs]}"
    near = [length for length in lengths if length < epochs][-1:] + [
        length for length in lengths if length > epochs
    ][:1]
    said = "; ".join(f"at {length} epochs {RECORDED[recipe, length]}" for length in near)
    return f"no run of {recipe} at {epochs} epochs is recorded; recorded {said}"
