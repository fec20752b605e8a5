"""One call of fit, as a `Request`, and the flows of one training run: new, resumed, or
continued after a torchrun restart; the LR range test alone (find_lr). The folder's life:
lifecycle.py; several runs: multirun.py; the public functions: api.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastcifar.checkpoint import Checkpoint, TrainedHow, check_fits, load_checkpoint
from fastcifar.config import RunOptions, TrainConfig
from fastcifar.config_checks import CIFAR10_TRAIN_IMAGES
from fastcifar.dataset import Dataset, as_dataset
from fastcifar.device import device_name
from fastcifar.distributed import Distributed, restarted
from fastcifar.errors import (
    ConfigError,
    DataError,
    RunFolderError,
)
from fastcifar.lifecycle import Lifecycle, resume_command, resume_hint
from fastcifar.lr_range_test import RangeTestResult
from fastcifar.model import ModelChoice
from fastcifar.progress import say, warn
from fastcifar.records import ConfigRecord, RunKind, Status, read_config
from fastcifar.report import Estimate, save_range_test
from fastcifar.run_folder import RunFolder, run_status
from fastcifar.run_summary import Summary, read_summary
from fastcifar.schedule import LrBounds, given_bounds
from fastcifar.signals import StopSignals
from fastcifar.state import TrainingState
from fastcifar.trainer import Trainer, build, find_bounds, measure_step, warm_up
from fastcifar.training_run import Limits, Timings, TrainingRun, new_state, running_summary


@dataclass(frozen=True)
class Request:
    """One call of `fit` or of `python -m fastcifar.train`: what to train and how."""

    config: TrainConfig
    options: RunOptions = field(default_factory=RunOptions)
    data: Any = None  # data of one's own (see dataset.as_dataset); None: CIFAR-10
    model: ModelChoice = None  # None: the ResNet9

    def check(self) -> None:
        """What needs only the settings, before torch loads any data: One Cycle's length, the
        optional extras asked for, a model that Grad-CAM can explain."""
        images = self.config.train_subset or (
            len(as_dataset(self.data).train) if self.data is not None else CIFAR10_TRAIN_IMAGES
        )
        self.config.training_steps(images)
        if self.config.gradcam:
            if self.model is not None:
                raise ConfigError("--gradcam explains the ResNet9 only, not a model of one's own")
            from fastcifar.gradcam import import_grad_cam

            import_grad_cam()
        if self.config.tensorboard:
            from fastcifar.tensorboard_log import import_summary_writer

            import_summary_writer()


def load_data(config: TrainConfig, data: Any) -> tuple[TrainConfig, Dataset]:
    """The data set of a run, cut to its subsets, and the config with data_dir resolved."""
    if data is None:
        from fastcifar.data_source import load_cifar10, recorded_data_dir

        dataset = load_cifar10(config.data_dir)
        config = replace(config, data_dir=recorded_data_dir(config.data_dir))
    else:  # no folder was read: the setting says nothing about the run
        dataset, config = as_dataset(data), replace(config, data_dir=None)
    return config, dataset.subsets(config.train_subset, config.test_subset)


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
    from fastcifar.model import step_gflop

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
        range_test_steps=config.resolved_range_test_steps(trainer.total_steps) if range_test else 0,
        gflop_per_step=step_gflop(trainer.model, trainer.train_loader.batch_size, trainer.device),
        on_cpu=trainer.device.type == "cpu",
    )


def bounds_for(trainer: Trainer, folder: RunFolder, stop: StopSignals, hint: str) -> LrBounds:
    """The run's bounds: as given, or found by the range test (written into the folder, then
    the time estimate from its speed)."""
    given = given_bounds(trainer.config)
    if given is not None:
        return given
    return range_test(trainer, folder, stop, hint)[0]


def range_test(
    trainer: Trainer, folder: RunFolder, stop: StopSignals, hint: str = ""
) -> tuple[LrBounds, RangeTestResult]:
    """The LR range test, written into `folder` (curve and plot) and said in one line; its
    bounds and its whole curve."""
    bounds, result = find_bounds(trainer, stop, hint)
    save_range_test(result, folder, trainer.config.plots)
    say(
        f"LR range test ({len(result.lrs)} steps, {bounds.source['range_test_seconds']:.1f} s): "
        f"LRMIN {bounds.lr_min:.4g} ({result.lr_min_method}), LRMAX {bounds.lr_max:.4g} "
        f"({result.lr_max_method})"
    )
    return bounds, result


def train_one(request: Request, device: Any, dist: Distributed) -> tuple[Summary, Trainer, Path]:
    """A new single run. Returns its summary, trainer and folder."""
    options = request.options
    life = Lifecycle.claim(options.out or elastic_out(), options.overwrite, dist)
    config, data = load_data(request.config, request.data)
    trainer = build(config, data, device, dist, request.model)
    announce(trainer)
    record = ConfigRecord(RunKind.RUN, config.to_dict(), data.describe(), trainer.model_name)
    timings = Timings()
    with life.running(record, running_summary(trainer)) as stop:
        timings.warm_up_seconds = warm_up(trainer)
        if device.type == "cpu":
            say(estimate_of(trainer, 1, config.needs_range_test).line())
        bounds = bounds_for(trainer, life.folder, stop, resume_hint(life.folder.final))
        run = TrainingRun(
            trainer,
            life.folder,
            stop,
            new_state(trainer, bounds),
            limits=limits_of(options, timings),
            timings=timings,
        )
        summary = run.run()
    return summary, trainer, life.folder.path


def limits_of(options: RunOptions, timings: Timings) -> Limits:
    import time

    started = time.monotonic() - (time.perf_counter() - timings.started)
    return Limits.of(options.max_time, options.max_steps, started)


def elastic_out() -> str | None:
    """Under torchrun with restarts and no --out, a folder a restart finds again: named by
    torchrun's run id."""
    if os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") in ("", "0"):
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id == "none":
        raise ConfigError(
            "torchrun restarts a job by its --rdzv-id: pass --out (or --rdzv-id) so that a "
            "restart finds the run it continues"
        )
    return str(Path("runs") / f"torchrun-{run_id}")


