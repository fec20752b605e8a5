"""The flows of one training run: new, resumed, or continued after a torchrun restart; the LR
range test alone (find_lr). Their set-up: setup.py; resume rules: resume.py; several runs:
multi.py; the public functions: api.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from fastcifar.engine.lr_range_test import RangeTestResult
from fastcifar.engine.schedule import LrBounds, given_bounds
from fastcifar.outputs.report import read_range_test, save_range_test
from fastcifar.records.checkpoint import Checkpoint
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.records.config_record import RunKind, Status, read_config
from fastcifar.records.run_folder import RunFolder, resume_hint
from fastcifar.records.summary import Summary, range_test_complete, read_summary
from fastcifar.runs.budget import KeptPlan, TimeBudget
from fastcifar.runs.lifecycle import Lifecycle
from fastcifar.runs.request import Request
from fastcifar.runs.resume import (
    check_checkpoint_file,
    check_continuable,
    check_none_lost,
    elastic_out,
    state_from,
)
from fastcifar.runs.setup import Setup, estimate_of, open_run
from fastcifar.system.caller import named
from fastcifar.system.device import device_name
from fastcifar.system.distributed import Distributed
from fastcifar.system.progress import say
from fastcifar.system.signals import StopSignals
from fastcifar.training.limits import Limits
from fastcifar.training.loop import Timings, TrainingRun, new_state
from fastcifar.training.state import TrainingState
from fastcifar.training.trainer import Trainer, find_bounds


def bounds_for(
    trainer: Trainer, folder: RunFolder, stop: StopSignals, hint: str, limits: Limits
) -> LrBounds:
    """The run's bounds: as given, found by a range test the folder holds already (a run
    stopped after it, before its first checkpoint), or found by the range test now (written
    into the folder)."""
    given = given_bounds(trainer.config)
    if given is not None:
        return given
    recorded = trainer.dist.from_rank_0(lambda: recorded_bounds(folder.path))
    if recorded is not None:
        found_by = "the range test of an earlier process of this run (lr_range_test.json)"
        say(f"LRMIN {recorded.lr_min:.4g}, LRMAX {recorded.lr_max:.4g}: found by {found_by}")
        return LrBounds(recorded.lr_min, recorded.lr_max, {**recorded.source, "found_by": found_by})
    return range_test(trainer, folder, stop, hint, limits)[0]


def recorded_bounds(folder: Path) -> LrBounds | None:
    """The bounds of the range test written to `folder` (lr_range_test.json), if it holds one:
    a resumed run keeps the bounds it was started with."""
    result = read_range_test(folder)
    if result is None:
        return None
    source = {
        "lr_max": result.lr_max_method,
        "lr_min": result.lr_min_method,
        "range_test_steps": len(result.lrs),
        "range_test_stop": result.stop_reason,
    }
    return LrBounds(result.lr_min, result.lr_max, source)


def range_test(
    trainer: Trainer,
    folder: RunFolder,
    stop: StopSignals,
    hint: str = "",
    limits: Limits | None = None,
) -> tuple[LrBounds, RangeTestResult]:
    """The LR range test, written into `folder` (curve and plot) and said in one line; its
    bounds and its whole curve. A signal, or --max-time in `limits`, stops it."""
    bounds, result = find_bounds(trainer, stop, hint, limits)
    save_range_test(result, folder, trainer.config.plots)
    say(
        f"LR range test ({len(result.lrs)} steps, {bounds.source['range_test_seconds']:.1f} s): "
        f"LRMIN {bounds.lr_min:.4g} ({result.lr_min_method}), LRMAX {bounds.lr_max:.4g} "
        f"({result.lr_max_method})"
    )
    return bounds, result


def train_one(
    request: Request, device: torch.device, dist: Distributed
) -> tuple[Summary, Trainer, Path]:
    """A new single run. Returns its summary, trainer and folder."""
    options = request.options
    life = Lifecycle.claim(options.out or elastic_out(), options.overwrite, dist)
    budget = TimeBudget(options.time_budget) if options.time_budget is not None else None
    return _trained(request, device, dist, life, Setup(plan=budget))


def resume_one(
    path: Path, request: Request, device: torch.device, dist: Distributed
) -> tuple[Summary, Trainer, Path]:
    """Continue the single run in `path` (checked by resume.check_resumable) with its recorded
    config, from its checkpoint (or, when it has none yet, from the start)."""
    life, checkpoint, request = _reopened(path, request, dist)
    plan = read_summary(path).time_budget
    setup = Setup(record=False, check=_continuable(checkpoint, life.folder),
                  plan=KeptPlan(plan) if plan else None)  # fmt: skip
    return _trained(request, device, dist, life, setup, checkpoint)


def _trained(
    request: Request,
    device: torch.device,
    dist: Distributed,
    life: Lifecycle,
    setup: Setup,
    checkpoint: Checkpoint | None = None,
) -> tuple[Summary, Trainer, Path]:
    """One run from its set-up to its summary: from the start (the bounds given or found), or
    from `checkpoint`."""
    folder = life.folder
    with open_run(request, device, dist, life, setup) as opened:
        trainer, stop = opened.trainer, opened.stop
        if checkpoint is None:
            if setup.record and device.type == "cpu":  # a new run: what it will cost
                say(estimate_of(trainer, 1, opened.config.needs_range_test).line())
            limits = run_limits(request.options, opened.timings)
            hint = resume_hint(folder.final)
            state = new_state(trainer, bounds_for(trainer, folder, stop, hint, limits))
        else:
            state = state_from(trainer, checkpoint, folder.checkpoint_path)
        run = training_run(trainer, folder, stop, state, request.options, opened.timings,
                           resumed=checkpoint is not None)  # fmt: skip
        if checkpoint is not None:
            say(f"resuming {folder.final} {run.position()}")
        summary = run.run()
    return summary, trainer, folder.path


def _reopened(
    path: Path, request: Request, dist: Distributed
) -> tuple[Lifecycle, Checkpoint | None, Request]:
    """The unfinished run in `path` to continue: its folder (refused at once while another
    process writes it), its checkpoint and its recorded config."""
    folder = RunFolder(path, writes=False)
    checkpoint, record = folder.checkpoint(), read_config(path)
    config = record.train_config
    if checkpoint is None:
        check_none_lost(path)
    else:
        check_checkpoint_file(checkpoint, record, folder.checkpoint_path)
    life = Lifecycle.reopen(path, dist)
    if checkpoint is None:  # said at once, before any data is read
        found = config.needs_range_test and read_range_test(path) is not None
        how = " with the LR range test" if config.needs_range_test else ""
        say(
            f"resuming {path}: no checkpoint was saved, so the run starts over"
            + (" from the bounds its LR range test found (lr_range_test.json)" if found else how)
        )
    return life, checkpoint, Request(config, request.options, request.data, request.model)


def _continuable(
    checkpoint: Checkpoint | None, folder: RunFolder
) -> Callable[[Trainer], None] | None:
    """The check that refuses a checkpoint the trainer cannot continue exactly, before
    anything compiles."""
    if checkpoint is None:
        return None
    return lambda trainer: check_continuable(
        trainer, checkpoint, folder.checkpoint_path, folder.final
    )


def training_run(
    trainer: Trainer,
    folder: RunFolder,
    stop: StopSignals,
    state: TrainingState,
    options: RunOptions,
    timings: Timings,
    *,
    resumed: bool = False,
    own_timings: bool = False,
) -> TrainingRun:
    """The epochs of one run (new, resumed, or one of a plan): its limits (--max-time,
    --max-steps) counted from the process's start (`timings`); `own_timings`: the run times
    itself afresh (a run of a plan), else it shares the process's."""
    limits = run_limits(options, timings)
    return TrainingRun(trainer, folder, stop, state, resumed=resumed, limits=limits,
                       timings=Timings() if own_timings else timings)  # fmt: skip


