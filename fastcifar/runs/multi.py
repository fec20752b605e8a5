"""Several runs: N seeds (`--seeds N`) and LR sweeps (`--lr-max a,b,c`), and their aggregate.

The model is compiled once; between runs it is re-seeded in place (`Trainer.reseed`), so run k
is exactly a fresh `--seed k` run given the same LR bounds (tested on CPU). The LR range test
runs once, before the first run; its bounds serve every seed and, in a sweep, mark the plot.
The parent folder holds one run folder per run (`seed-K`, or `lr-X/seed-K`), the range test,
an aggregate summary.json (mean ± std, min, max, 95% t-interval, per-seed rows; plain and
flip-TTA accuracy) and plots. A run that diverges is recorded as diverged and the others go on.

Under torchrun the runs go one of two ways. Parallel runs (the default for several runs):
each rank trains whole runs of the plan on its own, round-robin, compiled with CUDA graphs as
a single GPU would, with no gradient traffic; rank 0 runs the range test and, at the end,
writes the aggregate. Data-parallel (`--parallel data`): every run is split over all ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastcifar.engine.schedule import LrBounds, given_bounds
from fastcifar.errors import ConfigError, Diverged, RunStopped, UserError
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.records.config_record import ConfigRecord, RunKind, Status
from fastcifar.records.run_folder import resume_command
from fastcifar.records.summary import Summary, multi_complete, read_summary
from fastcifar.runs.aggregation import aggregate_groups, plot_aggregate, say_groups
from fastcifar.runs.lifecycle import Lifecycle
from fastcifar.runs.request import Request
from fastcifar.runs.resume import check_continuable, elastic_out, state_from
from fastcifar.runs.setup import Setup, estimate_of, open_run
from fastcifar.runs.single import range_test, recorded_bounds, run_limits, training_run
from fastcifar.system.distributed import Distributed, describe_error, rebuild_error
from fastcifar.system.progress import say, warn
from fastcifar.system.signals import StopSignals
from fastcifar.training.limits import Limits
from fastcifar.training.loop import Timings, new_state, running_summary
from fastcifar.training.trainer import Trainer


@dataclass(frozen=True)
class PlannedRun:
    lr_max: float | None  # None: the range test's
    seed: int
    name: str  # its folder inside the parent's


def make_plan(config: TrainConfig) -> list[PlannedRun]:
    sweep = config.is_sweep
    return [
        PlannedRun(lr_max, seed, f"lr-{lr_max:g}/seed-{seed}" if sweep else f"seed-{seed}")
        for lr_max in config.lr_maxes
        for seed in range(config.seed, config.seed + config.seeds)
    ]


def runs_in_parallel(options: RunOptions, config: TrainConfig, world_size: int) -> bool:
    """Whether each rank trains whole runs (see the module docstring)."""
    if world_size <= 1 or options.parallel == "data":
        return False
    return options.parallel == "runs" or config.runs > 1


@dataclass
class Plan:
    """The multi-run in progress: where it is written and how its runs are shared out."""

    request: Request
    life: Lifecycle
    dist: Distributed  # every rank
    parallel: bool
    trainer: Trainer | None = None
    found: LrBounds | None = None

    @property
    def data_parallel(self) -> bool:
        return self.dist.enabled and not self.parallel

    @property
    def hint(self) -> str:
        command = resume_command(self.life.folder.final, data_parallel=self.data_parallel)
        return f": resume all runs with {command}"


def train_plan(
    request: Request,
    device: torch.device,
    dist: Distributed,
    parallel: bool,
    resume: Path | None = None,
) -> tuple[Summary, Trainer, Path]:
    """Every run of the plan (skipping the complete and diverged ones of a resumed plan), then
    the aggregate; the parent's status is recorded whatever happens."""
    options = request.options
    if resume is None:
        if parallel and options.overwrite:
            raise ConfigError(
                "--overwrite is not available while ranks train runs in parallel: remove the "
                "old run or choose another --out"
            )
        life = Lifecycle.claim(options.out or elastic_out(), options.overwrite, dist)
    else:
        life = Lifecycle.reopen(resume, dist)
    plan = Plan(request, life, dist, parallel)
    runs = make_plan(request.config)
    mode = "runs" if parallel else ("data" if dist.enabled else "none")

    def running(trainer: Trainer, config: TrainConfig) -> Summary:
        return Summary(RunKind.MULTI, Status.RUNNING, config.to_dict(), parallel=mode)

    setup = Setup(RunKind.MULTI, record=resume is None, first_run=(runs[0].seed, runs[0].lr_max),
                  own_process=parallel, running=running)  # fmt: skip
    with open_run(request, device, dist, life, setup) as opened:
        trainer, config, stop, timings = opened.trainer, opened.config, opened.stop, opened.timings
        plan.trainer = trainer
        try:
            if device.type == "cpu":
                estimate = estimate_of(
                    trainer, len(runs), config.needs_range_test and resume is None
                )
                say(estimate.line())
            limits = run_limits(plan.request.options, timings)
            plan.found = _range_test(plan, stop, config.needs_range_test, limits)
            _train_runs(plan, runs, stop, timings)
        except RunStopped as stopped:
            raise stopped.with_hint(plan.hint) from None
        summary = _aggregate(plan, running(trainer, config), runs, timings)
    _refuse_all_diverged(plan, summary)
    return summary, trainer, life.folder.path