def continuable(out: str | None, request: Request) -> Path | None:
    """The unfinished run in `out` to continue instead of starting anew (after a torchrun
    restart, or with --auto-resume), if its config is this one; a different config there is
    one line."""
    if out is None or not (restarted() or request.options.auto_resume):
        return None
    path = Path(out)
    if run_status(path) in (None, Status.COMPLETE.value):
        return None
    recorded = read_config(path).train_config
    config = replace(request.config, data_dir=None)  # data of one's own: the setting says nothing
    if request.data is None:
        from fastcifar.data_source import recorded_data_dir

        config = replace(config, data_dir=recorded_data_dir(request.config.data_dir))
    if recorded.to_dict() != config.to_dict():
        changed = sorted(k for k, v in config.to_dict().items() if recorded.to_dict().get(k) != v)
        raise RunFolderError(
            f"{path} holds a run of another config ({', '.join(changed)} differ): it is not "
            "continued; choose another --out"
        )
    return path


def check_resumable(path: Path, request: Request) -> ConfigRecord:
    """The record of the run in `path`, refused in one line if it cannot be continued: it is
    complete, a range test, diverged, or needs the data or the model of one's own again."""
    summary = read_summary(path)
    if summary.status == Status.COMPLETE:
        raise RunFolderError(f"{path} is complete: there is nothing to resume")
    if summary.kind == RunKind.RANGE_TEST:
        raise RunFolderError(
            f"{path} holds an LR range test (find_lr), not a training run: run find_lr again"
        )
    record = read_config(path)
    if summary.status == Status.DIVERGED and summary.kind == RunKind.RUN:
        lr_max = summary.config.get("lr_max")
        raise RunFolderError(
            f"{path} diverged ({summary.reason}); resuming repeats that: train again with a "
            f"lower LRMAX{f' than {lr_max:g}' if isinstance(lr_max, int | float) else ''} "
            "(--lr-max)"
        )
    if record.own_data and request.data is None:
        raise DataError(
            f"{path} was trained on data of one's own: resume it from Python with "
            "fastcifar.fit(resume=..., data=...) and the same data"
        )
    if not record.own_data and request.data is not None:
        raise DataError(
            f"{path} was trained on CIFAR-10 from its data folder: resume it without data="
        )
    if record.own_data and request.data.fingerprint != record.data.get("sha256"):
        raise DataError(f"{path} was trained on other data than this (its SHA-256 differs)")
    if record.custom_model and request.model is None:
        raise ConfigError(
            f"{path} trained a model of one's own ({record.model}): resume it from Python "
            "with fastcifar.fit(resume=..., model=...)"
        )
    if not record.custom_model and request.model is not None:
        raise ConfigError(f"{path} trained the recipe's ResNet9: resume it without model=")
    return record


