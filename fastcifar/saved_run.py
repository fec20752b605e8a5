"""Reading a run folder back: its summary, its model and its checkpoint, each checked, each
failure one line that names the file.

Weights and checkpoints are loaded with `weights_only=True`: a file that tries to run code is
refused, never executed.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fastcifar.config import TrainConfig
from fastcifar.errors import CheckpointError, ConfigError, RunFolderError
from fastcifar.model import ResNet9, build_model
from fastcifar.run_folder import SUMMARY_SCHEMA
from fastcifar.state import CHECKPOINT_SCHEMA

LOAD_ERRORS = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    OSError,
)


def read_summary(folder: Path) -> dict[str, Any]:
    """summary.json of a run folder, checked for the fields readers rely on."""
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder (expected a run folder of fastcifar.train)")
    path = folder / "summary.json"
    if not path.is_file():
        raise RunFolderError(f"{path} not found: {folder} is not a run folder of fastcifar.train")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunFolderError(f"{path} cannot be read as JSON ({error})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise RunFolderError(f"{path} is not a fastcifar summary (no status)")
    schema = summary.get("schema")
    if not isinstance(schema, int) or schema > SUMMARY_SCHEMA:
        raise RunFolderError(
            f"{path} has schema {schema!r}; this fastcifar reads schema {SUMMARY_SCHEMA} or older"
        )
    return summary


def load_run(
    folder: str | Path, device: torch.device, *, allow_incomplete: bool = False
) -> tuple[ResNet9, dict[str, Any]]:
    """The trained model (in eval mode) and the summary of a complete run (or, when asked, of
    an unfinished one: then the weights of its last checkpoint)."""
    folder = Path(folder)
    summary = read_summary(folder)
    if summary.get("kind") == "multi":
        raise RunFolderError(
            f"{folder} holds several runs (seeds or an LR sweep): pass one of its run folders"
        )
    if summary.get("kind", "run") != "run":
        raise RunFolderError(f"{folder} holds an LR range test, not a trained model")
    status = summary["status"]
    if status != "complete" and not allow_incomplete:
        raise RunFolderError(
            f"{folder} is not a complete run (status: {status}"
            f"{': ' + summary['reason'] if summary.get('reason') else ''}); resume it with "
            f"python -m fastcifar.train --resume {folder}, or pass --allow-incomplete"
        )
    state, source = _weights(folder)
    config = _config_of(summary, folder)
    _check_class_names(summary, folder)
    model = build_model(device, config.logit_scale, config.channels_last)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{source} does not fit the ResNet-9 ({first})") from None
    _check_finite(model, source)
    return model.eval(), summary


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint.pt, loaded with weights_only=True."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except LOAD_ERRORS as error:
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({_short(error)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state"), dict):
        raise CheckpointError(f"{path} is not a fastcifar checkpoint")
    schema = checkpoint["state"].get("schema")
    if not isinstance(schema, int) or schema > CHECKPOINT_SCHEMA:
        raise CheckpointError(
            f"{path} has schema {schema!r}; "
            f"this fastcifar reads schema {CHECKPOINT_SCHEMA} or older"
        )
    return checkpoint


def _weights(folder: Path) -> tuple[dict[str, Any], Path]:
    path = folder / "model.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except LOAD_ERRORS as error:
            raise CheckpointError(
                f"{path} cannot be read as model weights ({_short(error)})"
            ) from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} does not hold a state dict")
        return state, path
    checkpoint_path = folder / "checkpoint.pt"
    if checkpoint_path.is_file():
        return load_checkpoint(checkpoint_path)["state"]["model"], checkpoint_path
    raise RunFolderError(f"{folder} holds neither model.pt nor checkpoint.pt")


def _config_of(summary: dict[str, Any], folder: Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(summary["config"])
    except (KeyError, ConfigError) as error:
        raise RunFolderError(f"{folder / 'summary.json'}: bad config ({error})") from None


def _check_class_names(summary: dict[str, Any], folder: Path) -> None:
    names = summary.get("class_names")
    if not (
        isinstance(names, list) and len(names) == 10 and all(isinstance(n, str) for n in names)
    ):
        raise RunFolderError(f"{folder / 'summary.json'}: class_names must be a list of 10 names")


def _check_finite(model: torch.nn.Module, source: Path) -> None:
    bad = sum(
        int((~torch.isfinite(t)).sum())
        for t in model.state_dict().values()
        if t.is_floating_point()
    )
    if bad:
        total = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
        raise CheckpointError(
            f"{source} holds {bad:,} non-finite values of {total:,}: the run diverged; "
            "these weights cannot predict anything"
        )


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip(": ")
