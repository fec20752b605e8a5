"""Who started the run: the command line, or Python (`fastcifar.fit`). A message names a
setting as its caller wrote it (`--max-steps 30`, or `max_steps=30`) and says how to resume in
the caller's own terms: a command to paste, or the call to make again."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class PythonCall:
    """A run started by a Python call; what it was handed that a resume needs again."""

    data: bool  # data of one's own
    model: bool  # a model of one's own


_PYTHON_CALL: ContextVar[PythonCall | None] = ContextVar("fastcifar_python_call", default=None)
_COMMAND_LINE: ContextVar[bool] = ContextVar("fastcifar_command_line", default=False)


@contextmanager
def called_from_command_line() -> Iterator[None]:
    """Within this context a command runs (run_main): messages name flags, as they do outside
    both contexts; a Python entry point (python_entry) names keywords."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def in_python() -> bool:
    # A command that calls a Python entry point on its way still speaks in flags.
    return python_call() is not None and not _COMMAND_LINE.get()


@contextmanager
def called_from_python(data: bool, model: bool) -> Iterator[None]:
    """Within this context, the run was started by a Python call (see the module docstring)."""
    token = _PYTHON_CALL.set(PythonCall(data, model))
    try:
        yield
    finally:
        _PYTHON_CALL.reset(token)


def python_entry(function: Callable[P, R]) -> Callable[P, R]:
    """`function` as a Python entry point (fit, find_lr, estimate, ...): while it runs, the run
    counts as started from Python; its `data` and `model` keywords say what a resume needs
    again. The commands call the undecorated work, so that they keep naming flags."""

    @functools.wraps(function)
    def entry(*args: P.args, **kwargs: P.kwargs) -> R:
        data = kwargs.get("data")
        # A folder's path is read as --dataset folder --data-dir is: recorded, not one's own.
        own_data = data is not None and not isinstance(data, str | os.PathLike)
        own_model = kwargs.get("model") is not None
        with called_from_python(own_data, own_model):
            return function(*args, **kwargs)

    return entry


def python_call() -> PythonCall | None:
    """The Python call that started the run; None on the command line."""
    return _PYTHON_CALL.get()


def named(name: str) -> str:
    """The setting `name` (a field name: batch_size) as its caller writes it: --batch-size on the
    command line, batch_size in Python."""
    return name if in_python() else _flag(name)


def switch(name: str) -> str:
    """The on/off setting `name` (a field name: overwrite) turned on, as its caller writes it:
    --overwrite on the command line, overwrite=True in Python."""
    return f"{name}=True" if in_python() else _flag(name)


def switch_off(name: str) -> str:
    """The on/off setting `name` turned off, as its caller writes it: --no-tta on the command
    line, tta=False in Python."""
    return f"{name}=False" if in_python() else f"--no-{name.replace('_', '-')}"


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def setting(name: str, flag_value: str, python_value: str) -> str:
    """The setting `name` (a field name: max_time) as its caller wrote it: `--max-time 2h`
    (`flag_value`) on the command line, `max_time=7200` (`python_value`) in Python."""
    if in_python():
        return f"{name}={python_value}"
    return f"{_flag(name)} {flag_value}"


def python_resume(folder: str, parallel: str | None = None) -> str:
    """The call that continues the run in `folder` from Python, naming what to pass again."""
    call = python_call()
    again = [f"resume={folder!r}"] + ([f"parallel={parallel!r}"] if parallel else [])
    if call is not None and call.data:
        again.append("data=<the same data>")
    if call is not None and call.model:
        again.append("model=<the same model>")
    return f"fastcifar.fit({', '.join(again)})"
