"""The checkpoint record: everything a run needs to continue, one dataclass with a schema
version, saved by `TrainingState.checkpoint` and read back here, checked field by field.

The stateful parts of a run (model, optimizer, schedule, scaler, RNGs, and any added later,
such as the weight average of --ema) are one mapping, `parts`, name -> state dict: adding a
part adds no field here. Schema 2 (fastcifar 0.2: each part a field of its own) and schema 1
are read and upgraded.

Loaded with `weights_only=True`: a file that tries to run code is refused, never executed.
Every refusal is one line that names the file and what is wrong with it.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from fastcifar.errors import CheckpointError
from fastcifar.records.config_record import short
from fastcifar.records.provenance import VERSION, describe_sources
from fastcifar.records.values import is_integer, is_number

CHECKPOINT_SCHEMA = 3
# The parts every run has; "scaler" (fp16) and those of options (e.g. "ema") come on top.
REQUIRED_PARTS = ("model", "optimizer", "scheduler", "rng")
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
    IndexError,
)
PARTIAL_KEYS = {"step_losses", "correct", "examples", "first_non_finite_step", "seconds"}


@dataclass
class Checkpoint:
    config: dict[str, Any]  # the run's TrainConfig, as recorded
    parts: dict[str, Any]  # name -> state dict of each stateful part (see the docstring)
    lr_min: float
    lr_max: float
    lr_source: dict[str, Any]
    epoch: int  # epochs completed
    step_in_epoch: int  # steps done in the epoch in progress (a mid-epoch stop)
    partial: dict[str, Any]  # that epoch's totals so far (EpochTotals.to_dict())
    history: list[dict[str, Any]]  # one metrics row per completed epoch
    step_losses: list[float]  # every completed epoch's per-step losses, for the curves
    elapsed: float  # wall seconds of the run up to here, over every process
    # How the run was trained: a different world size (or per-rank batch, or loader) would
    # continue differently, and is refused; a different thread count only warned about.
    world_size: int | None
    rank_batch: int | None
    threads: int | None
    loader: str | None
    # The source of each process that trained it (provenance.segment), oldest first: empty in
    # a checkpoint saved before segments were recorded (2026-12-06).
    segments: list[dict[str, Any]] = field(default_factory=list)
    fastcifar: str = VERSION
    schema: int = CHECKPOINT_SCHEMA

    @property
    def model(self) -> dict[str, torch.Tensor]:
        """The plain module's state dict (the live weights, not an average)."""
        return self.parts["model"]

    @property
    def optimizer(self) -> dict[str, Any]:
        return self.parts["optimizer"]

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, buffer: Any) -> None:
        torch.save(self.to_payload(), buffer)


