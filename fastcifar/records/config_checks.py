"""The checks a TrainConfig passes when it is made: every value that cannot work is one
ConfigError that names the setting, before any data is loaded or any folder is created.

`config` below is a fastcifar.records.config.TrainConfig; that module imports this one, never
back."""

from __future__ import annotations

import math
import os
import re
from typing import Any

from fastcifar.data import LOADER_NAMES
from fastcifar.data.spec import DATASET_NAMES, SPECS
from fastcifar.engine import NETWORK_NAMES
from fastcifar.errors import ConfigError
from fastcifar.records.recipes import RECIPE_NAMES
from fastcifar.records.values import is_integer
from fastcifar.system.caller import named, setting, switch, switch_off

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PARALLEL_MODES = ("auto", "runs", "data")
FLIP_MODES = ("random", "alternating", "none")
PAD_MODES = ("mean", "reflect")  # AugmentationSpec.pad_mode
OPTIMIZER_NAMES = ("sgd", "muon")  # engine/schedule.make_optimizer
# Sane upper bounds: beyond them a value is a typo, and the run would only exhaust memory or time.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = max(spec.train_images for spec in SPECS.values())  # a whole training split
MAX_RANGE_TEST_STEPS = 10_000
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take it
MAX_SEEDS = 1_000
MAX_WIDTH = 512  # 8x the recipe's: the ResNet-9 then has 420M parameters
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
INTEGER_BOUNDS = {  # None: no upper bound
    "epochs": MAX_EPOCHS,
    "width": MAX_WIDTH,
    "batch_size": MAX_BATCH_SIZE,
    "eval_batch_size": MAX_BATCH_SIZE,
    "range_test_steps": MAX_RANGE_TEST_STEPS,
    "checkpoint_every": MAX_EPOCHS,
    "eval_every": MAX_EPOCHS,
    "seeds": MAX_SEEDS,
    "lookahead": MAX_EPOCHS,
    "bn_reestimate": None,
    "whitening_bias_epochs": MAX_EPOCHS,
    "ghost_bn": MAX_BATCH_SIZE,
    "train_subset": None,
    "test_subset": None,
}
OPTIONAL = (
    "range_test_steps",
    "train_subset",
    "test_subset",
    "checkpoint_every",
    "lookahead",
    "ghost_bn",
    "bn_reestimate",
    "whitening_bias_epochs",
)


