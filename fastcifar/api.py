"""The functions a notebook or a script calls (re-exported by `fastcifar`), and the commands
call too: `fit`, `find_lr`, `estimate`, `load_run`. Each takes the command's settings as
keyword arguments, with the same defaults and checks, and writes the same run folders.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from fastcifar.data.dataset import as_dataset
from fastcifar.data.spec import FOLDER
from fastcifar.engine.lr_range_test import RangeTestResult
from fastcifar.engine.model import ModelChoice
from fastcifar.errors import ConfigError
from fastcifar.outputs.report import Estimate
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.records.config_checks import PARALLEL_MODES
from fastcifar.records.config_file import read_toml, suggestion
from fastcifar.records.config_record import RunKind
from fastcifar.records.summary import Summary, read_summary
from fastcifar.runs.aggregation import run_folders_of
from fastcifar.runs.request import Request
from fastcifar.runs.saved_run import SavedRun, load_saved_run
from fastcifar.system.caller import named, python_entry

CONFIG_NAMES = [item.name for item in fields(TrainConfig)]
OPTION_NAMES = [item.name for item in fields(RunOptions)]


@dataclass
class RunResult:
    """What `fit` returns. For several runs (seeds, a sweep) `runs` holds each run and
    `groups` the aggregate per LRMAX; `accuracy` is then the mean of the one LRMAX's runs.
    Accuracies are fractions in [0, 1], as in summary.json: 0.9345 is the 93.45% printed."""

    folder: Path
    summary: Summary
    runs: list[RunResult] = field(default_factory=list)
    model_in_memory: nn.Module | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return self.summary.status.value

    @property
    def groups(self) -> list[dict[str, Any]] | None:
        return self.summary.groups

    @property
    def accuracy(self) -> float | None:
        """Plain test accuracy, a fraction in [0, 1] (a multi-run with one LRMAX: the mean over
        its runs)."""
        if self.summary.kind == RunKind.MULTI:
            return _group_mean(self.summary, "accuracy")
        return self.summary.final_test_accuracy

    @property
    def tta_accuracy(self) -> float | None:
        """Flip-TTA test accuracy, a fraction in [0, 1]; None without --tta."""
        if self.summary.kind == RunKind.MULTI:
            return _group_mean(self.summary, "accuracy_tta")
        return self.summary.final_test_accuracy_tta

    @property
    def lr_min(self) -> float | None:
        return self.summary.lr_min

    @property
    def lr_max(self) -> float | None:
        return self.summary.lr_max

    @property
    def train_seconds(self) -> float | None:
        return self.summary.total_train_seconds

    @property
    def eval_seconds(self) -> float | None:
        return self.summary.total_eval_seconds

    @property
    def wall_seconds(self) -> float | None:
        return self.summary.wall_seconds

    @property
    def warm_up_seconds(self) -> float | None:
        return self.summary.warm_up_seconds

    @property
    def model(self) -> nn.Module:
        """The trained model in eval mode (read from the folder when not in memory)."""
        if self.model_in_memory is None:
            self.model_in_memory = load_run(self.folder).model
        return self.model_in_memory


def _group_mean(summary: Summary, key: str) -> float | None:
    groups = summary.groups or []
    if len(groups) != 1 or not groups[0].get(key):
        return None
    return groups[0][key]["mean"]


def make_request(
    config: Any = None, data: Any = None, model: ModelChoice = None, **values: Any
) -> Request:
    """The Request of `fit`'s arguments: `config` a TrainConfig, a dict or a TOML file's path;
    `values` any TrainConfig field or run option (`out`, `resume`, `max_time`, ...)."""
    if isinstance(model, str):  # a named network: as --model names it
        values, model = {**values, "model": model}, None
    if values.get("resume") is not None:
        from fastcifar.runs.resume import BESIDE_RESUME, refuse_beside_resume

        given = sorted(name for name in values if name not in BESIDE_RESUME)
        given = given or (["config"] if config else [])  # an empty table (the command's): none
        refuse_beside_resume(given, "resume")
    for name in values:
        if name not in CONFIG_NAMES and name not in OPTION_NAMES:
            raise ConfigError(
                f"unknown setting {name!r}{suggestion(name, CONFIG_NAMES + OPTION_NAMES)}"
            )
    base = _base_config(config)
    if data is not None:
        _refuse_data_named_twice({**base, **values}, values)
    if isinstance(data, str | os.PathLike):  # a folder of images: as --dataset folder reads it
        values = {**values, "dataset": FOLDER, "data_dir": os.fspath(data)}
        data = None
    settings = {k: v for k, v in values.items() if k in CONFIG_NAMES}
    train = TrainConfig.from_dict({**base, **settings}, where="the settings")
    options = RunOptions(**{k: v for k, v in values.items() if k in OPTION_NAMES})
    _check_options(options)
    if options.time_budget is not None and train.runs > 1:
        raise ConfigError(
            f"{named('time_budget')} plans the epochs of one run, and this asks for {train.runs} "
            f"({named('seeds')}, or several {named('lr_max')}): give each run its own budget"
        )
    return Request(train, options, as_dataset(data) if data is not None else None, model)


def _base_config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, TrainConfig):
        return config.to_dict()
    if isinstance(config, dict):
        for key in config:
            if key in OPTION_NAMES:
                raise ConfigError(
                    f"config: {key!r} is a run option, not a training setting: pass it as "
                    f"fit({key}=...)"
                )
            if key not in CONFIG_NAMES:
                raise ConfigError(
                    f"config: unknown setting {key!r}{suggestion(str(key), CONFIG_NAMES)}"
                )
        return dict(config)
    if isinstance(config, str | Path):
        return read_toml(config)
    raise ConfigError(
        f"config must be a TrainConfig, a dict or a TOML file, got {type(config).__name__}"
    )


def _refuse_data_named_twice(settings: dict[str, Any], keywords: dict[str, Any]) -> None:
    """data= with a data set named too (by a keyword, even the default's, or by a config that
    names another): one would be recorded and the other trained on."""
    defaults = {"dataset": TrainConfig().dataset, "data_dir": None}
    also = sorted(
        name
        for name, plain in defaults.items()
        if settings.get(name, plain) != plain or (name == "dataset" and name in keywords)
    )
    if also:
        raise ConfigError(
            f"data= gives the data itself, and {' and '.join(also)} "
            f"{'name' if len(also) > 1 else 'names'} data to read: "
            "pass one or the other"
        )


def _check_options(options: RunOptions) -> None:
    for name in ("out", "resume"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, str | os.PathLike):
            raise ConfigError(f"{name} must be a folder's path, got {value!r}")
    if options.max_time is not None and not (
        isinstance(options.max_time, int | float) and options.max_time > 0
    ):
        raise ConfigError(
            f"max_time must be a positive number of seconds, got {options.max_time!r}"
        )
    if options.time_budget is not None and not (
        isinstance(options.time_budget, int | float) and options.time_budget > 0
    ):
        raise ConfigError(
            f"time_budget must be a positive number of seconds, got {options.time_budget!r}"
        )
    if options.max_steps is not None and not (
        isinstance(options.max_steps, int) and options.max_steps >= 1
    ):
        raise ConfigError(f"max_steps must be a positive integer, got {options.max_steps!r}")
    if options.parallel not in PARALLEL_MODES:
        raise ConfigError(f"parallel must be auto, runs or data, got {options.parallel!r}")
    if options.resume is not None and options.overwrite:
        raise ConfigError("--resume continues a run; --overwrite replaces one: choose one")


def _with_settings(function: Any, *, range_test: bool = False) -> Any:
    """`function` (fit, find_lr, estimate: `**values` stands for every setting) given the
    signature and docstring that list them: every TrainConfig field and run option as a keyword,
    with its default and help, from the one table in records/config.py. `range_test`: only
    those the range-test command has flags for."""
    signature = inspect.signature(function)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in params}
    lines = []
    for record in (TrainConfig, RunOptions):
        for item in fields(record):
            if item.name in taken or (range_test and not item.metadata.get("find_lr", True)):
                continue
            taken.add(item.name)
            keyword = inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter(item.name, keyword, default=item.default,
                                            annotation=item.type))  # fmt: skip
            lines.append(f"    {item.name} (default {item.default!r}): {item.metadata['help']}")
    function.__signature__ = signature.replace(parameters=params)
    function.__doc__ = f"{function.__doc__}\n\nSettings:\n" + "\n".join(lines)
    return function


@_with_settings
@python_entry
def fit(
    config: Any = None, *, data: Any = None, model: ModelChoice = None, **values: Any
) -> RunResult:
    """Train as `python -m fastcifar.train` does and return the result.

    `config`: a TrainConfig, a dict of settings or a TOML file (as `--config` takes); `values`:
    settings that override it (`epochs=2`, `lr_max=0.4` or a list for a sweep, `seeds=5`) and
    run options (`out`, `overwrite`, `resume`, `auto_resume`, `max_time`, `max_steps`,
    `parallel`). `data`: your own data (see `fastcifar.as_dataset`), or the path of a folder
    of 32x32 images in train/<class>/ and test/<class>/ (as `--dataset folder --data-dir`
    reads it), else CIFAR-10; `model`:
    your own nn.Module, or a class or function returning one, else the ResNet9. A stop says
    how to continue from Python (`fit(resume=..., ...)`, naming what to pass again)."""
    return execute(make_request(config, data, model, **values))


def execute(request: Request) -> RunResult:
    """Run a Request (see fit): a new run or plan, a resumed one, or one continued after a
    torchrun restart; the process group is left whatever happens."""
    from fastcifar.runs import serve
    from fastcifar.system.progress import quiet

    with quiet(request.options.quiet):
        summary, folder, model = serve.train(request)
    return _result(summary, folder, model)


def _result(summary: Summary, folder: Path, model: nn.Module | None) -> RunResult:
    children: list[RunResult] = []
    if summary.kind == RunKind.MULTI:
        for child in run_folders_of(folder):
            children.append(RunResult(child, read_summary(child)))
    return RunResult(folder, summary, children, model)


@dataclass(frozen=True)
class RangeTest:
    """What `find_lr` returns: the bounds, how they were read, the whole curve, the folder."""

    lr_min: float
    lr_max: float
    source: dict[str, Any]
    curve: RangeTestResult
    folder: Path


@_with_settings  # every setting: fit's keywords are accepted, the range test uses its own
@python_entry
def find_lr(
    config: Any = None, *, data: Any = None, model: ModelChoice = None, **values: Any
) -> RangeTest:
    """The LR range test as `python -m fastcifar.find_lr` runs it (same settings as `fit`)."""
    return range_test_of(make_request(config, data, model, **values))


def range_test_of(request: Request) -> RangeTest:
    """Run the range test a Request asks for (see find_lr)."""
    from fastcifar.runs import serve
    from fastcifar.system.progress import quiet

    with quiet(request.options.quiet):
        bounds, curve, folder = serve.range_test_alone(request)
    return RangeTest(bounds.lr_min, bounds.lr_max, bounds.source, curve, folder)


@_with_settings
@python_entry
def estimate(
    config: Any = None, *, data: Any = None, model: ModelChoice = None, **values: Any
) -> Estimate:
    """What the run would cost here, from one measured step after the warm-up (compilation
    included on a GPU); writes no run folder (CIFAR-10 is downloaded if missing). `.line()`
    says it, `.total` is in seconds."""
    return cost_of(make_request(config, data, model, **values))


def cost_of(request: Request) -> Estimate:
    """What the run a Request asks for would cost here (see estimate)."""
    from fastcifar.runs import serve

    return serve.cost(request)


@python_entry
def load_run(
    folder: str | Path,
    *,
    model: ModelChoice = None,
    device: str | None = None,
    allow_incomplete: bool = False,
) -> SavedRun:
    """The trained model of a run folder with its records, checked as `evaluate` checks them;
    a run of a model of one's own needs that `model` (class, function or module) again."""
    from fastcifar.system.device import pick_device

    return load_saved_run(
        folder, pick_device(device), model=model, allow_incomplete=allow_incomplete
    )
