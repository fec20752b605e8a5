"""--time-budget: the number of epochs that fits a budget of wall time on this machine, planned
before the run starts from what `--estimate` measures (one training step as the run takes it,
the evaluation's share of it, the range test's steps) and the time the set-up already took;
the run then trains One Cycle over that many epochs and records the plan in summary.json.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from fastcifar.errors import ConfigError
from fastcifar.outputs.report import Estimate, duration
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_checks import MAX_EPOCHS
from fastcifar.records.recipes import recorded_accuracy
from fastcifar.system.caller import named, setting
from fastcifar.system.progress import say
from fastcifar.training.trainer import Trainer, measure_step


@dataclass(frozen=True)
class BudgetPlan:
    budget_seconds: float
    epochs: int
    seconds_per_step: float  # measured
    set_up_seconds: float  # data, build and the measured step, before the plan
    training_seconds: float  # the estimate of the planned epochs
    evaluation_seconds: float
    range_test_seconds: float

    @property
    def planned_seconds(self) -> float:
        fixed = self.set_up_seconds + self.range_test_seconds
        return fixed + self.training_seconds + self.evaluation_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "planned_seconds": self.planned_seconds}

    def line(self, config: TrainConfig, model_name: str = "") -> str:
        """The plan in a line, with what recorded runs of the recipe reached at its length
        where they are comparable; `model_name` the trainer's (a model of one's own has a
        dot in it)."""
        recorded = recorded_accuracy(config.recipe, self.epochs)
        known = f"; {recorded}" if recorded and _comparable(config, model_name) else ""
        return (
            f"time budget {duration(self.budget_seconds)}: {self.epochs} epoch(s) fit (~"
            f"{duration(self.planned_seconds)}: {duration(self.training_seconds)} training at "
            f"{self.seconds_per_step:.3g} s/step, {duration(self.evaluation_seconds)} evaluation, "
            f"{duration(self.range_test_seconds)} LR range test, {duration(self.set_up_seconds)} "
            f"set-up){known}"
        )


def _comparable(config: TrainConfig, model_name: str) -> bool:
    """The records are of the recipes' own networks on the whole of CIFAR-10: another network
    (another width, --model, a model of one's own) or data (a slice, another set) is another
    problem."""
    network = TrainConfig.from_dict({"recipe": config.recipe}).model
    same_network = config.model == network and config.width == 64 and "." not in model_name
    return same_network and config.dataset == "cifar10" and not config.train_subset


@dataclass(frozen=True)
class TimeBudget:
    """A single run's `Setup.plan` under --time-budget: the config (and the trainer's) with the
    epochs that fit `seconds`, the plan said and kept for summary.json."""

    seconds: float

    def __call__(self, trainer: Trainer, config: TrainConfig, started: float) -> TrainConfig:
        plan = plan_budget(trainer, self.seconds, started)
        trainer.config = replace(trainer.config, epochs=plan.epochs)
        trainer.budget_plan = plan.to_dict()
        say(plan.line(config, trainer.model_name))
        return replace(config, epochs=plan.epochs)


@dataclass(frozen=True)
class KeptPlan:
    """A continued --time-budget run's `Setup.plan`: the plan it started with, kept for its
    summary (its recorded config holds the planned epochs already)."""

    plan: dict[str, Any]

    def __call__(self, trainer: Trainer, config: TrainConfig, started: float) -> TrainConfig:
        trainer.budget_plan = self.plan
        return config


def plan_budget(trainer: Trainer, budget: float, started: float) -> BudgetPlan:
    """The most epochs whose estimate, after the set-up since `started` (time.perf_counter),
    fits `budget` seconds; ConfigError when not even a One Cycle of 3 steps does. Under
    torchrun every rank plans from rank 0's figures: each rank's own clock could plan other
    epochs, and ranks training different epochs would wait on each other's collectives."""
    here = (measure_step(trainer), time.perf_counter() - started)  # every rank steps
    seconds, set_up = trainer.dist.from_rank_0(lambda: here)
    per_epoch = trainer.steps_per_epoch
    most = min(int(budget / max(seconds * per_epoch, 1e-9)) + 1, MAX_EPOCHS)
    for epochs in range(most, 0, -1):
        if epochs * per_epoch < 3:
            break
        cost = _estimate(trainer, seconds, epochs)
        if set_up + cost.training + cost.evaluation + cost.range_test <= budget:
            return BudgetPlan(budget, epochs, seconds, set_up, cost.training, cost.evaluation,
                              cost.range_test)  # fmt: skip
    one = _estimate(trainer, seconds, 1)
    range_test = f", after a range test of {duration(one.range_test)}" if one.range_test else ""
    raise ConfigError(
        f"a time budget of {setting('time_budget', f'{budget:g}s', f'{budget:g}')} fits no "
        f"One Cycle here: the set-up took {duration(set_up)} and one epoch takes ~"
        f"{duration(one.training + one.evaluation)} ({per_epoch} steps of {seconds:.3g} s, then "
        f"the evaluation{range_test}); raise {named('time_budget')}, or train on fewer images "
        f"({named('train_subset')})"
    )


def _estimate(trainer: Trainer, seconds: float, epochs: int) -> Estimate:
    config = replace(trainer.config, epochs=epochs)
    steps = epochs * trainer.steps_per_epoch
    range_steps = config.resolved_range_test_steps(steps) if config.needs_range_test else 0
    return Estimate.of(
        seconds,
        steps=steps,
        runs=1,
        epochs=epochs,
        batch=config.batch_size,
        test_images=len(trainer.data.test),
        tta=config.tta,
        tta_translate=config.tta_translate,
        eval_every=config.eval_every,
        range_test_steps=range_steps,
    )
