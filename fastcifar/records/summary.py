"""summary.json as a type: `Summary`, with a schema version, built here (running, stopped,
complete: `run_complete`, `multi_complete`, `range_test_complete`) and read back here
(`read_summary`) with every field checked; a summary of fastcifar 0.1 still loads."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from fastcifar.errors import ConfigError, RunFolderError
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_record import RunKind, Status, read_json
from fastcifar.records.values import is_integer, is_number


class Scores(Protocol):
    accuracy: float
    loss: float


class Evaluated(Protocol):
    """What a summary records of an evaluation (engine.evaluation.Evaluation is one; the
    records layer sits beside the engine, not above it)."""

    plain: Scores
    tta: Scores | None
    labels: Any  # one per test image

    def headline(self) -> Scores: ...


SUMMARY_SCHEMA = 2


def _kinds(*kinds: RunKind) -> dict[str, Any]:
    return {"kinds": kinds}


RUN, MULTI, RANGE = RunKind.RUN, RunKind.MULTI, RunKind.RANGE_TEST


@dataclass
class Summary:
    """summary.json. Common fields first; the others belong to the kinds their metadata names
    and are written only for those. Numbers that are not finite are written as null."""

    kind: RunKind
    status: Status
    config: dict[str, Any]
    reason: str | None = None
    class_names: list[str] | None = field(default=None, metadata=_kinds(RUN))
    final_test_accuracy: float | None = field(default=None, metadata=_kinds(RUN))
    final_test_loss: float | None = field(default=None, metadata=_kinds(RUN))
    final_test_accuracy_tta: float | None = field(default=None, metadata=_kinds(RUN))
    final_test_loss_tta: float | None = field(default=None, metadata=_kinds(RUN))
    headline: str | None = field(default=None, metadata=_kinds(RUN))
    headline_accuracy: float | None = field(default=None, metadata=_kinds(RUN))
    epochs_completed: int | None = field(default=None, metadata=_kinds(RUN))
    total_train_seconds: float | None = field(default=None, metadata=_kinds(RUN))
    epoch_seconds: list[float] | None = field(default=None, metadata=_kinds(RUN))
    eval_seconds: list[float] | None = field(default=None, metadata=_kinds(RUN))
    total_eval_seconds: float | None = field(default=None, metadata=_kinds(RUN))
    images_per_second: float | None = field(default=None, metadata=_kinds(RUN))
    train_examples_per_epoch: int | None = field(default=None, metadata=_kinds(RUN))
    test_examples: int | None = field(default=None, metadata=_kinds(RUN))
    checkpoints_written: int | None = field(default=None, metadata=_kinds(RUN))
    resumed: bool | None = field(default=None, metadata=_kinds(RUN))
    lr_min: float | None = field(default=None, metadata=_kinds(RUN, RANGE))
    lr_max: float | None = field(default=None, metadata=_kinds(RUN, RANGE))
    lr_source: dict[str, Any] | None = field(default=None, metadata=_kinds(RUN, RANGE))
    # --time-budget: the budget, the epochs planned and the estimate behind them (wall_seconds
    # is what was used).
    time_budget: dict[str, Any] | None = field(default=None, metadata=_kinds(RUN))
    # Warm-up: compilation when compiled, else the first batch's loader work.
    warm_up_seconds: float | None = field(default=None, metadata=_kinds(RUN, MULTI))
    compile_seconds: float | None = field(default=None, metadata=_kinds(RUN, MULTI))
    wall_seconds: float | None = field(default=None, metadata=_kinds(RUN, MULTI, RANGE))
    compiled: bool | None = field(default=None, metadata=_kinds(RUN, MULTI))
    compile_mode: str | None = field(default=None, metadata=_kinds(RUN, MULTI))
    # The process's compile counts at the run's end (engine/compilation.CompileCounts): whether
    # its steps ran as CUDA graphs, and whether any graph was skipped. None: not compiled.
    compile_counts: dict[str, Any] | None = field(default=None, metadata=_kinds(RUN, MULTI))
    precision: str | None = field(default=None, metadata=_kinds(RUN, MULTI))
    precision_reason: str | None = field(default=None, metadata=_kinds(RUN, MULTI))
    device_name: str | None = field(default=None, metadata=_kinds(RUN, MULTI, RANGE))
    world_size: int | None = field(default=None, metadata=_kinds(RUN, MULTI))
    backend: str | None = field(default=None, metadata=_kinds(RUN, MULTI))
    rank_devices: list[str] | None = field(default=None, metadata=_kinds(RUN, MULTI))
    parallel: str | None = field(default=None, metadata=_kinds(MULTI))
    range_test: dict[str, Any] | None = field(default=None, metadata=_kinds(MULTI))
    groups: list[dict[str, Any]] | None = field(default=None, metadata=_kinds(MULTI))
    versions: dict[str, Any] | None = field(default=None, metadata=_kinds(RUN, MULTI, RANGE))
    provenance: dict[str, Any] | None = field(default=None, metadata=_kinds(RUN, MULTI, RANGE))
    non_finite: list[str] | None = field(default=None, metadata=_kinds())
    schema: int = SUMMARY_SCHEMA

    @property
    def config_of_run(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)

    def stopped(self, status: Status, reason: str) -> Summary:
        """This running summary, ended with `status` and why."""
        return replace(self, status=status, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for item in fields(self):
            kinds = item.metadata.get("kinds")
            value = getattr(self, item.name)
            if kinds is not None and self.kind not in kinds and value is None:
                continue
            values[item.name] = value.value if isinstance(value, Enum) else value
        return values


NUMBERS = {
    "final_test_accuracy",
    "final_test_loss",
    "final_test_accuracy_tta",
    "final_test_loss_tta",
    "headline_accuracy",
    "total_train_seconds",
    "total_eval_seconds",
    "images_per_second",
    "lr_min",
    "lr_max",
    "warm_up_seconds",
    "compile_seconds",
    "wall_seconds",
}
INTEGERS = {
    "epochs_completed",
    "train_examples_per_epoch",
    "test_examples",
    "world_size",
    "checkpoints_written",
    "schema",
}


def read_summary(folder: Path) -> Summary:
    """summary.json of a run folder, every field checked."""
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder (expected a run folder of fastcifar.train)")
    path = folder / "summary.json"
    if not path.is_file():
        raise RunFolderError(f"{path} not found: {folder} is not a run folder of fastcifar.train")
    values = read_json(path)
    if "status" not in values:
        raise RunFolderError(f"{path} is not a fastcifar summary (no status)")
    if not isinstance(values["status"], str):
        raise RunFolderError(
            f"{path} is not a fastcifar summary: its status is {values['status']!r}, not one of "
            f"{', '.join(status.value for status in Status)}"
        )
    schema = values.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SUMMARY_SCHEMA:
        raise RunFolderError(
            f"{path} has schema {schema!r}; this fastcifar reads schema {SUMMARY_SCHEMA} or older"
        )
    known = {item.name: item for item in fields(Summary)}
    try:
        kind, status = RunKind(values.get("kind", "run")), Status(values["status"])
    except ValueError as error:
        raise RunFolderError(f"{path}: {error}") from None
    if not isinstance(values.get("config"), dict):
        raise RunFolderError(f"{path}: config must be a table of settings")
    checked = {name: _checked(path, name, value) for name, value in values.items() if name in known}
    summary = Summary(**{**checked, "kind": kind, "status": status})
    try:
        summary.config_of_run  # noqa: B018 (checks every setting)
    except ConfigError as error:
        raise RunFolderError(f"{path}: bad config ({error})") from None
    return summary


def _checked(path: Path, name: str, value: Any) -> Any:
    def bad(what: str) -> RunFolderError:
        return RunFolderError(f"{path}: {name} must be {what}, got {value!r}"[:300])

    if value is None:
        return None
    if name in NUMBERS and not (is_number(value)):
        raise bad("a number")
    if name in INTEGERS and not is_integer(value):
        raise bad("an integer")
    if name == "class_names" and not (
        isinstance(value, list) and len(value) >= 2 and all(isinstance(n, str) for n in value)
    ):
        raise bad("a list of at least 2 names")
    if name in (
        "epoch_seconds",
        "eval_seconds",
        "rank_devices",
        "groups",
        "non_finite",
    ) and not isinstance(value, list):
        raise bad("a list")
    if name in ("lr_source", "range_test", "versions", "provenance") and not isinstance(
        value, dict
    ):
        raise bad("a table")
    return value


def _environment(**provenance: Any) -> dict[str, Any]:
    """The versions and the commit now; a run's summary adds the segments of its processes."""
    from fastcifar.records.provenance import source_commit, versions

    return {"versions": versions(), "provenance": {**source_commit(), **provenance}}