def load_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint.pt, loaded with weights_only=True and checked field by field."""
    payload = load_weights_file(path, "a checkpoint")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a fastcifar checkpoint (not a dictionary)")
    payload = _upgraded(payload)
    schema = payload.get("schema")
    if not isinstance(schema, int) or schema > CHECKPOINT_SCHEMA:
        raise CheckpointError(
            f"{path} has schema {schema!r}; "
            f"this fastcifar reads schema {CHECKPOINT_SCHEMA} or older"
        )
    names = {item.name for item in fields(Checkpoint)}
    missing = sorted(names - set(payload) - {"segments", "fastcifar", "schema"})
    parts = payload.get("parts")
    if not missing and isinstance(parts, dict):
        missing = [name for name in REQUIRED_PARTS if name not in parts]
    if missing:
        raise CheckpointError(f"{path} is not a complete checkpoint: no {', '.join(missing)}")
    checkpoint = Checkpoint(**{key: payload[key] for key in names if key in payload})
    check_fields(checkpoint, path)
    checkpoint.schema = CHECKPOINT_SCHEMA
    return checkpoint


def load_weights_file(path: Path, what: str) -> Any:
    """torch.load(weights_only=True) of `path`, every failure one line naming it: a folder, a
    missing file, a truncated one, or a pickle that asks to run code (refused by torch; we
    print our own line, not torch's advice to load it unsafely)."""
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is not a regular file: move it away")
    if path.is_file():
        _check_format(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a legacy pickle warns twice before it fails
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not {what} that fastcifar wrote: it holds Python objects beyond "
            "tensors and numbers, which are never loaded (they could run code)"
        ) from None
    except LOAD_ERRORS as error:
        raise CheckpointError(f"{path} cannot be read as {what} ({short(error)})") from None


def _check_format(path: Path, what: str) -> None:
    """One line for a file that is no torch file at all (empty, or zeros), before torch.load
    says something about pickles that would mislead; and for a torch zip whose bytes changed
    since it was written (its CRC-32s)."""
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK\x03\x04"):  # torch's zip: its CRC-32s catch changed bytes
        _check_crcs(path, what)
        return
    if head[:1] == b"\x80":  # a legacy pickle
        return
    size = path.stat().st_size
    found = "it is empty (0 bytes)" if size == 0 else f"its {size:,} bytes are no torch file"
    raise CheckpointError(f"{path} is not {what} that fastcifar wrote: {found}")


def _check_crcs(path: Path, what: str) -> None:
    """torch.load reads a damaged archive without a word (a flipped byte is a weight of
    14849): the zip's own checksums are compared first (~40 ms for 100 MB). A member whose
    checksum is 0 has none: torch writes 0 when its `compute_crc32` setting is off."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.CRC or not member.file_size:
                    _read_through(archive, member, path)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise CheckpointError(f"{path} cannot be read as {what} ({short(error)})") from None


def _read_through(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> None:
    """Read `member` to its end, where zipfile compares its CRC-32."""
    try:
        with archive.open(member) as data:
            while data.read(1 << 24):
                pass
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path} is damaged: the bytes of {member.filename} no longer match their checksum "
            "(a disk or copy error); restore it from a copy, or train again"
        ) from None


def _upgraded(payload: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (fastcifar 0.1: {"fastcifar", "config", "state": {...}}) and schema 2 (each part
    a field of its own) as schema 3."""
    state = payload.get("state")
    if "schema" not in payload and isinstance(state, dict):
        payload = {**state, "config": payload.get("config"), "fastcifar": payload.get("fastcifar")}
        payload.setdefault("step_losses", [])
        for name in ("world_size", "rank_batch", "threads", "loader"):
            payload.setdefault(name, None)  # not recorded before schema 2
        payload["schema"] = 2
    if payload.get("schema") == 2:
        parts = {name: payload.pop(name) for name in REQUIRED_PARTS if name in payload}
        scaler = payload.pop("scaler", None)
        if scaler is not None:
            parts["scaler"] = scaler
        payload = {**payload, "parts": parts, "schema": CHECKPOINT_SCHEMA}
    return payload


def check_fields(checkpoint: Checkpoint, path: Path) -> None:
    """Each field of the right type and range; `check_fits` then compares with the run."""

    def require(condition: bool, what: str) -> None:
        if not condition:
            raise CheckpointError(f"{path}: {what}")

    for name in ("config", "parts", "lr_source", "partial"):
        require(isinstance(getattr(checkpoint, name), dict), f"{name} is not a dictionary")
    for name, state in checkpoint.parts.items():
        require(isinstance(state, dict), f"{name} is not a dictionary")
    require(
        all(isinstance(t, torch.Tensor) for t in checkpoint.model.values()),
        "model holds values that are not tensors",
    )
    not_finite = [
        name
        for name, tensor in checkpoint.model.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    require(
        not not_finite,  # fastcifar saves no diverged state: this file was changed since
        f"the weights {', '.join(not_finite[:3])} are not finite (a checkpoint is only saved "
        "while everything is finite)",
    )
    for name in ("epoch", "step_in_epoch"):
        value = getattr(checkpoint, name)
        require(is_integer(value) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
    for name in ("lr_min", "lr_max", "elapsed"):
        value = getattr(checkpoint, name)
        require(is_number(value) and value >= 0, f"{name} must be a number >= 0, got {value!r}")
    require(
        isinstance(checkpoint.history, list)
        and all(
            isinstance(row, dict) and is_integer(row.get("epoch")) for row in checkpoint.history
        ),
        "history must be a list of metrics rows",
    )
    require(
        [row["epoch"] for row in checkpoint.history] == list(range(1, checkpoint.epoch + 1)),
        f"history has {len(checkpoint.history)} rows for {checkpoint.epoch} completed epochs",
    )
    require(
        set(checkpoint.partial) >= PARTIAL_KEYS
        and len(checkpoint.partial["step_losses"]) == checkpoint.step_in_epoch,
        "the totals of the epoch in progress do not match its step",
    )
    require(
        isinstance(checkpoint.step_losses, list) and all(map(is_number, checkpoint.step_losses)),
        "step_losses must be a list of numbers",
    )
    require({"torch", "numpy", "python"} <= set(checkpoint.parts["rng"]), "rng misses a generator")
    for name in ("world_size", "rank_batch", "threads"):
        value = getattr(checkpoint, name)
        require(value is None or (is_integer(value) and value >= 1), f"bad {name}: {value!r}")
    segments = checkpoint.segments
    require(
        isinstance(segments, list)
        and all(isinstance(s, dict) and {"start", "commit", "torch"} <= set(s) for s in segments),
        "segments must be a list of {start, commit, torch} records",
    )


@dataclass(frozen=True)
class TrainedHow:
    """What a checkpoint must agree with to be continued exactly (see `check_fits`)."""

    epochs: int
    steps_per_epoch: int
    world_size: int
    rank_batch: int
    threads: int
    loader: str


def check_fits(
    checkpoint: Checkpoint, now: TrainedHow, path: Path, resume_with: Callable[[int], str]
) -> list[str]:
    """CheckpointError when the run cannot continue exactly from `checkpoint` the way it is
    started now (`resume_with(world_size)`: the command that resumes it with that many
    processes); returns warnings (a thread count that differs) for the caller to show."""
    epoch, step = checkpoint.epoch, checkpoint.step_in_epoch
    if epoch > now.epochs or (epoch == now.epochs and step) or step >= now.steps_per_epoch:
        raise CheckpointError(
            f"{path} stands at epoch {epoch}, step {step}, beyond a run of {now.epochs} epochs "
            f"of {now.steps_per_epoch} steps: it is not this run's checkpoint"
        )
    if checkpoint.world_size is not None and checkpoint.world_size != now.world_size:
        processes = "process" if checkpoint.world_size == 1 else "processes"
        raise CheckpointError(
            f"{path} was trained by {checkpoint.world_size} {processes} and this is "
            f"{now.world_size}: it would not continue exactly; resume it with "
            f"{resume_with(checkpoint.world_size)}"
        )
    for name in ("rank_batch", "loader"):
        recorded = getattr(checkpoint, name)
        if recorded is not None and recorded != getattr(now, name):
            raise CheckpointError(
                f"{path} was trained with {name} {recorded}, this run has {getattr(now, name)}"
            )
    if checkpoint.threads is not None and checkpoint.threads != now.threads:
        return [
            f"warning: {path} was trained with {checkpoint.threads} CPU threads per process, "
            f"this process has {now.threads}: on a CPU the results may differ in the last bits"
        ]
    return []


def check_source(checkpoint: Checkpoint, now: dict[str, Any], path: Path) -> list[str]:
    """A warning when the run continues under another source than the one that saved
    `checkpoint` (`now`: provenance.training_source here): another commit, torch version or
    kind of device continues bit-identically only if it computes the same; summary.json keeps
    both."""
    if not checkpoint.segments:
        return []  # saved before segments were recorded: nothing to compare with
    described = describe_sources([checkpoint.segments[-1], now])
    if len(described) == 1:
        return []
    then_source, now_source = described
    return [
        f"warning: {path} was trained with {then_source} and this is {now_source}: the run "
        "continues exactly only if both compute the same; summary.json records each "
        "(provenance: segments)"
    ]
