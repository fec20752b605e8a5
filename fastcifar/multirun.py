"""Several runs in one process: N seeds (`--seeds N`) and LR sweeps (`--lr-max a,b,c`).

The model is compiled once; between runs it is re-seeded in place (`Experiment.reseed`), so
run k is exactly a fresh `--seed k` run given the same LR bounds (tested on CPU). The LR range
test runs once, before the first run; its bounds serve every seed and, in a sweep, mark the
plot. The parent folder holds one run folder per run (`seed-K`, or `lr-X/seed-K`), the range
test, an aggregate summary.json (mean ± std, min, max, 95% t-interval, per-seed rows; plain
and flip-TTA accuracy) and plots. A run that diverges (a sweep's highest LRMAX may) is recorded
as diverged and the others go on; the aggregate is over the runs that completed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastcifar import plots
from fastcifar.config import TrainConfig
from fastcifar.errors import Diverged, RunFolderError, RunStopped
from fastcifar.experiment import Experiment, warm_up
from fastcifar.lr_bounds import LrBounds, find_bounds, given_bounds, recorded_bounds
from fastcifar.progress import say, warn
from fastcifar.report import base_summary
from fastcifar.run_folder import RunFolder
from fastcifar.saved_run import load_checkpoint, read_summary
from fastcifar.session import (
    RunOptions,
    claim_folder,
    prepare,
    ranks,
    recorded_outcome,
    run_in_folder,
)
from fastcifar.signals import StopSignals
from fastcifar.statistics import aggregate
from fastcifar.trainer import Timings

Plan = list[tuple[float | None, int, str]]  # (LRMAX or None: found, seed, run folder name)


def make_plan(config: TrainConfig, seeds: int, lr_maxes: tuple[float, ...]) -> Plan:
    sweep = len(lr_maxes) > 1
    return [
        (lr_max, seed, f"lr-{lr_max:g}/seed-{seed}" if sweep else f"seed-{seed}")
        for lr_max in (lr_maxes or (config.lr_max,))
        for seed in range(config.seed, config.seed + seeds)
    ]


def train_many(config: TrainConfig, options: RunOptions) -> dict[str, Any]:
    with ranks(config) as (device, dist), claim_folder(options, dist) as parent:
        experiment = prepare(config, device, dist)
        parent.create()
        recorded = {
            "kind": "multi",
            "config": experiment.config.to_dict(),
            "seeds": options.seeds,
            "lr_maxes": list(options.lr_maxes),
        }
        parent.write_json("config.json", recorded)
        plan = make_plan(experiment.config, options.seeds, options.lr_maxes)
        return run_plan(experiment, parent, plan, sweep=len(options.lr_maxes) > 1)


def resume_many(path: Path) -> dict[str, Any]:
    try:
        recorded = json.loads((path / "config.json").read_text())
        config = TrainConfig.from_dict(recorded["config"])
        seeds, lr_maxes = int(recorded["seeds"]), tuple(recorded["lr_maxes"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"{path / 'config.json'} is not a multi-run config ({error})"
        ) from None
    with ranks(config) as (device, dist), RunFolder.reopen(path, writes=dist.is_main) as parent:
        experiment = prepare(config, device, dist)
        plan = make_plan(config, seeds, lr_maxes)
        return run_plan(experiment, parent, plan, sweep=len(lr_maxes) > 1)


def run_plan(experiment: Experiment, parent: RunFolder, plan: Plan, sweep: bool) -> dict:
    """Every run of `plan` (skipping the complete and diverged ones of a resumed multi-run),
    then the aggregate; the parent's status is recorded whatever happens."""
    base_config = experiment.config
    base = {**base_summary("running", base_config.to_dict()), "kind": "multi"}
    parent.write_json("summary.json", base)
    hint = f": resume all runs with python -m fastcifar.train --resume {parent.final}"
    with StopSignals() as stop, recorded_outcome(parent, base):
        try:
            compile_seconds = warm_up(experiment)
            found = _range_test(experiment, parent, stop, sweep or base_config.lr_max is None)
            results = []
            for run in plan:
                if experiment.dist.any(stop.requested):  # all ranks stop before the same run
                    raise stop.interrupted(f" before run {run[2]}")
                results.append(_one_run(experiment, parent, run, found, sweep, stop))
            if parent.replaces:  # --overwrite, and not one run reached a checkpoint
                raise Diverged("every run diverged")
        except RunStopped as stopped:
            raise stopped.with_hint(hint) from None
    summary = _aggregate(base, results, found, compile_seconds)
    parent.write_json("summary.json", summary)
    if parent.writes and base_config.plots:
        _plot(parent, summary, found)
    for group in summary["groups"]:
        lr = f"LRMAX {group['lr_max']:.4g}: " if group["lr_max"] else ""
        say(f"{lr}test accuracy {group['describe']}")
    return summary


