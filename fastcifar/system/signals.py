"""SIGINT and SIGTERM as a request to stop: the loop finishes its step, saves a checkpoint and
exits with 130 / 143, instead of dying mid-write with a folder that looks finished.

Python runs a signal handler only between bytecodes of the main thread, so a signal that
arrives inside a long C++ call (a CPU convolution of many seconds) would wait for it. A watcher
thread therefore reads each signal from a wakeup pipe (`signal.set_wakeup_fd`) as it arrives:
the first is answered at once ("stopping after this step"); a second ends the process within a
second, after recording the outcome through the callbacks of `on_force_stop` (each run folder
says "interrupted"). Every file is written atomically, so that loses the work since the last
checkpoint, never a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType

from fastcifar.errors import Interrupted
from fastcifar.system.progress import warn

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while inside, SIGINT/SIGTERM set `received` instead of killing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._previous_wakeup = -1
        self._pipe: tuple[socket.socket, socket.socket] | None = None
        self._watcher: threading.Thread | None = None
        self._force_stops: list[Callable[[int], None]] = []
        self._seen = 0

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only: its own StopSignals holds them
        for number in HANDLED:
            self._previous[number] = signal.signal(number, self._handle)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._pipe = (reader, writer)
        self._previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="fastcifar-stop", daemon=True)
        self._watcher.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            reader, writer = self._pipe
            with contextlib.suppress(OSError):
                reader.shutdown(socket.SHUT_RDWR)  # ends the watcher's recv
            writer.close()
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            reader.close()
            self._pipe = None
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def on_force_stop(self, record: Callable[[int], None]) -> Iterator[None]:
        """Within the block, a second signal calls `record(signal number)` before the process
        ends (from the watcher thread, while the main thread may be in the middle of a step)."""
        self._force_stops.append(record)
        try:
            yield
        finally:
            self._force_stops.remove(record)

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        # The watcher answers every signal (a second one ends the process); the loop only
        # needs to know that one came.
        if self.received is None:
            self.received = number

    def _watch(self) -> None:
        reader = self._pipe[0]
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                if number in HANDLED:
                    self._seen += 1
                    self._answer(number)

    def _answer(self, number: int) -> None:
        name = signal.Signals(number).name
        again = "Ctrl-C again" if number == signal.SIGINT else f"{name} again"
        if self._seen == 1:
            self.received = self.received or number
            warn(f"{name}: stopping after this step ({again} to stop now)")
            return
        for record in list(self._force_stops):
            with contextlib.suppress(Exception):  # the exit must happen whatever fails here
                record(number)
        warn(f"{name} again: stopped now; the last checkpoint stands")
        os._exit(128 + number)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def interrupted(self, where: str, hint: str = "", number: int | None = None) -> Interrupted:
        """Interrupted("interrupted by SIGTERM" + where, the shell's exit status, hint); by
        signal `number` when given (another rank's), else the one received."""
        number = number or self.received or signal.SIGINT
        return Interrupted(
            f"interrupted by {signal.Signals(number).name}{where}", 128 + number, hint
        )
