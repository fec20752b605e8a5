"""A command's module that is also its Python function: `fastcifar.evaluate(run, tta=True)`
calls what `python -m fastcifar.evaluate RUN --tta` runs, under one name. (A package attribute
holding the function would be replaced by the module the moment the command is imported.)

The module shows the function's real signature and docstring (those of `target`, where its
keywords are declared) to `help()`, `inspect.signature` and a notebook's completion; they are
looked up when asked for, not at import, so that `--help` answers without importing torch.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from fastcifar.errors import ConfigError


def callable_module(name: str, function: Callable[..., Any], target: str) -> None:
    """Make the module `name` callable as `function`, whose keywords are those of `target`
    ("package.module:function")."""
    module = sys.modules[name]
    command_text = module.__doc__ or ""

    @functools.cache
    def real() -> Callable[..., Any]:
        where, attribute = target.split(":")
        return getattr(importlib.import_module(where), attribute)

    class Command(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            _check_keywords(function.__name__, inspect.signature(real()), kwargs)
            return function(*args, **kwargs)

        @property
        def __signature__(self) -> inspect.Signature:
            return inspect.signature(real())

        @property
        def __doc__(self) -> str:  # type: ignore[override]
            return (
                f"{function.__name__}{inspect.signature(real())}\n\n"
                f"{inspect.cleandoc(real().__doc__ or '')}\n\n"
                f"The command (python -m {module.__spec__.name if module.__spec__ else name}):"
                f"\n\n{command_text}"
            )

    module.__class__ = Command


def _check_keywords(name: str, signature: inspect.Signature, given: dict[str, Any]) -> None:
    """An unknown keyword is one ConfigError with the nearest known one, as a mistyped flag."""
    known = [p.name for p in signature.parameters.values() if p.kind is not p.VAR_POSITIONAL]
    for keyword in given:
        if keyword not in known:
            close = difflib.get_close_matches(keyword, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{name}() has no setting {keyword!r}{hint}")
