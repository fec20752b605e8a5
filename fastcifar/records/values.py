"""What a value read back from a record (config, summary, checkpoint) may be: the checks that
every reader shares, so that JSON's `true` is never taken for the integer 1."""

from __future__ import annotations

import math
from dataclasses import fields


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plain(value: object) -> object:
    """A NumPy scalar or array as the Python value it holds (np.int64(3) as 3, an array as a
    list), so that settings taken from a NumPy sweep read as the numbers they are; anything else
    as given. NumPy is not imported: a setting can only be NumPy's where NumPy is loaded."""
    if type(value).__module__.split(".")[0] == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # numpy.ma's arrays too
    if type(value) in (list, tuple):  # not a namedtuple: it is built field by field
        return type(value)(plain(item) for item in value)
    return value


def with_plain_values(record: object) -> None:
    """Every field of a frozen dataclass made plain (above), in place, before its checks."""
    for item in fields(record):  # type: ignore[arg-type]
        value = getattr(record, item.name)
        if plain(value) is not value:
            object.__setattr__(record, item.name, plain(value))