def run_limits(options: RunOptions, timings: Timings) -> Limits:
    """--max-time and --max-steps, the time counted from the process's start (`timings`)."""
    started = time.monotonic() - (time.perf_counter() - timings.started)
    return Limits.of(options.max_time, options.max_steps, started)


def range_test_only(
    request: Request, device: torch.device, dist: Distributed
) -> tuple[LrBounds, RangeTestResult, Path]:
    """find_lr: the LR range test in a folder of its own (its summary says kind range_test)."""
    started = time.perf_counter()
    occupied = f"choose another {named('out')}"  # a range test is never continued
    life = Lifecycle.claim(
        request.options.out, False, dist, occupied=occupied, occupied_complete=occupied
    )
    setup = Setup(RunKind.RANGE_TEST, running=_range_test_running)
    with open_run(request, device, dist, life, setup) as opened:
        bounds, curve = range_test(opened.trainer, life.folder, opened.stop)
        wall = time.perf_counter() - started
        running = _range_test_running(opened.trainer, opened.config)
        life.folder.write_summary(range_test_complete(running, bounds, device_name(device), wall))
    say(f"plot: {life.folder / 'lr_range_test.png'}  curve: {life.folder / 'lr_range_test.json'}")
    return bounds, curve, life.folder.path  # on every rank: each ran the range test


def _range_test_running(trainer: Trainer, config: TrainConfig) -> Summary:
    return Summary(RunKind.RANGE_TEST, Status.RUNNING, config.to_dict())
