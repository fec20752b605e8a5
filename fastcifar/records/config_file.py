"""TOML files of settings: `--print-config` writes one (every setting with its help as a
comment), `--config` and `fit(config=PATH)` read one back; flags and keywords override it."""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.records.recipes import RECIPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def to_toml(config: TrainConfig) -> str:
    """The config as TOML: every setting with its help as a comment; None (the default of every
    optional setting) is left commented out, which TOML cannot write anyway, unless the recipe
    sets it: then it is `false` (what --no-lookahead says), which read_toml reads back as None."""
    lines = ["# fastcifar training config: python -m fastcifar.train --config THIS_FILE", ""]
    preset = RECIPES[config.recipe].settings
    for item in fields(config):
        value = getattr(config, item.name)
        lines.append(f"# {item.metadata['help']}")
        if value is None and preset.get(item.name) is not None and _switched_off_by_false(item):
            lines.append(f"{item.name} = false")
            continue
        prefix = "# " if value is None else ""
        lines.append(f"{prefix}{item.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _switched_off_by_false(item: Any) -> bool:
    return item.metadata.get("off", (None, "not None"))[1] is None


def _toml_value(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)  # ints, and strings in TOML's basic-string escapes


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML config file; unknown keys are one ConfigError with a suggestion."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path} is not valid TOML ({error})") from None
    known = {f.name: f for f in fields(TrainConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(f"--config {path}: unknown setting {key!r}"
                              f"{suggestion(key, list(known))}")  # fmt: skip
    # `lookahead = false` switches off what a recipe switches on (TOML has no null).
    return {key: None if value is False and _switched_off_by_false(known[key]) else value
            for key, value in values.items()}  # fmt: skip


def suggestion(word: str, candidates: list[str]) -> str:
    """ "; did you mean 'epochs'?" for the closest candidate, or nothing."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
