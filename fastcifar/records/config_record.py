"""The kinds of run and their statuses (enums), and `ConfigRecord`: config.json, one shape for
every kind of run, with a schema version, read back here with every field checked. Folders of
fastcifar 0.1 (schema 1: a bare config.json for a single run) still load; anything else is one
line naming the file. summary.json is the record of records/summary.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fastcifar.errors import ConfigError, RunFolderError, first_line
from fastcifar.records.config import TrainConfig

CONFIG_SCHEMA = 2


class RunKind(str, Enum):
    RUN = "run"  # one training run
    MULTI = "multi"  # several runs: seeds, an LR sweep
    RANGE_TEST = "range_test"  # find_lr


class Status(str, Enum):
    RUNNING = "running"  # also what a killed process leaves
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # a stop signal or a limit: resumable
    DIVERGED = "diverged"
    FAILED = "failed"


@dataclass(frozen=True)
class ConfigRecord:
    """config.json: one shape for every kind of run."""

    kind: RunKind
    config: dict[str, Any]  # TrainConfig.to_dict(), data_dir resolved
    data: dict[str, Any] | None = None  # Dataset.describe()
    model: str = "ResNet9"  # a named network's class, or a custom model's qualified name
    architecture: str | None = None  # engine.model.architecture_of; None: recorded before it
    schema: int = CONFIG_SCHEMA

    @property
    def train_config(self) -> TrainConfig:
        # A setting added after the run was recorded had its plain default then, whatever its
        # recipe sets now (airbench's padding became reflect): a resume trains as it began.
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **self.config})

    @property
    def custom_model(self) -> bool:
        return "." in self.model  # module.Class: engine.model.model_name

    @property
    def own_data(self) -> bool:
        return bool(self.data) and self.data.get("source") == "arrays"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind.value,
            "config": self.config,
            "data": self.data,
            "model": self.model,
            "architecture": self.architecture,
        }


def read_config(folder: Path) -> ConfigRecord:
    """config.json of a run folder, in any shape fastcifar has written."""
    path = folder / "config.json"
    values = read_json(path)
    try:
        if "schema" not in values and "config" not in values:  # 0.1: a bare single-run config
            values = {"kind": "run", "config": values}
        elif "schema" not in values:  # 0.1: {"kind": "multi", "config", "seeds", "lr_maxes"}
            lr_maxes = values.get("lr_maxes") or [values["config"].get("lr_max")]
            config = {
                **values["config"],
                "seeds": int(values.get("seeds", 1)),
                "lr_max": lr_maxes if len(lr_maxes) > 1 else lr_maxes[0],
            }
            values = {"kind": values.get("kind", "multi"), "config": config}
        record = ConfigRecord(
            kind=RunKind(values["kind"]),
            config=values["config"],
            data=values.get("data"),
            model=str(values.get("model", "ResNet9")),
            architecture=_architecture(values.get("architecture")),
            schema=int(values.get("schema", 1)),
        )
        if record.schema > CONFIG_SCHEMA:
            raise RunFolderError(
                f"{path} has schema {record.schema}; this fastcifar reads {CONFIG_SCHEMA} or older"
            )
        record.train_config  # noqa: B018 (checks every setting)
        if record.data is not None:
            _check_data(record.data)
    except ConfigError as error:  # a ValueError too: it goes first
        raise RunFolderError(f"{path}: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise RunFolderError(f"{path} is not a fastcifar config ({short(error)})") from None
    return record


def _architecture(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"architecture must be a digest, got {value!r}"[:200])
    return value


def _check_data(data: Any) -> None:
    """What a run recorded of its data: a table whose normalisation has 3 means and 3 stds
    (what evaluate and predict normalise with)."""
    if not isinstance(data, dict):
        raise TypeError(f"data must be a table, got {data!r}"[:200])
    normalisation = data.get("normalisation")
    if not isinstance(normalisation, dict) or not all(
        isinstance(normalisation.get(key), list)
        and len(normalisation[key]) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in normalisation[key])
        for key in ("mean", "std")
    ):
        raise ValueError("data.normalisation must hold 3 numbers for mean and for std")


def read_json(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunFolderError(f"{path} cannot be read as JSON ({short(error)})") from None
    if not isinstance(values, dict):
        raise RunFolderError(f"{path} is not a fastcifar record (not a JSON object)")
    return values


def short(error: BaseException) -> str:
    text = first_line(error)
    return f"{type(error).__name__}: {text}".strip(": ")
