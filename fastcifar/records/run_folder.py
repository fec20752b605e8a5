"""The run folder: where a run writes, how it claims the folder, and how it is read back.

Rules that keep a folder honest:
  * an --out that already holds a run is refused unless --resume or --overwrite; --overwrite
    builds the new run in a hidden staging folder and swaps it in only at its first
    checkpoint, so a new run that fails early leaves the old one untouched;
  * every file goes through `system.files` (temporary file, fsync, rename); the temporary
    files and staging folders of a killed process are removed when the folder is next used;
  * summary.json carries the status: "running" from the start (a killed run keeps it),
    then "complete", "interrupted", "diverged" or "failed" with the reason;
  * JSON is strict: a non-finite number is written as null and listed under "non_finite".
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fastcifar.errors import RunFolderError
from fastcifar.records.config_record import ConfigRecord
from fastcifar.records.metrics_row import METRIC_COLUMNS, MetricsRow
from fastcifar.records.summary import Summary
from fastcifar.system.caller import named, python_call, python_resume, setting, switch
from fastcifar.system.distributed import launch_command
from fastcifar.system.files import TEMPORARY, atomic_save, atomic_write

if TYPE_CHECKING:
    from fastcifar.records.checkpoint import Checkpoint

CHECKPOINT = "checkpoint.pt"  # an unfinished run's; model.pt is a finished one's result
RUN_MARKERS = ("config.json", "summary.json", CHECKPOINT, "model.pt")
LOCK_NAME = ".lock"  # held (flock) while a process writes the run
EVALUATION = "evaluation.json"  # python -m fastcifar.evaluate's
EXPORTS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # export's own names
# What evaluate and export made of the weights: a resume changes them, so these would describe
# weights the folder no longer holds.
OF_THE_WEIGHTS = (EVALUATION, *(f"{n}{e}" for n in EXPORTS.values() for e in ("", ".check.json")))


def resume_command(folder: Path, world_size: int | None = None, data_parallel: bool = False) -> str:
    """The command that continues the run in `folder`, as it must be typed: the running
    interpreter, torchrun's form for several processes (`world_size`: another number than this
    world's), and `--parallel data` where the runs of a plan were split over the ranks. A run
    started from Python is continued by the call that names what it needs again."""
    if python_call() is not None and world_size is None:
        return python_resume(str(folder), "data" if data_parallel else None)
    extra = " --parallel data" if data_parallel else ""
    return launch_command(f"fastcifar.train --resume {shlex.quote(str(folder))}{extra}", world_size)


def resume_hint(folder: Path) -> str:
    """What an error or a stop of the run in `folder` ends with: how to continue it."""
    return f": resume with {resume_command(folder)}"


def occupied_hint(folder: Path, complete: bool) -> str:
    """What to do about a run already in `folder`, in the caller's terms."""
    if complete:
        return (
            f"choose another {named('out')}, or pass {switch('overwrite')} to replace it "
            f"({named('resume')} continues only unfinished runs)"
        )
    resume = setting("resume", str(folder), repr(str(folder)))
    return f"pass {resume} to continue it, or {switch('overwrite')} to replace it"


