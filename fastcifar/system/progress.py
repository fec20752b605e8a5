"""Progress output that suits where it goes: live bars on a terminal, plain lines in a log.

On a terminal, tqdm bars (nested bars vanish when done). When stderr is a file or a pipe, no
bar is drawn at all, because bars there become walls of carriage returns and cursor moves;
the caller's own lines (one per epoch) tell the story instead. Under torchrun only rank 0
speaks: `silence()` turns both off for the other ranks. `quiet()` keeps a run of `fit(...,
quiet=True)` (or `--quiet`) to its warnings and errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
_silenced = False
_quiet: ContextVar[bool] = ContextVar("fastcifar_quiet", default=False)


def silence() -> None:
    """No bars and no lines from this process (the non-zero ranks of a torchrun job)."""
    global _silenced
    _silenced = True


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Within this context (when `on`): no bars and no lines; warnings still go to stderr."""
    token = _quiet.set(on or _quiet.get())
    try:
        yield
    finally:
        _quiet.reset(token)


def bars_enabled() -> bool:
    return not _silenced and not _quiet.get() and sys.stderr.isatty()


def progress(
    items: Iterable[Item],
    description: str,
    *,
    unit: str = "it",
    nested: bool = False,
    total: int | None = None,
    initial: int = 0,
) -> Iterator[Item]:
    """`items`, with a bar on a terminal; nested bars are removed when they finish. `initial`:
    items done before these (a resumed epoch's bar starts where it stopped)."""
    if not bars_enabled():
        yield from items
        return
    with tqdm(
        items, desc=description, unit=unit, leave=not nested, total=total, initial=initial
    ) as bar:
        yield from bar


def say(line: str) -> None:
    """One line on stdout, above any bar in progress (nothing on a silenced rank)."""
    if _silenced or _quiet.get():
        return
    if bars_enabled():
        tqdm.write(line, file=sys.stdout)
    else:
        print(line, flush=True)


def warn(line: str) -> None:
    """One line on stderr (nothing on a silenced rank)."""
    if not _silenced:
        print(line, file=sys.stderr, flush=True)
