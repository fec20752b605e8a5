"""The set-up every run goes through, written once (`open_run`): its data loaded and cut, the
trainer built and announced, the folder marked running with its config recorded, the model
warmed up. A new run, a resumed one, a plan of runs, find_lr and the estimate all open here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from fastcifar.data.dataset import Dataset
from fastcifar.outputs.report import Estimate
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_record import ConfigRecord, RunKind
from fastcifar.records.summary import Summary
from fastcifar.runs.lifecycle import Lifecycle
from fastcifar.runs.request import Request
from fastcifar.system.device import device_name
from fastcifar.system.distributed import Distributed
from fastcifar.system.progress import say, warn
from fastcifar.system.signals import StopSignals
from fastcifar.training.loop import Timings, running_summary
from fastcifar.training.trainer import Trainer, build, measure_step, warm_up


@dataclass(frozen=True)
class Setup:
    """How a flow opens its run; the defaults are a new single run."""

    kind: RunKind = RunKind.RUN
    record: bool = True  # write config.json (a resumed run has it already)
    first_run: tuple[int, float | None] | None = None  # (seed, LRMAX): build for one run of a plan
    own_process: bool = False  # each rank trains runs of its own (parallel runs)
    running: Callable[[Trainer, TrainConfig], Summary] = field(
        default=lambda trainer, config: running_summary(trainer)
    )
    check: Callable[[Trainer], None] | None = None  # refuse before the folder is marked running
    # the config the run trains, chosen once the trainer is built (--time-budget: runs/budget.py)
    plan: Callable[[Trainer, TrainConfig, float], TrainConfig] | None = None


@dataclass
class OpenRun:
    """A run, set up: what its flow goes on with."""

    trainer: Trainer
    config: TrainConfig  # as recorded: data_dir resolved (the whole plan's, for a plan)
    stop: StopSignals
    timings: Timings


@contextmanager
def open_run(
    request: Request,
    device: torch.device,
    dist: Distributed,
    life: Lifecycle,
    setup: Setup = Setup(),
) -> Iterator[OpenRun]:
    """The run of `request` set up in `life`'s folder (see the module docstring); the folder
    is marked running for as long as the context lasts and its outcome recorded at the end.
    `setup.plan` (--time-budget's epochs) chooses the config before it is recorded."""
    started = time.perf_counter()
    trainer, config = built(request, device, dist, setup)
    if setup.check is not None:
        setup.check(trainer)
    if setup.plan is not None:
        config = setup.plan(trainer, config, started)
    record = ConfigRecord(setup.kind, config.to_dict(), trainer.data.describe(), trainer.model_name,
                          trainer.architecture)  # fmt: skip
    timings = Timings()
    with life.running(record if setup.record else None, setup.running(trainer, config)) as stop:
        timings.warm_up_seconds = warm_up(trainer)
        yield OpenRun(trainer, config, stop, timings)


def built(
    request: Request, device: torch.device, dist: Distributed, setup: Setup = Setup()
) -> tuple[Trainer, TrainConfig]:
    """The trainer of `request`, announced, and the config it records (data_dir resolved)."""
    config, data = load_data(request.config, request.data)
    trains = config.one_run(*setup.first_run) if setup.first_run is not None else config
    ranks = dist.world_size if setup.own_process else 0
    trainer = build(trains, data, device, Distributed() if setup.own_process else dist,
                    request.model)  # fmt: skip
    announce(trainer, ranks)
    return trainer, config


def load_data(config: TrainConfig, data: Dataset | None) -> tuple[TrainConfig, Dataset]:
    """The data set of a run, cut to its subsets, and the config with data_dir resolved."""
    if data is None:
        from fastcifar.data.catalogue import load_dataset
        from fastcifar.data.source import recorded_data_dir

        dataset = load_dataset(config.dataset, config.data_dir)
        config = replace(config, data_dir=recorded_data_dir(config.data_dir))
    else:  # no folder was read: the setting says nothing about the run
        dataset, config = data, replace(config, data_dir=None)
    dataset = dataset.subsets(config.train_subset, config.test_subset)
    config.training_steps(len(dataset.train))  # a folder's images are counted only now
    return config, dataset


def announce(trainer: Trainer, runs_in_parallel: int = 0) -> None:
    """The run's first line: the device, the ranks, the precision and why, compiled or not;
    first, a warning where --amp was asked for and cannot be had."""
    if trainer.precision.fallback_note:
        warn(trainer.precision.fallback_note)
    parallel = f", {runs_in_parallel} ranks training runs in parallel" if runs_in_parallel else ""
    compiled = f"compiled ({trainer.compile_mode})" if trainer.compiled else "eager"
    say(
        f"{device_name(trainer.device)}, world size {trainer.dist.world_size}{parallel}; "
        f"precision {trainer.precision.name}: {trainer.precision.reason}; {compiled}"
    )


def estimate_of(trainer: Trainer, runs: int, range_test: bool) -> Estimate:
    """The cost of the requested runs from one measured step of this trainer."""
    from fastcifar.engine.model import step_gflop

    config = trainer.config
    seconds = measure_step(trainer)
    return Estimate.of(
        seconds,
        steps=trainer.total_steps,
        runs=runs,
        epochs=config.epochs,
        batch=config.batch_size,
        test_images=len(trainer.data.test),
        tta=config.tta,
        tta_translate=config.tta_translate,
        eval_every=config.eval_every,
        range_test_steps=config.resolved_range_test_steps(trainer.total_steps) if range_test else 0,
        gflop_per_step=step_gflop(trainer.model, trainer.train_loader.batch_size, trainer.device),
        on_cpu=trainer.device.type == "cpu",
        sliced=config.train_subset is not None,
    )
