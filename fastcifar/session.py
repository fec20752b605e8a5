"""A training session as the command line asks for it: a new run, a resumed run, or several
(seeds, an LR sweep; see multirun.py), each in a folder that always tells how it ended.

The order of work keeps bad input cheap: flags are checked, then the --out folder, then the
data; the folder is created only once all of that has passed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastcifar.config import TrainConfig
from fastcifar.distributed import Distributed, teardown
from fastcifar.errors import Interrupted, RunFolderError, RunStopped
from fastcifar.experiment import Experiment, build_experiment, start_ranks, warm_up
from fastcifar.progress import say, silence
from fastcifar.report import base_summary, estimate_line
from fastcifar.run_folder import RunFolder
from fastcifar.saved_run import load_checkpoint, read_summary
from fastcifar.signals import StopSignals
from fastcifar.trainer import LrBounds, Timings, TrainingRun, announce, find_bounds, given_bounds


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to train (TrainConfig)."""

    out: str | None = None  # None: runs/<date>-<time>-<random>
    overwrite: bool = False
    resume: str | None = None
    seeds: int = 1  # seeds seed, seed+1, ... in one process
    lr_maxes: tuple[float, ...] = ()  # several: an LR sweep


def run_training(config: TrainConfig, options: RunOptions) -> dict[str, Any]:
    """What `python -m fastcifar.train` does with its flags; returns the (aggregate) summary."""
    if options.resume is not None:
        return resume_training(Path(options.resume))
    if options.seeds > 1 or len(options.lr_maxes) > 1:
        from fastcifar.multirun import train_many

        return train_many(config, options)
    if options.lr_maxes:
        config = replace(config, lr_max=options.lr_maxes[0])
    device, dist = start_ranks(config)
    try:
        folder = claim_folder(options, dist)
        experiment = prepare(config, device, dist)
        folder.create()
        folder.write_json("config.json", experiment.config.to_dict())
        return run_in_folder(experiment, folder)
    finally:
        teardown()


def resume_training(path: Path) -> dict[str, Any]:
    summary = read_summary(path)
    if summary.get("kind") == "multi":
        from fastcifar.multirun import resume_many

        return resume_many(path)
    if summary["status"] == "complete":
        raise RunFolderError(f"{path} is a complete run: there is nothing to resume")
    checkpoint_path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.is_file() else None
    config = recorded_config(path, checkpoint)
    device, dist = start_ranks(config)
    try:
        folder = RunFolder.reopen(path, writes=dist.is_main)
        experiment = prepare(config, device, dist)
        return run_in_folder(experiment, folder, checkpoint=checkpoint)
    finally:
        teardown()


def recorded_config(path: Path, checkpoint: dict[str, Any] | None) -> TrainConfig:
    if checkpoint is not None:
        return TrainConfig.from_dict(checkpoint["config"])
    try:
        return TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path / 'config.json'} cannot be read ({error})") from None


def prepare(config: TrainConfig, device, dist: Distributed) -> Experiment:
    if not dist.is_main:
        silence()
    if config.gradcam:  # a missing extra fails now, not after the training
        from fastcifar.gradcam import import_grad_cam

        import_grad_cam()
    experiment = build_experiment(config, device, dist)
    announce(experiment)
    return experiment


def claim_folder(options: RunOptions, dist: Distributed) -> RunFolder:
    """Rank 0 checks --out; every rank learns the outcome (an error included)."""
    folder, outcome = None, None
    if dist.is_main:
        try:
            folder = RunFolder.claim(options.out, overwrite=options.overwrite)
            outcome = ("ok", str(folder.final))
        except RunFolderError as error:
            outcome = ("error", str(error))
    kind, text = dist.broadcast_object(outcome)
    if kind == "error":
        raise RunFolderError(text)
    return folder if folder is not None else RunFolder(Path(text), writes=False)


def run_in_folder(
    experiment: Experiment,
    folder: RunFolder,
    *,
    checkpoint: dict[str, Any] | None = None,
    bounds: LrBounds | None = None,
    timings: Timings | None = None,
) -> dict[str, Any]:
    """Train (or continue) one run in `folder`, its status recorded whatever happens."""
    config = experiment.config
    folder.write_json("summary.json", base_summary("running", config.to_dict()))
    with StopSignals() as stop, recorded_outcome(folder, config):
        if timings is None:
            timings = Timings()
            if experiment.compiled or experiment.device.type == "cuda":
                timings.compile_seconds = warm_up(experiment)
        run = TrainingRun(experiment, folder, stop, timings)
        if checkpoint is not None:
            state = checkpoint["state"]
            state_bounds = LrBounds(state["lr_min"], state["lr_max"], state["lr_source"])
            training = run.new_state(state_bounds)
            training.load_state_dict(state)
            where = f"epoch {training.epoch + 1}, step {training.step_in_epoch}"
            say(f"resuming {folder.path} at {where}")
        else:
            bounds = bounds or given_bounds(experiment) or _found(experiment, folder, stop, run)
            training = run.new_state(bounds)
        return run.execute(training)


def _found(
    experiment: Experiment, folder: RunFolder, stop: StopSignals, run: TrainingRun
) -> LrBounds:
    bounds = find_bounds(experiment, folder, stop)
    config = experiment.config
    say(
        estimate_line(
            bounds.source["seconds_per_step"],
            run.total_steps,
            config.epochs,
            len(experiment.data.test),
            config.batch_size,
            experiment.device.type == "cpu",
        )
    )
    return bounds


@contextlib.contextmanager
def recorded_outcome(folder: RunFolder, config: TrainConfig) -> Iterator[None]:
    """Write the run's status when it does not complete, then let the exception go on."""
    try:
        yield
    except RunStopped as stopped:
        status = "interrupted" if isinstance(stopped, Interrupted) else "diverged"
        if folder.discard():
            raise type(stopped)(
                f"{stopped} — before the new run's first checkpoint, so {folder.final} "
                "still holds the previous run, unchanged",
                stopped.exit_code,
            ) from None
        _record(folder, base_summary(status, config.to_dict(), str(stopped)))
        raise
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            status, reason = "interrupted", "interrupted (a second signal)"
        else:
            status, reason = "failed", f"{type(error).__name__}: {error}"
        if not folder.discard():
            _record(folder, base_summary(status, config.to_dict(), reason))
        raise


def _record(folder: RunFolder, summary: dict[str, Any]) -> None:
    # Best effort: when the disk is full this fails too, and the original error matters more.
    with contextlib.suppress(OSError):
        folder.write_json("summary.json", summary)