def sources(summary: Summary) -> list[str]:
    """The distinct sources (commit, torch, device) that trained a run, in order; one for a run
    that was never resumed, or resumed under the same source."""
    from fastcifar.records.provenance import describe_sources

    return describe_sources((summary.provenance or {}).get("segments") or [])


def tta_name(translate: bool) -> str:
    """How a run's TTA figures are labelled: "flip TTA" or "flip + translate TTA"."""
    return "flip + translate TTA" if translate else "flip TTA"


def run_complete(
    running: Summary,
    facts: dict[str, Any],
    state: Any,
    evaluation: Evaluated,
    *,
    train_examples_per_epoch: int,
    warm_up_seconds: float,
    resumed: bool,
    checkpoints_written: int,
    wall_seconds: float,
) -> Summary:
    """The summary of a complete run: `state` a TrainingState, `evaluation` its last."""
    history = state.history
    epoch_seconds = [row.epoch_seconds for row in history]
    eval_seconds = [row.eval_seconds or 0.0 for row in history]  # 0: not evaluated
    tta = evaluation.tta
    return replace(
        running,
        status=Status.COMPLETE,
        final_test_accuracy=evaluation.plain.accuracy,
        final_test_loss=evaluation.plain.loss,
        final_test_accuracy_tta=tta.accuracy if tta else None,
        final_test_loss_tta=tta.loss if tta else None,
        headline=tta_name(running.config.get("tta_translate", False)) if tta else "plain",
        headline_accuracy=evaluation.headline().accuracy,
        epochs_completed=state.epoch,
        total_train_seconds=sum(epoch_seconds),
        epoch_seconds=epoch_seconds,
        eval_seconds=eval_seconds,
        total_eval_seconds=sum(eval_seconds),
        images_per_second=train_examples_per_epoch * len(history) / max(sum(epoch_seconds), 1e-9),
        train_examples_per_epoch=train_examples_per_epoch,  # drop_last: whole batches only
        test_examples=len(evaluation.labels),
        checkpoints_written=checkpoints_written,
        resumed=resumed,
        lr_min=state.bounds.lr_min,
        lr_max=state.bounds.lr_max,
        lr_source=state.bounds.source,
        **_warm_up(facts, warm_up_seconds),
        wall_seconds=wall_seconds,
        **_environment(segments=list(state.segments)),
    )


def _warm_up(facts: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The trainer's facts, and the warm-up's time; called compilation only when compiled."""
    return {
        **facts,
        "warm_up_seconds": seconds,
        "compile_seconds": seconds if facts["compiled"] else None,
    }


def multi_complete(
    running: Summary,
    facts: dict[str, Any],
    groups: list[dict[str, Any]],
    range_test: dict[str, Any] | None,
    *,
    warm_up_seconds: float,
    wall_seconds: float,
) -> Summary:
    return replace(
        running,
        status=Status.COMPLETE,
        groups=groups,
        range_test=range_test,
        **_warm_up(facts, warm_up_seconds),
        wall_seconds=wall_seconds,
        **_environment(),
    )


def range_test_complete(
    running: Summary, bounds: Any, device_name: str, wall_seconds: float
) -> Summary:
    return replace(
        running,
        status=Status.COMPLETE,
        lr_min=bounds.lr_min,
        lr_max=bounds.lr_max,
        lr_source=bounds.source,
        device_name=device_name,
        wall_seconds=wall_seconds,
        **_environment(),
    )
