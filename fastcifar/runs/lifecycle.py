"""The life of a run folder, written once for every kind of run: claim it (before any data is
loaded, so that bad input stays cheap), record config.json, say "running", hold the stop
signals and record the outcome whatever happens. A single run, each run of a multi-run and the
LR range test all go through `Lifecycle`."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastcifar.errors import DiskFullError, Diverged, RunStopped
from fastcifar.records.config_record import ConfigRecord, Status
from fastcifar.records.run_folder import RunFolder, resume_command
from fastcifar.records.summary import Summary
from fastcifar.system.distributed import Distributed
from fastcifar.system.progress import say
from fastcifar.system.signals import StopSignals


class Lifecycle:
    """A run folder from claim to outcome; see the module docstring."""

    def __init__(self, folder: RunFolder, dist: Distributed) -> None:
        self.folder, self.dist = folder, dist

    @classmethod
    def claim(cls, out: str | None, overwrite: bool, dist: Distributed, **claim: Any) -> Lifecycle:
        """Rank 0 checks --out (creating nothing yet); every rank learns the outcome."""
        claimed: list[RunFolder] = []

        def check() -> str:
            claimed.append(RunFolder.claim(out, overwrite=overwrite, **claim))
            return str(claimed[0].final)

        final = dist.from_rank_0(check)
        return cls(claimed[0] if claimed else RunFolder(Path(final), writes=False), dist)

    @classmethod
    def reopen(cls, path: Path, dist: Distributed) -> Lifecycle:
        """An unfinished run's folder, to continue it: refused at once (on every rank) while
        another process writes it, and held from `running` on."""
        dist.from_rank_0(lambda: RunFolder.reopen(path).release())
        return cls(RunFolder(path, writes=dist.is_main), dist)

    def _drop_made_of_the_weights(self) -> None:
        gone = self.folder.drop_made_of_the_weights()
        if gone and self.folder.writes:  # each writer its own folder (--parallel runs)
            say(f"removed {', '.join(gone)} of {self.folder.path}: made of its weights before "
                "this resume")  # fmt: skip

    def child(self, name: str, writes: bool | None = None) -> Lifecycle:
        return Lifecycle(self.folder.child(name, writes), self.dist)

    @contextlib.contextmanager
    def running(
        self, record: ConfigRecord | None, summary: Summary, stop: StopSignals | None = None
    ) -> Iterator[StopSignals]:
        """The folder created, `record` written (None: a resumed run keeps its own), the
        running summary, the stop signals held (or the caller's shared, so that none is lost
        between the runs of a multi-run), and the outcome recorded however it ends; then the
        folder is free for another process."""
        try:
            self.folder.create()
            if record is not None:
                self.folder.write_config(record)
            self.folder.write_summary(summary)
            if record is None:  # resumed: what evaluate and export made of the old weights goes
                self._drop_made_of_the_weights()
            signals = contextlib.nullcontext(stop) if stop is not None else StopSignals()
            force_stopped = self._force_stopped(summary)
            with signals as held, self._recorded(summary), held.on_force_stop(force_stopped):
                yield held
        finally:
            self.folder.release()

    def _force_stopped(self, summary: Summary):
        def record(number: int) -> None:
            reason = "interrupted at once by a second signal: the last checkpoint stands"
            self._record(summary.stopped(Status.INTERRUPTED, reason))
            self.folder.release()  # the process ends right after: no .lock left behind

        return record

    @contextlib.contextmanager
    def _recorded(self, summary: Summary) -> Iterator[None]:
        """Write the status of a run that does not complete, then let the exception go on; an
        --overwrite run that never checkpointed is dropped instead."""
        folder = self.folder
        try:
            yield
        except RunStopped as stopped:
            if folder.discard():
                raise stopped.with_hint(
                    f" — before the new run's first checkpoint, so {folder.final} still holds "
                    "the previous run, unchanged"
                ) from None
            status = Status.DIVERGED if isinstance(stopped, Diverged) else Status.INTERRUPTED
            self._record(summary.stopped(status, str(stopped)))
            raise
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                status, reason = Status.INTERRUPTED, "interrupted (a second signal)"
            else:
                status, reason = Status.FAILED, f"{type(error).__name__}: {error}"
            if not folder.discard():
                self._record(summary.stopped(status, reason))
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"{error.filename or folder.final}: {error.strerror}: free some space, then "
                    f"resume with {resume_command(folder.final)}"
                ) from None
            raise

    def _record(self, summary: Summary) -> None:
        # Best effort: when the disk is full this fails too, and the original error matters more.
        with contextlib.suppress(OSError):
            self.folder.write_summary(summary)