def strict_json(payload: Any) -> str:
    """JSON without NaN/Infinity: such numbers become null, listed under "non_finite"."""
    replaced: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            replaced.append(f"{where or 'value'} was {value}")
            return None
        if isinstance(value, dict):
            return {key: clean(item, f"{where}.{key}".lstrip(".")) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return value

    cleaned = clean(payload, "")
    if replaced and isinstance(cleaned, dict):
        cleaned["non_finite"] = replaced
    return json.dumps(cleaned, indent=2, allow_nan=False) + "\n"


def run_status(folder: Path) -> str | None:
    """The status of the run in `folder`, "unknown" if its summary is unreadable, None if
    the folder holds no run."""
    if not any((folder / marker).exists() for marker in RUN_MARKERS):
        return None
    try:
        return str(json.loads((folder / "summary.json").read_text())["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


class RunFolder:
    """Writes one run's files; `writes=False` (ranks other than 0) makes every write a no-op.

    A run of a multi-run (`child`) lives inside its parent's folder and follows it: when the
    parent is an --overwrite staging folder, the first checkpoint of any child swaps it in."""

    def __init__(
        self,
        final: Path,
        *,
        replaces: bool = False,
        writes: bool = True,
        default_name: bool = False,
    ) -> None:
        self.final = final
        self.replaces = replaces  # --overwrite of an existing run: stage, swap in at checkpoint
        self.writes = writes
        self.default_name = default_name
        self.parent: RunFolder | None = None
        self.name_in_parent = ""
        self._path = (
            final.with_name(f".{final.name}.new-{secrets.token_hex(3)}") if replaces else final
        )
        self._lock: int | None = None

    @property
    def path(self) -> Path:
        return self.parent.path / self.name_in_parent if self.parent else self._path

    def child(self, name: str, writes: bool | None = None) -> RunFolder:
        """The folder of one run inside this one (`seed-3`, `lr-0.4/seed-0`); `writes`: unlike
        the parent's (a rank that trains this run on its own writes it)."""
        folder = RunFolder(self.final / name, writes=self.writes if writes is None else writes)
        folder.parent, folder.name_in_parent = self, name
        return folder

    @classmethod
    def claim(
        cls,
        out: str | None,
        *,
        overwrite: bool = False,
        writes: bool = True,
        occupied: str | None = None,
        occupied_complete: str | None = None,
    ) -> RunFolder:
        """Check that `out` may take a new run (creating nothing yet); None: a fresh name."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = Path("runs") / f"{stamp}-{secrets.token_hex(2)}"
            return cls(name, writes=writes, default_name=True)
        final = Path(out).expanduser()
        if final.exists() and not final.is_dir():
            raise RunFolderError(f"{named('out')} {final} is a file, not a folder")
        status = run_status(final) if final.is_dir() else None
        if status is not None and not overwrite:
            hint = (occupied_complete if status == "complete" else occupied) or occupied_hint(
                final, status == "complete"
            )
            raise RunFolderError(f"{final} already holds a run (status: {status}): {hint}")
        if status is None and final.is_dir() and any(p.name != LOCK_NAME for p in final.iterdir()):
            raise RunFolderError(
                f"{final} is not empty and holds no fastcifar run: choose another {named('out')}"
            )
        _check_writable(final)
        if status is not None:  # --overwrite: never of a run another process still writes
            _check_unlocked(final)
        _remove_stale_staging(final)
        return cls(final, replaces=status is not None, writes=writes)

    @classmethod
    def reopen(cls, folder: Path, *, writes: bool = True) -> RunFolder:
        """An existing run's folder, to continue it (--resume), locked against a second writer."""
        _check_writable(folder)
        reopened = cls(folder, writes=writes)
        reopened.lock()
        return reopened

    def create(self) -> None:
        """Create the folder and lock it against a second writer (a second --resume, say)."""
        if not self.writes:
            return
        while self.default_name:
            try:
                self._path.mkdir(parents=True)
                break
            except FileExistsError:  # two default names in the same second: draw another
                stamp = self.final.name[:15]
                self._path = self.final = self.final.with_name(f"{stamp}-{secrets.token_hex(2)}")
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()

    def lock(self) -> None:
        """Hold the folder against a second writer; being the only writer now, remove what a
        killed writer left behind (its temporary files)."""
        if not self.writes or self.parent is not None or self._lock is not None:
            return
        self._lock = _lock_folder(self.path, self.final)
        for stale in self.path.rglob(".*.tmp"):
            if TEMPORARY.fullmatch(stale.name) and stale.is_file():
                stale.unlink(missing_ok=True)

    def release(self) -> None:
        """Let another process write here (the run is over, however it ended), leaving no
        .lock behind: it is removed while still held (see _lock_folder for why that is safe);
        only a killed process leaves one, which the next writer takes over."""
        if self._lock is not None:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.release()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, record: ConfigRecord) -> None:
        self.write_json("config.json", record.to_dict())

    def write_summary(self, summary: Summary) -> None:
        payload = summary.to_dict()
        self.write_json("summary.json", payload)

    def write_json(self, name: str, payload: Any) -> None:
        if self.writes:
            text = strict_json(payload)
            atomic_write(self.path / name, text)

    def save(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """A binary file (torch.save, savefig ...) written through an in-memory buffer."""
        if self.writes:
            atomic_save(self.path / name, write)

    def write_metrics(self, history: list[MetricsRow]) -> None:
        """metrics.csv, rewritten whole each epoch: a crash leaves the previous complete file."""
        if not self.writes:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({key: _csv_value(value) for key, value in row.to_dict().items()})
        atomic_write(self.path / "metrics.csv", buffer.getvalue())

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def checkpoint(self) -> Checkpoint | None:
        """The run's checkpoint, loaded and checked (records/checkpoint.py), or None when it
        has saved none yet."""
        from fastcifar.records.checkpoint import load_checkpoint  # torch: only when there is one

        path = self.checkpoint_path
        return load_checkpoint(path) if path.exists() else None

    def drop_made_of_the_weights(self) -> list[str]:
        """Remove what evaluate and export made of the weights a resume is about to change;
        the names removed."""
        gone = [name for name in OF_THE_WEIGHTS if (self.path / name).is_file()]
        if self.writes:
            for name in gone:
                (self.path / name).unlink()
        return gone

    def drop_checkpoint(self) -> None:
        """A complete run's checkpoint: model.pt is its result."""
        if self.writes:
            self.checkpoint_path.unlink(missing_ok=True)

    def save_checkpoint(self, write: Callable[[BinaryIO], object]) -> None:
        """checkpoint.pt; the first one of an --overwrite run swaps its top folder into place."""
        self.save(CHECKPOINT, write)
        top = self
        while top.parent is not None:
            top = top.parent
        if top.replaces and top.writes:
            top._swap_in()

    def _swap_in(self) -> None:
        old = self.final.with_name(f".{self.final.name}.old-{secrets.token_hex(3)}")
        # Held across the renames: a --resume of the old run started since the claim refuses.
        held = _lock_folder(self.final, self.final)
        try:
            os.replace(self.final, old)
            os.replace(self._path, self.final)
        finally:
            os.close(held)
        self._path, self.replaces = self.final, False
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> bool:
        """Remove the staging folder of an --overwrite run that never checkpointed; True when
        the previous run was therefore kept."""
        if self.replaces and self.writes and self.parent is None:
            shutil.rmtree(self._path, ignore_errors=True)
            return True
        return False


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _lock_folder(folder: Path, name: Path) -> int:
    """An exclusive lock on `folder`'s .lock file, as an open descriptor (closing it releases
    the lock); RunFolderError when another process holds it. A holder removes the file before
    it lets go (RunFolder.release), so a lock taken on a file that is no longer the one at the
    path is worth nothing: it is dropped and taken again on the file that is."""
    path = folder / LOCK_NAME
    while True:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunFolderError(
                f"{name} is in use by another fastcifar process: wait for it, or stop it"
            ) from None
        if _same_file(descriptor, path):
            return descriptor
        os.close(descriptor)


def _check_unlocked(folder: Path) -> None:
    """RunFolderError when a live process holds `folder`; else nothing is left behind."""
    descriptor = _lock_folder(folder, folder)
    (folder / LOCK_NAME).unlink(missing_ok=True)
    os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _remove_stale_staging(final: Path) -> None:
    """The staging (`.NAME.new-*`) and swapped-out (`.NAME.old-*`) folders of an --overwrite
    whose process was killed; one that a live process holds is left alone."""
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f".{final.name}.*-*"):
        pattern = rf"\.{re.escape(final.name)}\.(new|old)-[0-9a-f]{{6}}"
        if not (stale.is_dir() and re.fullmatch(pattern, stale.name)):
            continue
        if ".old-" in stale.name and not final.exists():
            continue  # killed between the renames of a swap: the only copy of the old run
        if (stale / LOCK_NAME).exists():
            try:
                _check_unlocked(stale)
            except RunFolderError:
                continue  # a live process writes there
        shutil.rmtree(stale, ignore_errors=True)


def _check_writable(folder: Path) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunFolderError(f"cannot create {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write to {existing}: permission denied")