def check_config(config: Any) -> None:
    for name in ("data_dir", "beton_dir"):
        value = getattr(config, name)
        _require(
            value is None or isinstance(value, str | os.PathLike),
            f"{named(name)} must be a folder's path, got {value!r}",
        )
    _require(
        config.dataset in DATASET_NAMES,
        f"unknown dataset {config.dataset!r}: choose one of {', '.join(DATASET_NAMES)}",
    )
    _require(
        config.recipe in RECIPE_NAMES,
        f"unknown recipe {config.recipe!r}: choose one of {', '.join(RECIPE_NAMES)}",
    )
    _require(
        config.flip in FLIP_MODES,
        f"unknown flip mode {config.flip!r}: choose one of {', '.join(FLIP_MODES)}",
    )
    _require(
        config.optimizer in OPTIMIZER_NAMES,
        f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZER_NAMES)}",
    )
    _require(
        config.optimizer != "muon" or not config.cycle_momentum,
        f"{named('cycle_momentum')} cannot be combined with "
        f"{setting('optimizer', 'muon', repr('muon'))}: Muon keeps its own momentum "
        f"({named('muon_momentum')})",
    )
    _require(
        config.pad_mode in PAD_MODES,
        f"unknown padding mode {config.pad_mode!r}: choose one of {', '.join(PAD_MODES)}",
    )
    _require(
        config.loader in LOADER_NAMES,
        f"unknown loader {config.loader!r}: choose one of {', '.join(LOADER_NAMES)}",
    )
    _require(
        config.model in NETWORK_NAMES,
        f"unknown model {config.model!r}: choose one of {', '.join(NETWORK_NAMES)}",
    )
    _require(  # else its fixed first layer would stay a random draw
        config.model != "airbench" or config.whitening_init,
        f"{setting('model', 'airbench', repr('airbench'))} starts from a fixed whitening layer "
        f"computed from the training images: it needs {switch('whitening_init')} (its recipe "
        "has it)",
    )
    _check_integers(config)
    _check_learning_rates(config)
    _check_fractions(config)
    _require(
        config.compile_mode is None or config.compile_mode in COMPILE_MODES,
        f"unknown compile mode {config.compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}",
    )
    _require(
        config.device is None
        or (isinstance(config.device, str) and DEVICE_PATTERN.fullmatch(config.device)),
        f"unknown device {config.device!r}: fastcifar runs on cpu, cuda or cuda:N",
    )
    for name in (
        "nesterov",
        "cycle_momentum",
        "tta",
        "tta_translate",
        "freeze_bn_scale",
        "bias_decay",
        "whitening_init",
        "dirac_init",
        "plots",
        "gradcam",
        "tensorboard",
        "channels_last",
        "sync_bn",
        "amp",
        "compile",
        "range_test",
    ):
        value = getattr(config, name)
        _require(
            (value is None and name in ("amp", "compile", "range_test")) or isinstance(value, bool),
            f"{named(name)} must be true or false, got {value!r}",
        )
    for name, high in (("crop_padding", 16), ("cutout", 32)):
        value = getattr(config, name)
        _require(
            is_integer(value) and 0 <= value <= high,
            f"{named(name)} must be an integer from 0 to {high} (pixels), got {value!r}",
        )
    _require(
        config.bn_reestimate is None or config.ema is None,
        f"{named('bn_reestimate')} re-estimates the live weights' statistics, and "
        f"{named('ema')} evaluates the average's: use one of them",
    )
    tta_off = switch_off("tta")
    _require(
        not (config.tta and config.flip == "none"),
        "flip TTA averages each test image with its mirror image, which a run trained without "
        f"flips ({setting('flip', 'none', repr('none'))}) never saw: add {tta_off}",
    )
    _require(
        config.tta or not config.tta_translate,
        f"{named('tta_translate')} adds shifted copies to the flip TTA: it needs "
        f"{named('tta')} too",
    )


def _check_integers(config: Any) -> None:
    _check_seeds_is_a_count(config.seeds)
    for name, high in INTEGER_BOUNDS.items():
        value = getattr(config, name)
        if value is None and name in OPTIONAL:
            continue
        if name == "range_test_steps":  # a curve needs two points
            _require(
                is_integer(value) and value >= 2,
                f"{named('range_test_steps')} must be at least 2, got {value!r}",
            )
        _require(
            is_integer(value) and value >= 1,
            f"{named(name)} must be a positive integer, got {value!r}",
        )
        if high is not None:
            _require(value <= high, f"{named(name)} must be at most {high:,}, got {value:,}")
    last_seed = config.seed + config.seeds - 1 if is_integer(config.seed) else config.seed
    _require(
        is_integer(config.seed) and config.seed >= 0 and last_seed <= MAX_SEED,
        f"{named('seed')} must be an integer from 0 to {MAX_SEED}, got {last_seed!r}",
    )
    if config.ghost_bn is not None:
        _require(
            config.batch_size % config.ghost_bn == 0,
            f"{named('ghost_bn')} ({config.ghost_bn}) must divide {named('batch_size')} "
            f"({config.batch_size}): each "
            "batch splits into sub-batches of that many images",
        )
    if config.train_subset is not None:
        _require(
            config.train_subset >= config.batch_size,
            f"{named('train_subset')} ({config.train_subset}) must be at least "
            f"{named('batch_size')} "
            f"({config.batch_size}): training drops the last partial batch",
        )


def _check_seeds_is_a_count(seeds: object) -> None:
    """A list of seeds (`seeds=[0, 1, 2]`, a range) is the natural guess: say what stands for it."""
    if not isinstance(seeds, list | tuple | range) or not all(map(is_integer, seeds)) or not seeds:
        return
    ordered = sorted(set(seeds))
    first, count = ordered[0], len(ordered)
    if ordered == list(range(first, first + count)):
        instead = (
            f"for {list(seeds)} give {setting('seed', str(first), str(first))} and "
            f"{setting('seeds', str(count), str(count))}"
        )
    else:
        instead = (
            f"for seeds apart, train each with its own {named('seed')} and combine the runs "
            "with python -m fastcifar.aggregate"
        )
    raise ConfigError(
        f"{named('seeds')} is how many seeds to train, from {named('seed')} on: {instead}"
    )


