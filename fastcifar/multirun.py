"""Several runs in one process: N seeds (`--seeds N`) and LR sweeps (`--lr-max a,b,c`).

The model is compiled once; between runs it is re-seeded in place (`Experiment.reseed`), so
run k is exactly a fresh `--seed k` run (tested on CPU). The LR range test runs once, before the
first run; its bounds serve every seed and, in a sweep, mark the plot. The parent folder holds
one run folder per run (`seed-K`, or `lr-X/seed-K`), the range test, an aggregate summary.json
(mean ± std, min, max, 95% t-interval, per-seed rows; plain and flip-TTA accuracy) and plots.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastcifar import plots
from fastcifar.config import TrainConfig
from fastcifar.distributed import teardown
from fastcifar.errors import RunFolderError, RunStopped
from fastcifar.experiment import Experiment, start_ranks, warm_up
from fastcifar.lr_range_test import RangeTestResult
from fastcifar.progress import say
from fastcifar.report import base_summary
from fastcifar.run_folder import RunFolder
from fastcifar.saved_run import load_checkpoint, read_summary
from fastcifar.session import RunOptions, claim_folder, prepare, run_in_folder
from fastcifar.signals import StopSignals
from fastcifar.statistics import aggregate
from fastcifar.trainer import LrBounds, Timings, find_bounds

Plan = list[tuple[float | None, int, str]]  # (LRMAX or None: found, seed, run folder name)


def make_plan(config: TrainConfig, seeds: int, lr_maxes: tuple[float, ...]) -> Plan:
    sweep = len(lr_maxes) > 1
    return [
        (lr_max, seed, f"lr-{lr_max:g}/seed-{seed}" if sweep else f"seed-{seed}")
        for lr_max in (lr_maxes or (config.lr_max,))
        for seed in range(config.seed, config.seed + seeds)
    ]


def train_many(config: TrainConfig, options: RunOptions) -> dict[str, Any]:
    device, dist = start_ranks(config)
    try:
        parent = claim_folder(options, dist)
        experiment = prepare(config, device, dist)
        parent.create()
        plan = make_plan(experiment.config, options.seeds, options.lr_maxes)
        parent.write_json(
            "config.json",
            {
                "kind": "multi",
                "config": experiment.config.to_dict(),
                "seeds": options.seeds,
                "lr_maxes": list(options.lr_maxes),
            },
        )
        return _run_plan(experiment, parent, plan, sweep=len(options.lr_maxes) > 1)
    finally:
        teardown()


def resume_many(path: Path) -> dict[str, Any]:
    try:
        recorded = json.loads((path / "config.json").read_text())
        config = TrainConfig.from_dict(recorded["config"])
        seeds, lr_maxes = int(recorded["seeds"]), tuple(recorded["lr_maxes"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"{path / 'config.json'} is not a multi-run config ({error})"
        ) from None
    device, dist = start_ranks(config)
    try:
        parent = RunFolder.reopen(path, writes=dist.is_main)
        experiment = prepare(config, device, dist)
        plan = make_plan(config, seeds, lr_maxes)
        return _run_plan(experiment, parent, plan, sweep=len(lr_maxes) > 1)
    finally:
        teardown()


def _run_plan(experiment: Experiment, parent: RunFolder, plan: Plan, sweep: bool) -> dict:
    base_config = experiment.config
    summary = {**base_summary("running", base_config.to_dict()), "kind": "multi"}
    parent.write_json("summary.json", summary)
    compile_seconds = warm_up(experiment) if experiment.compiled else 0.0
    try:
        found = _range_test(experiment, parent, needed=sweep or base_config.lr_max is None)
        results = [_one_run(experiment, parent, base_config, run, found, sweep) for run in plan]
    except RunStopped as stopped:
        parent.write_json(
            "summary.json", {**summary, "status": "interrupted", "reason": str(stopped)}
        )
        raise type(stopped)(
            f"{str(stopped).split(': resume with')[0]}: resume all runs with "
            f"python -m fastcifar.train --resume {parent.final}",
            stopped.exit_code,
        ) from None
    aggregate_summary = _aggregate(summary, results, found, compile_seconds)
    parent.write_json("summary.json", aggregate_summary)
    if parent.writes and base_config.plots:
        _plot(parent, aggregate_summary, found)
    for group in aggregate_summary["groups"]:
        lr = f"LRMAX {group['lr_max']:.4g}: " if group["lr_max"] else ""
        say(f"{lr}test accuracy {group['describe']}")
    return aggregate_summary


def _range_test(experiment: Experiment, parent: RunFolder, needed: bool) -> LrBounds | None:
    if not needed:
        return None
    recorded = parent / "lr_range_test.json"
    if recorded.is_file():  # a resumed multi-run keeps the bounds its runs were trained with
        result = RangeTestResult(**json.loads(recorded.read_text()))
        source = {"lr_max": result.lr_max_method, "lr_min": result.lr_min_method}
        return LrBounds(result.lr_min, result.lr_max, source)
    with StopSignals() as stop:
        return find_bounds(experiment, parent, stop)


def _one_run(experiment, parent, base_config, run, found, sweep) -> dict[str, Any]:
    lr_max, seed, name = run
    folder = RunFolder(parent.path / name, writes=parent.writes)
    checkpoint = None
    if (folder / "summary.json").is_file():
        summary = read_summary(folder.path)
        if summary["status"] == "complete":
            return summary
        if (folder / "checkpoint.pt").is_file():
            checkpoint = load_checkpoint(folder / "checkpoint.pt")
    experiment.config = replace(base_config, lr_max=lr_max, lr_min=base_config.lr_min)
    experiment.reseed(seed)
    bounds = _bounds_for(experiment.config, found, sweep)
    if checkpoint is None:
        folder.create()
        folder.write_json("config.json", experiment.config.to_dict())
    say(f"== run {name}")
    return run_in_folder(
        experiment, folder, checkpoint=checkpoint, bounds=bounds, timings=Timings()
    )


def _bounds_for(config: TrainConfig, found: LrBounds | None, sweep: bool) -> LrBounds:
    if config.lr_max is None:
        source = {
            **found.source,
            "found_by": "the LR range test before the first run (../lr_range_test.json)",
        }
        return LrBounds(found.lr_min, found.lr_max, source)
    lr_min = config.lr_min if config.lr_min is not None else config.lr_max / config.lr_min_divisor
    how = "given" if config.lr_min is not None else f"LRMAX / {config.lr_min_divisor:g}"
    return LrBounds(lr_min, config.lr_max, {"lr_max": "sweep" if sweep else "given", "lr_min": how})


def _aggregate(
    summary: dict, results: list[dict], found: LrBounds | None, compile_seconds: float
) -> dict:
    groups: dict[float | None, list[dict]] = {}
    for result in results:
        groups.setdefault(result["config"]["lr_max"], []).append(result)
    return {
        **summary,
        "status": "complete",
        "range_test": None if found is None else {"lr_min": found.lr_min, "lr_max": found.lr_max},
        "compile_seconds": compile_seconds,
        "groups": [_group(lr_max, runs, found) for lr_max, runs in groups.items()],
    }


def _group(lr_max: float | None, runs: list[dict], found: LrBounds | None) -> dict[str, Any]:
    plain = aggregate([run["final_test_accuracy"] for run in runs])
    tta_values = [run["final_test_accuracy_tta"] for run in runs]
    tta = aggregate(tta_values) if None not in tta_values else None
    return {
        "lr_max": lr_max if lr_max is not None else (found.lr_max if found else None),
        "lr_max_found": lr_max is None,
        "accuracy": plain.to_dict(),
        "accuracy_tta": tta.to_dict() if tta else None,
        "train_seconds": aggregate([run["total_train_seconds"] for run in runs]).to_dict(),
        "describe": plain.describe() + (f"; flip TTA {tta.describe()}" if tta else ""),
        "runs": [
            {
                "seed": run["config"]["seed"],
                "final_test_accuracy": run["final_test_accuracy"],
                "final_test_accuracy_tta": run["final_test_accuracy_tta"],
                "total_train_seconds": run["total_train_seconds"],
                "lr_min": run["lr_min"],
                "lr_max": run["lr_max"],
            }
            for run in runs
        ],
    }


def _plot(parent: RunFolder, summary: dict, found: LrBounds | None) -> None:
    groups = summary["groups"]
    for group in groups:
        names = [f"seed {run['seed']}" for run in group["runs"]]
        accuracies = [run["final_test_accuracy"] for run in group["runs"]]
        suffix = f"_lr-{group['lr_max']:g}" if len(groups) > 1 else ""
        plots.plot_seed_accuracies(names, accuracies, parent / f"seed_accuracies{suffix}.png")
    if len(groups) > 1:
        plots.plot_lr_sweep(
            [group["lr_max"] for group in groups],
            [[run["final_test_accuracy"] for run in group["runs"]] for group in groups],
            found.lr_max if found else None,
            parent / "lr_sweep.png",
        )
