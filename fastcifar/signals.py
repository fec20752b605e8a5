"""SIGINT and SIGTERM as a request to stop: the loop finishes its step, saves a checkpoint and
exits with 130 / 143, instead of dying mid-write with a folder that looks finished.

A second signal of either kind while stopping raises KeyboardInterrupt at once; every file
is written atomically, so that loses time, not data.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

from fastcifar.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while inside, SIGINT/SIGTERM set `received` instead of killing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    @property
    def requested(self) -> bool:
        return self.received is not None

    def interrupted(self, where: str, hint: str = "") -> Interrupted:
        """Interrupted("interrupted by SIGTERM" + where, the shell's exit status, hint)."""
        number = self.received or signal.SIGINT
        return Interrupted(
            f"interrupted by {signal.Signals(number).name}{where}", 128 + number, hint
        )
