"""--max-time and --max-steps: when a run must stop cleanly. The range test answers to the
deadline too (it trains no counted step, so --max-steps waits for the epochs)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastcifar.outputs.report import duration
from fastcifar.system.caller import setting


@dataclass(frozen=True)
class Limits:
    """--max-time (a deadline on time.monotonic()) and --max-steps (global step of a run)."""

    deadline: float | None = None
    max_steps: int | None = None
    max_time: float | None = None  # seconds

    @classmethod
    def of(cls, max_time: float | None, max_steps: int | None, started: float) -> Limits:
        deadline = started + max_time if max_time is not None else None
        return cls(deadline, max_steps, max_time)

    @property
    def time_limit(self) -> str:
        """--max-time as its caller wrote it: a duration on the command line, seconds in Python."""
        seconds = self.max_time or 0.0
        return setting("max_time", duration(seconds), f"{seconds:g}")

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def reached(self, step: int) -> str | None:
        """Why the run must stop before `step` (0-based global step), or None."""
        if self.max_steps is not None and step >= self.max_steps:
            return setting("max_steps", str(self.max_steps), str(self.max_steps))
        if self.out_of_time():
            return self.time_limit
        return None
