"""A training session as the command line asks for it: a new run, a resumed run, or several
(seeds, an LR sweep; see multirun.py), each in a folder that always tells how it ended.

The order of work keeps bad input cheap: flags are checked, then the --out folder, then the
data; the folder is created only once all of that has passed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastcifar.config import TrainConfig
from fastcifar.device import device_name
from fastcifar.distributed import Distributed, teardown
from fastcifar.errors import Diverged, RunFolderError, RunStopped
from fastcifar.experiment import Experiment, build_experiment, start_ranks, warm_up
from fastcifar.lr_bounds import LrBounds, find_bounds, given_bounds
from fastcifar.progress import say, silence, warn
from fastcifar.report import base_summary, estimate_line
from fastcifar.run_folder import RunFolder
from fastcifar.saved_run import load_checkpoint, read_summary
from fastcifar.signals import StopSignals
from fastcifar.trainer import Timings, TrainingRun


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
    with ranks(config) as (device, dist), claim_folder(options, dist) as folder:
        experiment = prepare(config, device, dist)
        folder.create()
        folder.write_json("config.json", experiment.config.to_dict())
        return run_in_folder(experiment, folder)


def resume_training(path: Path) -> dict[str, Any]:
    summary = read_summary(path)
    if summary["status"] == "complete":
        raise RunFolderError(f"{path} is complete: there is nothing to resume")
    if summary.get("kind") == "range_test":
        raise RunFolderError(
            f"{path} holds an LR range test (find_lr), not a training run: run find_lr again"
        )
    if summary.get("kind") == "multi":
        from fastcifar.multirun import resume_many

        return resume_many(path)
    checkpoint_path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.is_file() else None
    config = recorded_config(path, checkpoint)
    with ranks(config) as (device, dist), RunFolder.reopen(path, writes=dist.is_main) as folder:
        experiment = prepare(config, device, dist)
        return run_in_folder(experiment, folder, checkpoint=checkpoint)


@contextlib.contextmanager
def ranks(config: TrainConfig) -> Iterator[tuple[torch.device, Distributed]]:
    """This process's device and place among torchrun's ranks, for the length of a command."""
    device, dist = start_ranks(config)
    try:
        yield device, dist
    finally:
        teardown()


def recorded_config(path: Path, checkpoint: dict[str, Any] | None) -> TrainConfig:
    if checkpoint is not None:
        return TrainConfig.from_dict(checkpoint["config"])
    try:
        return TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path / 'config.json'} cannot be read ({error})") from None


def prepare(config: TrainConfig, device: torch.device, dist: Distributed) -> Experiment:
    """The experiment, after what must fail early has been checked; says what a user of
    --amp on a CPU without native bf16 must know."""
    if not dist.is_main:
        silence()
    if config.gradcam:  # a missing extra fails now, not after the training
        from fastcifar.gradcam import import_grad_cam

        import_grad_cam()
    if config.tensorboard:
        from fastcifar.tensorboard_log import import_summary_writer

        import_summary_writer()
    experiment = build_experiment(config, device, dist)
    if experiment.precision.fallback_note:
        warn(experiment.precision.fallback_note)
    say(
        f"{device_name(experiment.device)}, world size {dist.world_size}; precision "
        f"{experiment.precision.name}: {experiment.precision.reason}; "
        f"{'compiled (' + experiment.compile_mode + ')' if experiment.compiled else 'eager'}"
    )
    return experiment


def claim_folder(options: RunOptions, dist: Distributed, **claim: Any) -> RunFolder:
    """Rank 0 checks --out; every rank learns the outcome (an error included)."""
    folder, outcome = None, None
    if dist.is_main:
        try:
            folder = RunFolder.claim(options.out, overwrite=options.overwrite, **claim)
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
    stop: StopSignals | None = None,
) -> dict[str, Any]:
    """Train (or continue) one run in `folder`, its status recorded whatever happens. `stop`:
    the signals of a caller already holding them (a multi-run), so that none is lost between
    runs."""
    config = experiment.config
    base = {
        **base_summary("running", config.to_dict()),
        "class_names": list(experiment.data.class_names),  # predict can use a checkpoint
    }
    folder.write_json("summary.json", base)
    signals = contextlib.nullcontext(stop) if stop is not None else StopSignals()
    with signals as stop, recorded_outcome(folder, base):
        if timings is None:
            timings = Timings()
            timings.compile_seconds = warm_up(experiment)
        run = TrainingRun(experiment, folder, stop, timings)
        if checkpoint is not None:
            state = checkpoint["state"]
            training = run.new_state(LrBounds(state["lr_min"], state["lr_max"], state["lr_source"]))
            training.load_state_dict(state)
            run.resumed = True
            say(f"resuming {folder.path} {run.position(training)}")
        else:
            bounds = bounds or given_bounds(config) or _found(experiment, folder, stop, run)
            training = run.new_state(bounds)
        return run.execute(training)


def _found(
    experiment: Experiment, folder: RunFolder, stop: StopSignals, run: TrainingRun
) -> LrBounds:
    hint = f": resume with python -m fastcifar.train --resume {folder.final}"
    bounds = find_bounds(experiment, folder, stop, hint)
    config = experiment.config
    seconds_per_step = bounds.source["seconds_per_step"]
    on_cpu = experiment.device.type == "cpu"
    test_images = len(experiment.data.test)
    say(
        estimate_line(
            seconds_per_step, run.total_steps, config.epochs, test_images, config.batch_size, on_cpu
        )
    )
    return bounds


@contextlib.contextmanager
def recorded_outcome(folder: RunFolder, base: dict[str, Any]) -> Iterator[None]:
    """Write the status of a run that does not complete (`base` with status and reason), then
    let the exception go on; an --overwrite run that never checkpointed is dropped instead."""
    try:
        yield
    except RunStopped as stopped:
        if folder.discard():
            raise stopped.with_hint(
                f" — before the new run's first checkpoint, so {folder.final} still holds "
                "the previous run, unchanged"
            ) from None
        status = "diverged" if isinstance(stopped, Diverged) else "interrupted"
        _record(folder, {**base, "status": status, "reason": str(stopped)})
        raise
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            status, reason = "interrupted", "interrupted (a second signal)"
        else:
            status, reason = "failed", f"{type(error).__name__}: {error}"
        if not folder.discard():
            _record(folder, {**base, "status": status, "reason": reason})
        raise


def _record(folder: RunFolder, summary: dict[str, Any]) -> None:
    # Best effort: when the disk is full this fails too, and the original error matters more.
    with contextlib.suppress(OSError):
        folder.write_json("summary.json", summary)