def _range_test(experiment: Experiment, parent: RunFolder, stop, needed: bool) -> LrBounds | None:
    if not needed:
        return None
    # A resumed multi-run keeps the bounds its runs were trained with.
    return recorded_bounds(parent.path) or find_bounds(experiment, parent, stop)


def _one_run(
    experiment: Experiment, parent: RunFolder, run, found, sweep: bool, stop: StopSignals
) -> dict[str, Any]:
    lr_max, seed, name = run
    folder = parent.child(name)
    checkpoint = None
    if (folder / "summary.json").is_file():
        summary = read_summary(folder.path)
        if summary["status"] in ("complete", "diverged"):
            return summary
        if (folder / "checkpoint.pt").is_file():
            checkpoint = load_checkpoint(folder / "checkpoint.pt")
    experiment.reseed(seed, lr_max=lr_max)
    if checkpoint is None:
        folder.create()
        folder.write_json("config.json", experiment.config.to_dict())
    say(f"== run {name}")
    bounds = _bounds_for(experiment.config, found, sweep)
    try:
        return run_in_folder(
            experiment, folder, checkpoint=checkpoint, bounds=bounds, timings=Timings(), stop=stop
        )
    except Diverged as diverged:
        warn(f"{name}: {diverged}; the other runs go on")
        return read_summary(folder.path)


def _bounds_for(config: TrainConfig, found: LrBounds | None, sweep: bool) -> LrBounds:
    given = given_bounds(config, how_max="sweep" if sweep else "given")
    if given is not None:
        return given
    source = {
        **found.source,
        "found_by": "the range test before the first run (../lr_range_test.json)",
    }
    return LrBounds(found.lr_min, found.lr_max, source)


def _aggregate(
    base: dict, results: list[dict], found: LrBounds | None, compile_seconds: float
) -> dict:
    groups: dict[float | None, list[dict]] = {}
    for result in results:
        groups.setdefault(result["config"]["lr_max"], []).append(result)
    return {
        **base,
        "status": "complete",
        "range_test": None if found is None else {"lr_min": found.lr_min, "lr_max": found.lr_max},
        "compile_seconds": compile_seconds,
        "groups": [_group(lr_max, runs, found) for lr_max, runs in groups.items()],
    }


def _group(lr_max: float | None, runs: list[dict], found: LrBounds | None) -> dict[str, Any]:
    complete = [run for run in runs if run["status"] == "complete"]
    diverged = [run["config"]["seed"] for run in runs if run["status"] == "diverged"]
    plain = aggregate([run["final_test_accuracy"] for run in complete]) if complete else None
    tta_values = [run["final_test_accuracy_tta"] for run in complete]
    tta = aggregate(tta_values) if complete and None not in tta_values else None
    describe = plain.describe() if plain else "no run completed"
    return {
        "lr_max": lr_max if lr_max is not None else (found.lr_max if found else None),
        "lr_max_found": lr_max is None,
        "accuracy": plain.to_dict() if plain else None,
        "accuracy_tta": tta.to_dict() if tta else None,
        "train_seconds": aggregate([r["total_train_seconds"] for r in complete]).to_dict()
        if complete
        else None,
        "diverged_seeds": diverged,
        "describe": describe
        + (f"; flip TTA {tta.describe()}" if tta else "")
        + (f"; diverged: seeds {diverged}" if diverged else ""),
        "runs": [
            {
                "seed": run["config"]["seed"],
                "final_test_accuracy": run["final_test_accuracy"],
                "final_test_accuracy_tta": run["final_test_accuracy_tta"],
                "total_train_seconds": run["total_train_seconds"],
                "lr_min": run["lr_min"],
                "lr_max": run["lr_max"],
            }
            for run in complete
        ],
    }


def _plot(parent: RunFolder, summary: dict, found: LrBounds | None) -> None:
    groups = [group for group in summary["groups"] if group["runs"]]
    for group in groups:
        names = [f"seed {run['seed']}" for run in group["runs"]]
        accuracies = [run["final_test_accuracy"] for run in group["runs"]]
        suffix = f"_lr-{group['lr_max']:g}" if len(summary["groups"]) > 1 else ""
        plots.plot_seed_accuracies(names, accuracies, parent / f"seed_accuracies{suffix}.png")
    if len(summary["groups"]) > 1 and groups:
        plots.plot_lr_sweep(
            [group["lr_max"] for group in groups],
            [[run["final_test_accuracy"] for run in group["runs"]] for group in groups],
            found.lr_max if found else None,
            parent / "lr_sweep.png",
        )
