"""One FFCV dataset write, made to end cleanly on Ctrl-C or SIGTERM: FFCV's worker processes
ended, its shared memory freed, its queues let go (see `SupervisedWrite`). Imported by
fastcifar.data.loaders.beton, after FFCV itself has been found importable."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.queues import Queue
from multiprocessing.shared_memory import SharedMemory
from types import FrameType

import ffcv.writer as ffcv_writer
from ffcv.writer import DatasetWriter
from tqdm import tqdm

from fastcifar.errors import BetonError
from fastcifar.system.signals import HANDLED as STOP_SIGNALS  # FFCV's workers leave them to us

__all__ = ["STOP_SIGNALS", "SupervisedWrite", "ffcv_writer"]


class SupervisedWrite:
    """One FFCV write, made to end cleanly. The block stands in for ffcv.writer's `Process`,
    `tqdm` and `sleep` (its main loop's poll) to label the bar, know the workers and hold stop
    signals: the exception of the handler that was there (Ctrl-C: KeyboardInterrupt) is raised at
    the poll, because raised elsewhere, e.g. in logging's after-fork hook as a worker starts,
    Python drops it and the write runs on. A second signal raises at once. On any exception the
    block ends the workers, lets their queues go and unlinks FFCV's shared memory, all of which
    FFCV leaves behind. Signals are held only when writing from the main thread."""

    def __init__(self, writer: DatasetWriter, label: str) -> None:
        self.writer, self.label = writer, label
        self.workers: list[_Worker] = []
        self.queues: list[Queue] = []
        self.bars: list[tqdm] = []
        self.replaced: dict[str, Callable] = {}
        self.handlers: dict[int, object] = {}
        self.stop: BaseException | None = None
        self.stopping = False

    def __enter__(self) -> None:
        ours = {"Process": self._worker, "tqdm": self._progress_bar, "sleep": self._poll}
        self.replaced = {name: getattr(ffcv_writer, name) for name in ours}
        for name, replacement in ours.items():
            setattr(ffcv_writer, name, replacement)
        if threading.current_thread() is threading.main_thread():
            self.handlers = {number: signal.signal(number, self._hold) for number in STOP_SIGNALS}

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is not None or self.stop is not None:
                self.stopping = True
                self._stop()
        finally:
            for name, original in self.replaced.items():
                setattr(ffcv_writer, name, original)
            for number, handler in self.handlers.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if self.stop is not None and kind is None:
            raise self.stop  # it came after the last poll: the beton is complete but unwanted

    def _hold(self, number: int, frame: FrameType | None) -> None:
        if self.stopping:
            return  # the cleanup takes at most a few seconds: let it finish
        if self.stop is not None:
            raise self.stop
        handler = self.handlers[number]
        if handler == signal.SIG_IGN:
            return
        if not callable(handler):  # the default action, termination, once the cleanup is done
            self.stop = SystemExit(128 + number)
            return
        try:
            handler(number, frame)
        except BaseException as error:
            self.stop = error

    def _poll(self, seconds: float) -> None:
        self.replaced["sleep"](seconds)
        if self.stop is not None:
            raise self.stop
        # A worker that failed (a full disk, say) never counts its records: FFCV would wait on.
        failed = [worker.exitcode for worker in self.workers if worker.exitcode not in (None, 0)]
        if failed:
            raise BetonError(
                f"{self.label}: an FFCV writer process failed (exit status {failed[0]}; its "
                f"error is above){_space_left(self.writer.fname)}"
            )

    def _worker(self, target: Callable, args: tuple) -> _Worker:
        worker = _Worker(target=target, args=args, daemon=True)
        self.workers.append(worker)
        self.queues = [arg for arg in args if isinstance(arg, Queue)]
        return worker

    def _progress_bar(self, total: int, **options: object) -> tqdm:
        # A bar redrawn with carriage returns is noise in a log file or CI: one line there.
        quiet = not sys.stderr.isatty()
        if quiet:
            print(f"{self.label}: {total:,} records", file=sys.stderr, flush=True)
        bar = tqdm(total=total, desc=self.label, unit="record", disable=quiet, **options)
        self.bars.append(bar)
        return bar

    def _stop(self) -> None:
        for bar in self.bars:
            bar.close()  # so that whatever is printed next starts on a line of its own
        for worker in self.workers:
            _end(worker)
        for queue in self.queues:
            queue.cancel_join_thread()  # nobody will read its chunks: exit must not wait on them
        memory = getattr(self.writer, "metadata_sm", None)
        if isinstance(memory, SharedMemory):
            with suppress(BufferError):
                memory.close()
            with suppress(FileNotFoundError):
                memory.unlink()


class _Worker(multiprocessing.Process):
    """An FFCV writer worker that leaves SIGINT and SIGTERM to the main process, which ends it:
    Ctrl-C reaches the whole process group, and each worker would print a traceback of its own.
    It also dies with the main process, even one killed by SIGKILL, which no handler sees."""

    def start(self) -> None:
        self.writer_pid = os.getpid()
        # Blocked across the fork, so that neither reaches the child before run() sets them up.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def run(self) -> None:
        _die_with(self.writer_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # terminate() ends it at once, silently
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        super().run()


def _space_left(path: str) -> str:
    """'; the disk ... is full' where the write's folder has less than a few MB left."""
    folder = os.path.dirname(os.path.abspath(path))
    with suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < 64 * 2**20:
            return f"; the disk holding {folder} has {free / 2**20:.1f} MB left: free some space"
    return ""


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(writer_pid: int) -> None:
    """On Linux, have the kernel SIGKILL this worker when the writing process dies: a killed
    write_beton then leaves no worker asleep with its output pipes open (a `| tee` would wait
    forever) or holding FFCV's shared memory."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != writer_pid:  # it died before the request was in place
        os._exit(1)


def _end(worker: multiprocessing.Process) -> None:
    if worker.is_alive():  # also reaps one that has exited; False for one never started
        worker.terminate()
        worker.join(timeout=2)
    if worker.is_alive():
        worker.kill()
        worker.join()