def resume_one(
    path: Path, request: Request, device: Any, dist: Distributed
) -> tuple[Summary, Trainer, Path]:
    """Continue the single run in `path` (checked by check_resumable) with its recorded
    config, from its checkpoint (or, when it has none yet, from the start)."""
    record = read_config(path)
    checkpoint_path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
    config, data = load_data(record.train_config, request.data)
    life = Lifecycle.reopen(path, dist)
    trainer = build(config, data, device, dist, request.model)
    announce(trainer)
    if checkpoint is not None:  # refused before anything compiles
        check_continuable(trainer, checkpoint, checkpoint_path, path)
    timings = Timings()
    with life.running(None, running_summary(trainer)) as stop:
        timings.warm_up_seconds = warm_up(trainer)
        if checkpoint is not None:
            state = state_from(trainer, checkpoint, checkpoint_path)
        else:
            say(
                f"resuming {path}: no checkpoint was saved, so the run starts over"
                + (" with the LR range test" if config.needs_range_test else "")
            )
            state = new_state(trainer, bounds_for(trainer, life.folder, stop, resume_hint(path)))
        run = TrainingRun(
            trainer,
            life.folder,
            stop,
            state,
            resumed=checkpoint is not None,
            limits=limits_of(request.options, timings),
            timings=timings,
        )
        if checkpoint is not None:
            say(f"resuming {path} {run.position()}")
        result = run.run()
    return result, trainer, path


def check_continuable(
    trainer: Trainer, checkpoint: Checkpoint, path: Path, folder: Path, data_parallel: bool = False
) -> None:
    """One line when `checkpoint` (at `path`) cannot be continued exactly the way `trainer`
    trains (the command that would, for the run in `folder`); warnings said."""
    how = trainer.trained_how()
    now = TrainedHow(trainer.config.epochs, trainer.steps_per_epoch, **how)
    for line in check_fits(checkpoint, now, path,
                           lambda world: resume_command(folder, world, data_parallel)):  # fmt: skip
        warn(line)


def state_from(trainer: Trainer, checkpoint: Checkpoint, path: Path) -> TrainingState:
    """The training state `checkpoint` (at `path`) holds, restored into `trainer`."""
    bounds = LrBounds(checkpoint.lr_min, checkpoint.lr_max, checkpoint.lr_source)
    state = new_state(trainer, bounds)
    state.restore(checkpoint, path)
    return state


def range_test_only(
    request: Request, device: Any, dist: Distributed
) -> tuple[LrBounds, RangeTestResult, Path]:
    """find_lr: the LR range test in a folder of its own (its summary says kind range_test)."""
    import time

    from fastcifar.run_summary import range_test_complete

    started = time.perf_counter()
    occupied = "choose another --out"
    life = Lifecycle.claim(
        request.options.out, False, dist, occupied=occupied, occupied_complete=occupied
    )
    config, data = load_data(request.config, request.data)
    trainer = build(config, data, device, dist, request.model)
    announce(trainer)
    record = ConfigRecord(RunKind.RANGE_TEST, config.to_dict(), data.describe(), trainer.model_name)
    running = Summary(RunKind.RANGE_TEST, Status.RUNNING, config.to_dict())
    with life.running(record, running) as stop:
        warm_up(trainer)
        bounds, curve = range_test(trainer, life.folder, stop)
        wall = time.perf_counter() - started
        life.folder.write_summary(range_test_complete(running, bounds, device_name(device), wall))
    say(f"plot: {life.folder / 'lr_range_test.png'}  curve: {life.folder / 'lr_range_test.json'}")
    return bounds, curve, life.folder.path  # on every rank: each ran the range test
