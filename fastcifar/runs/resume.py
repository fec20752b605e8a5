"""Continuing a run, every rule in one place: which folder a request continues (--resume, a
torchrun restart, --auto-resume), whether it may be (refusals in one line), the settings that
may stand beside it, the parallel mode it was trained in, and its checkpoint restored."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from fastcifar.data.spec import FOLDER
from fastcifar.engine.model import model_factory, weights_mismatch
from fastcifar.engine.schedule import LrBounds
from fastcifar.errors import CheckpointError, ConfigError, DataError, RunFolderError
from fastcifar.records.checkpoint import Checkpoint, TrainedHow, check_fits, check_source
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.records.config_record import ConfigRecord, RunKind, Status, read_config
from fastcifar.records.provenance import training_source
from fastcifar.records.run_folder import CHECKPOINT, resume_command, run_status
from fastcifar.records.summary import read_summary
from fastcifar.runs.request import Request
from fastcifar.system.device import compute_kind
from fastcifar.system.distributed import restarted
from fastcifar.system.progress import warn
from fastcifar.training.loop import new_state
from fastcifar.training.state import TrainingState
from fastcifar.training.trainer import Trainer

BESIDE_RESUME = frozenset({"resume", *RunOptions.BESIDE_RESUME})


def refuse_beside_resume(extra: list[str], how: str) -> None:
    """One line when settings other than the run options a resume allows (`BESIDE_RESUME`) are
    given with it: `extra` as the user wrote them (flags or keywords), `how` the resume itself."""
    if extra:
        drop = ", ".join(extra)
        raise ConfigError(f"{how} continues with the run's recorded config; drop {drop}")


def target(request: Request) -> tuple[Path | None, Request]:
    """The folder `request` continues, if any, and the request to continue it with (refused in
    one line if it cannot be): --resume's, with the parallel mode it was trained in unless one
    is given; or the unfinished run in --out that a torchrun restart or --auto-resume
    continues."""
    options = request.options
    if options.resume is not None:
        path = Path(options.resume)
        config = check_resumable(path, request).train_config
        if options.parallel == "auto":
            recorded = read_summary(path).parallel
            if recorded in ("runs", "data"):
                options = replace(options, parallel=recorded)
        return path, Request(config, options, request.data, request.model)
    out = options.out or elastic_out()
    record = continuable(out, request)
    if record is None:
        return None, request
    return Path(out), Request(record.train_config, options, request.data, request.model)


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


def continuable(out: str | None, request: Request) -> ConfigRecord | None:
    """The record of the unfinished run in `out` to continue instead of starting anew (after a
    torchrun restart, or with --auto-resume), refused in one line if it cannot be continued or
    was trained with another config."""
    if out is None or not (restarted() or request.options.auto_resume):
        return None
    path = Path(out)
    if run_status(path) in (None, Status.COMPLETE.value):
        return None
    _check_same_request(path, read_config(path).train_config, request)
    return check_resumable(path, request)  # a run of this config: may it be continued?


def _check_same_request(path: Path, recorded: TrainConfig, request: Request) -> None:
    """One line when the run in `path` was trained with another config than `request` asks
    for: the request is a new run then, and needs another --out. The epochs a --time-budget
    planned stand for the same budget."""
    config = replace(request.config, data_dir=None)  # data of one's own: the setting says nothing
    if request.data is None:
        from fastcifar.data.source import recorded_data_dir

        config = replace(config, data_dir=recorded_data_dir(request.config.data_dir))
    budget = request.options.time_budget
    planned = read_summary(path).time_budget if budget is not None else None
    if planned and planned.get("budget_seconds") == budget:
        config = replace(config, epochs=recorded.epochs)
    if recorded.to_dict() != config.to_dict():
        changed = sorted(k for k, v in config.to_dict().items() if recorded.to_dict().get(k) != v)
        raise RunFolderError(
            f"{path} holds a run of another config ({', '.join(changed)} differ): it is not "
            "continued; choose another --out"
        )


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
    if summary.status == Status.DIVERGED:  # a run, or a plan of which every run diverged
        lr_max = summary.config.get("lr_max")
        raise RunFolderError(
            f"{path} diverged ({summary.reason}); resuming repeats that: train again with a "
            f"lower LRMAX{f' than {lr_max:g}' if isinstance(lr_max, int | float) else ''} "
            "(--lr-max)"
        )
    _check_same_inputs(path, record, request)
    return record


def _check_same_inputs(path: Path, record: ConfigRecord, request: Request) -> None:
    """The data and the model of one's own a run was trained on, asked for again."""
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
        raise ConfigError(f"{path} trained the recipe's {record.model}: resume it without model=")


