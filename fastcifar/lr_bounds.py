"""Where a run's LRMIN and LRMAX come from: given on the command line, derived from a given
LRMAX, found by the LR range test, or read back from a range test already on disk."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastcifar import plots
from fastcifar.config import TrainConfig
from fastcifar.experiment import Experiment
from fastcifar.lr_range_test import RangeTestResult, lr_range_test
from fastcifar.progress import say
from fastcifar.run_folder import RunFolder
from fastcifar.signals import StopSignals

RANGE_TEST_FILE = "lr_range_test.json"


@dataclass
class LrBounds:
    lr_min: float
    lr_max: float
    source: dict[str, Any]  # how each bound was obtained, recorded in summary.json


def given_bounds(config: TrainConfig, how_max: str = "given") -> LrBounds | None:
    """The bounds the config fixes: LRMIN given, or LRMAX / lr_min_divisor; None: find them."""
    if config.lr_max is None:
        return None
    if config.lr_min is not None:
        return LrBounds(config.lr_min, config.lr_max, {"lr_max": how_max, "lr_min": "given"})
    how_min = f"LRMAX / {config.lr_min_divisor:g}"
    lr_min = config.lr_max / config.lr_min_divisor
    return LrBounds(lr_min, config.lr_max, {"lr_max": how_max, "lr_min": how_min})


def find_bounds(
    experiment: Experiment, folder: RunFolder, stop: StopSignals, resume_hint: str = ""
) -> LrBounds:
    """The LR range test, on the loader's epoch 0 (whether or not a warm-up ran before it, so
    that the bounds never depend on compilation); writes lr_range_test.{json,png}."""
    config, dist = experiment.config, experiment.dist
    steps = config.resolved_range_test_steps(config.epochs * len(experiment.train_loader))
    experiment.train_loader.set_epoch(0)
    start = time.perf_counter()
    result = lr_range_test(
        experiment.step_context(),
        experiment.train_loader,
        restore=experiment.model,
        start_lr=config.range_test_start_lr,
        end_lr=config.range_test_end_lr,
        steps=steps,
        lr_min_divisor=config.lr_min_divisor,
        sum_over_ranks=dist.all_reduce_sum,
        ranks=dist.world_size,
        stop_requested=lambda: stop.requested,
        interrupted=lambda: stop.interrupted(" during the LR range test", resume_hint),
    )
    seconds = time.perf_counter() - start
    save_range_test(result, folder, config.plots)
    say(
        f"LR range test ({len(result.lrs)} steps, {seconds:.1f} s): LRMIN {result.lr_min:.4g} "
        f"({result.lr_min_method}), LRMAX {result.lr_max:.4g} ({result.lr_max_method})"
    )
    return LrBounds(result.lr_min, result.lr_max, _source(result, seconds))


def _source(result: RangeTestResult, seconds: float) -> dict[str, Any]:
    return {
        "lr_max": result.lr_max_method,
        "lr_min": result.lr_min_method,
        "range_test_seconds": seconds,
        "range_test_steps": len(result.lrs),
        "range_test_stop": result.stop_reason,
        "seconds_per_step": seconds / len(result.lrs),
    }


def save_range_test(result: RangeTestResult, folder: RunFolder, plot: bool = True) -> None:
    folder.write_json(RANGE_TEST_FILE, result.to_dict())
    if plot and folder.writes:
        plots.plot_range_test(result, folder / "lr_range_test.png")


def read_range_test(folder: Path) -> RangeTestResult | None:
    """A range test already written to `folder` (strict JSON may add keys: they are ignored)."""
    path = folder / RANGE_TEST_FILE
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    names = {field.name for field in dataclasses.fields(RangeTestResult)}
    return RangeTestResult(**{key: value for key, value in values.items() if key in names})


def recorded_bounds(folder: Path) -> LrBounds | None:
    """The bounds of the range test in `folder`, to reuse them (a resumed multi-run)."""
    result = read_range_test(folder)
    if result is None:
        return None
    return LrBounds(
        result.lr_min,
        result.lr_max,
        {"lr_max": result.lr_max_method, "lr_min": result.lr_min_method},
    )