def _finite_positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _check_learning_rates(config: Any) -> None:
    for value in config.lr_maxes:
        _require(
            value is None or _finite_positive(value),
            f"{named('lr_max')} must be a finite positive number, got {value!r}",
        )
    _require(
        not isinstance(config.lr_max, tuple) or len(config.lr_max) >= 1,
        f"{named('lr_max')} must name at least one LR",
    )
    _require(
        config.lr_min is None or _finite_positive(config.lr_min),
        f"{named('lr_min')} must be a finite positive number, got {config.lr_min!r}",
    )
    _require(
        not (config.lr_min is not None and config.lr_max is None),
        f"{named('lr_min')} needs {named('lr_max')} too (or neither, to find both by the LR "
        "range test)",
    )
    _require(
        not (config.range_test is False and config.lr_max is None),
        f"{switch_off('range_test')} needs {named('lr_max')}: the range test is what finds LRMAX",
    )
    names = [f"{lr:g}" for lr in config.lr_maxes if lr is not None]
    _require(
        len(names) == len(set(names)),
        f"{named('lr_max')} names one LR twice ({', '.join(names)}): each run of a sweep "
        "needs its own",
    )
    if config.lr_min is not None and config.lr_max is not None:
        for lr_max in config.lr_maxes:
            _require(
                config.lr_min <= lr_max,
                f"{named('lr_min')} ({config.lr_min}) must not exceed {named('lr_max')} ({lr_max})",
            )
    _require(
        _finite_positive(config.range_test_start_lr)
        and _finite_positive(config.range_test_end_lr)
        and config.range_test_start_lr < config.range_test_end_lr,
        f"the range test needs 0 < {named('range_test_start_lr')} < "
        f"{named('range_test_end_lr')}, both finite",
    )
    _require(
        isinstance(config.lr_min_divisor, int | float)
        and math.isfinite(config.lr_min_divisor)
        and config.lr_min_divisor >= 1,
        f"{named('lr_min_divisor')} must be a finite number >= 1, got {config.lr_min_divisor!r}",
    )
    _require(
        _finite_positive(config.lr_final_divisor) and config.lr_final_divisor >= 1,
        f"{named('lr_final_divisor')} must be a finite number >= 1 (the cycle ends at or below "
        f"LRMIN), got {config.lr_final_divisor!r}",
    )
    _require(
        _finite_positive(config.checkpoint_seconds),
        f"{named('checkpoint_seconds')} must be a finite positive number, got "
        f"{config.checkpoint_seconds!r}",
    )


def _in_unit_interval(value: object, closed_low: bool = True) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (value >= 0 if closed_low else value > 0) and value < 1


def _check_fractions(config: Any) -> None:
    _require(
        _in_unit_interval(config.peak_fraction, closed_low=False),
        f"{named('peak_fraction')} must lie in (0, 1), got {config.peak_fraction!r}",
    )
    _require(
        isinstance(config.weight_decay, int | float)
        and math.isfinite(config.weight_decay)
        and config.weight_decay >= 0,
        f"{named('weight_decay')} must be a finite number >= 0, got {config.weight_decay!r}",
    )
    for name in ("momentum", "base_momentum", "max_momentum", "muon_momentum", "label_smoothing"):
        value = getattr(config, name)
        _require(_in_unit_interval(value), f"{named(name)} must lie in [0, 1), got {value!r}")
    _require(
        config.ema is None or _in_unit_interval(config.ema, closed_low=False),
        f"{named('ema')} must lie in (0, 1) (a decay per step, 0.99 say), got {config.ema!r}",
    )
    for name in ("bn_bias_lr_scale", "muon_lr_scale"):
        _require(
            _finite_positive(getattr(config, name)),
            f"{named(name)} must be a finite positive number, got {getattr(config, name)!r}",
        )
    _require(
        _finite_positive(config.logit_scale),
        f"{named('logit_scale')} must be a finite positive number, got {config.logit_scale!r}",
    )


def _require(condition: object, message: str) -> None:
    if not condition:
        raise ConfigError(message)
