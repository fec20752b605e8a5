"""What a value read back from a record (config, summary, checkpoint) may be: the checks that
every reader shares, so that JSON's `true` is never taken for the integer 1."""

from __future__ import annotations

import math


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