def check_none_lost(path: Path) -> None:
    """One line when the run in `path` has no checkpoint though it must have one: it stopped
    cleanly (which saves one) after a whole epoch (metrics.csv): the file was moved or deleted,
    and starting over would silently throw that training away. (A killed process may leave no
    checkpoint yet: its status stays "running", and the run starts over.)"""
    summary = read_summary(path)
    if summary.status == Status.INTERRUPTED and (path / "metrics.csv").is_file():
        raise CheckpointError(
            f"{path / CHECKPOINT} is missing, though the run stopped cleanly after training "
            "(see metrics.csv): it was moved or deleted; put it back, or start the run anew "
            "with --overwrite"
        )


def check_continuable(
    trainer: Trainer, checkpoint: Checkpoint, path: Path, folder: Path, data_parallel: bool = False
) -> None:
    """One line when `checkpoint` (at `path`) cannot be continued exactly the way `trainer`
    trains (the command that would, for the run in `folder`); warnings said. Everything here
    is checked before the warm-up, so that a refusal comes within seconds."""
    _check_same_run(trainer, checkpoint, path)
    _check_same_images(trainer, folder)
    how = trainer.trained_how()
    now = TrainedHow(trainer.config.epochs, trainer.steps_per_epoch, **how)
    for line in check_fits(checkpoint, now, path,
                           lambda world: resume_command(folder, world, data_parallel)):  # fmt: skip
        warn(line)
    for line in check_source(checkpoint, training_source(compute_kind(trainer.device)), path):
        warn(line)


def _check_same_images(trainer: Trainer, folder: Path) -> None:
    """A folder of images is read afresh on resume: its images must hash as they did."""
    recorded = (read_config(folder).data or {}).get("sha256")
    if trainer.data.source == FOLDER and trainer.data.fingerprint != recorded:
        raise DataError(
            f"{folder} was trained on other images than {trainer.data.folder} holds now (their "
            "SHA-256 differs): put the images back as they were, or start a new run"
        )


def check_checkpoint_file(checkpoint: Checkpoint, record: ConfigRecord, path: Path) -> None:
    """What needs neither data nor a trainer, refused before the data is read: the
    checkpoint's own copy of the config is config.json's, and its weights fit
    the named network that config builds for the recorded classes. check_continuable checks again
    against the trainer (a model of one's own, each run of a plan)."""
    _check_same_config(checkpoint, record.config, path)
    classes = len((record.data or {}).get("class_names") or [])
    if record.custom_model or not classes:
        return
    config = record.train_config
    with torch.device("meta"):  # shapes only: nothing allocated, nothing drawn
        network = model_factory(None, classes, config.logit_scale, config.model, config.width)()
    _check_same_weights(network.state_dict(), checkpoint, path)


def _check_same_run(trainer: Trainer, checkpoint: Checkpoint, path: Path) -> None:
    """The checkpoint's own copy of the config is the one the run records (config.json), and
    its weights fit the model: else the file was changed, or is another run's."""
    _check_same_config(checkpoint, trainer.config.to_dict(), path)
    _check_same_weights(trainer.model.state_dict(), checkpoint, path)


def _check_same_config(checkpoint: Checkpoint, now: dict[str, object], path: Path) -> None:
    differ = sorted(key for key, value in checkpoint.config.items()
                    if key in now and key != "data_dir" and value != now[key])  # fmt: skip
    if differ:
        raise CheckpointError(
            f"{path} holds another config than the run's config.json ({', '.join(differ)} "
            "differ): it is not this run's checkpoint"
        )


def _check_same_weights(own: dict[str, object], checkpoint: Checkpoint, path: Path) -> None:
    misfit = weights_mismatch(own, checkpoint.model)
    if misfit:
        raise CheckpointError(f"{path} does not fit this run's model ({misfit})")


def state_from(trainer: Trainer, checkpoint: Checkpoint, path: Path) -> TrainingState:
    """The training state `checkpoint` (at `path`) holds, restored into `trainer`."""
    bounds = LrBounds(checkpoint.lr_min, checkpoint.lr_max, checkpoint.lr_source)
    state = new_state(trainer, bounds)
    state.restore(checkpoint, path)
    return state