def _refuse_all_diverged(plan: Plan, summary: Summary) -> None:
    """A plan in which no run completed is diverged, as a single run would be: its summary
    says so (the groups kept) and the command exits as a diverged run does."""
    groups = plan.dist.from_rank_0(lambda: summary.groups or [])
    if any(group["runs"] for group in groups):
        return
    seeds = sorted({seed for group in groups for seed in group["diverged_seeds"]})
    reason = f"diverged: every run of the plan diverged (seeds {seeds})"
    if plan.dist.is_main:
        plan.life.folder.write_summary(summary.stopped(Status.DIVERGED, reason))
    raise Diverged(reason)


def _range_test(plan: Plan, stop: StopSignals, needed: bool, limits: Limits) -> LrBounds | None:
    """The plan's range test: read back when resumed (the runs keep the bounds they were
    trained with); in parallel runs rank 0's alone, its bounds sent to the others."""
    if not needed:
        return None
    dist = plan.dist
    recorded = dist.from_rank_0(lambda: recorded_bounds(plan.life.folder.path))
    if recorded is not None:
        return recorded

    def find() -> LrBounds:
        return range_test(plan.trainer, plan.life.folder, stop, plan.hint, limits)[0]

    if plan.parallel:
        return dist.from_rank_0(find)
    return find()  # one process, or every rank of data-parallel runs


def _train_runs(plan: Plan, runs: list[PlannedRun], stop: StopSignals, timings: Timings) -> None:
    """This rank's runs. In parallel runs every rank then reports how its share ended, and a
    stop or an error on any rank ends the plan on all of them, said once."""
    folder, dist = plan.life.folder, plan.dist
    todo = dist.from_rank_0(lambda: [r for r in runs if not _finished(folder.path / r.name)])
    mine = todo[dist.rank :: dist.world_size] if plan.parallel else todo
    failure: tuple[str, str, int] | None = None
    current = ""
    try:
        for run in mine:
            if stop.requested if plan.parallel else dist.any(stop.requested):
                raise stop.interrupted(f" before run {run.name}")
            current = run.name
            _one_run(plan, run, stop, timings)
        if dist.any(folder.replaces):  # --overwrite, and not one run reached a checkpoint
            raise Diverged("every run diverged")
    except (RunStopped, UserError) as error:
        if not plan.parallel:
            raise
        failure = describe_error(error)
        if isinstance(error, UserError):  # which run of which rank: no other rank knows
            failure = (failure[0], f"rank {dist.rank}, run {current}: {failure[1]}", 2)
    if plan.parallel:
        first = next((f for f in dist.gather_objects(failure) if f is not None), None)
        if first is not None:
            raise rebuild_error(*first)


def _finished(path: Path) -> bool:
    if not (path / "summary.json").is_file():
        return False
    return read_summary(path).status in (Status.COMPLETE, Status.DIVERGED)


def _one_run(plan: Plan, run: PlannedRun, stop: StopSignals, timings: Timings) -> None:
    trainer = plan.trainer
    child = plan.life.child(run.name, writes=True if plan.parallel else None)
    checkpoint, path = child.folder.checkpoint(), child.folder.checkpoint_path
    trainer.reseed(run.seed, run.lr_max)  # first: the run's own config is checked against it
    if checkpoint is not None:  # refused before the run is marked running (it stays resumable)
        check_continuable(trainer, checkpoint, path, plan.life.folder.final, plan.data_parallel)
    say(f"== run {run.name}")
    record = ConfigRecord(RunKind.RUN, trainer.config.to_dict(), trainer.data.describe(),
                          trainer.model_name, trainer.architecture)  # fmt: skip
    try:
        with child.running(record if checkpoint is None else None, running_summary(trainer), stop):
            if checkpoint is not None:
                state = state_from(trainer, checkpoint, path)
            else:
                found = _bounds_for(trainer.config, plan.found, plan.request.config.is_sweep)
                state = new_state(trainer, found)
            training_run(trainer, child.folder, stop, state, plan.request.options, timings,
                         resumed=checkpoint is not None, own_timings=True).run()  # fmt: skip
    except Diverged as diverged:
        warn(f"{run.name}: {diverged}; the other runs go on")


def _bounds_for(config: TrainConfig, found: LrBounds | None, sweep: bool) -> LrBounds:
    given = given_bounds(config, how_max="sweep" if sweep else "given")
    if given is not None:
        return given
    source = {
        **found.source,
        "found_by": "the range test before the first run (../lr_range_test.json)",
    }
    return LrBounds(found.lr_min, found.lr_max, source)


def _aggregate(plan: Plan, running: Summary, runs: list[PlannedRun], timings: Timings) -> Summary:
    """The parent's summary from every run's folder (rank 0 reads them; the ranks of parallel
    runs have finished writing them, see _train_runs), its plots and its lines."""
    folder = plan.life.folder
    facts = plan.trainer.facts()
    if plan.parallel:  # a collective: every rank, before rank 0 goes on alone
        facts = {
            **facts,
            "world_size": plan.dist.world_size,
            "backend": plan.dist.backend,
            "rank_devices": plan.dist.gather_objects(facts["device_name"]),
        }
    if not plan.dist.is_main:
        return running
    summaries = [read_summary(folder.path / run.name) for run in runs]
    found = plan.found
    range_test = None if found is None else {"lr_min": found.lr_min, "lr_max": found.lr_max}
    groups = aggregate_groups(summaries, found)
    summary = multi_complete(
        running,
        facts,
        groups,
        range_test,
        warm_up_seconds=timings.warm_up_seconds,
        wall_seconds=time.perf_counter() - timings.started,
    )
    folder.write_summary(summary)
    if folder.writes and plan.trainer.config.plots:
        plot_aggregate(folder, groups, found)
    say_groups(groups)
    return summary
