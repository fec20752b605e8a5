"""--time-budget: the epochs planned from a measured step, the evaluation and the range test
before the run starts, recorded with the plan; from the command line and from Python; a budget
that fits no One Cycle, or several runs, is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fastcifar
from fastcifar.errors import ConfigError
from fastcifar.records.recipes import recorded_accuracy
from fastcifar.runs import budget
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, WIDTH, exit_code

DATA = synthetic_cifar(64, 32)
SLICE = ["--train-subset", "48", "--batch-size", "16", "--test-subset", "32", "--lr-max", "0.05",
         "--no-plots", "--device", "cpu", *NARROW]  # fmt: skip


@pytest.fixture
def steady_step(monkeypatch):
    """A measured step of 0.5 s, whatever else runs on this machine."""
    monkeypatch.setattr(budget, "measure_step", lambda trainer: 0.5)


def test_the_command_trains_the_epochs_that_fit_and_records_the_plan(tmp_path, steady_step, capsys):
    out = tmp_path / "run"
    assert exit_code([*SLICE, "--time-budget", "20", "--out", str(out)], DATA) == 0
    summary = json.loads((out / "summary.json").read_text())
    plan = summary["time_budget"]
    # 3 steps an epoch at 0.5 s and the evaluation's share: ~2 s an epoch, so 10 epochs after a
    # set-up under a second, fewer after a slow one (a loaded machine: seconds).
    assert plan["budget_seconds"] == 20 and plan["seconds_per_step"] == 0.5
    assert 4 < plan["epochs"] <= 10 and plan["planned_seconds"] <= 20
    assert summary["epochs_completed"] == plan["epochs"]
    assert summary["config"]["epochs"] == plan["epochs"]  # config.json's too: resumable as is
    out_text = capsys.readouterr().out
    assert f"time budget 20.0 s: {plan['epochs']} epoch(s) fit" in out_text
    assert "time budget 20.0 s" in out_text.strip().splitlines()[-1]


def test_a_stopped_budget_run_continues_its_plan(tmp_path, steady_step, capsys):
    """--auto-resume with the same budget (as a torchrun restart repeats the command)
    continues the planned epochs, and --resume too; the summary keeps the plan."""
    out = tmp_path / "run"
    argv = [*SLICE, "--time-budget", "12", "--out", str(out)]
    assert exit_code([*argv, "--max-steps", "2"], DATA) == 0
    planned = json.loads((out / "summary.json").read_text())["time_budget"]
    other = [*SLICE, "--time-budget", "13", "--out", str(out), "--auto-resume"]
    assert exit_code(other, DATA) == 2  # another budget: another run, refused there
    assert "holds a run of another config (epochs differ)" in capsys.readouterr().err
    assert exit_code([*argv, "--auto-resume", "--max-steps", "4"], DATA) == 0
    assert f"resuming {out} at step" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["time_budget"] == planned
    assert exit_code(["--resume", str(out)], DATA) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["time_budget"] == planned
    assert summary["epochs_completed"] == planned["epochs"]


def test_the_estimate_of_a_budget_run_is_of_the_epochs_it_plans(
    tmp_path, steady_step, monkeypatch, capsys
):
    from fastcifar.runs import setup

    monkeypatch.setattr(setup, "measure_step", lambda trainer: 0.5)
    monkeypatch.chdir(tmp_path)
    assert exit_code([*SLICE, "--time-budget", "20", "--estimate"], DATA) == 0
    printed = capsys.readouterr().out
    planned = int(printed.split("time budget 20.0 s: ")[1].split(" epoch(s) fit")[0])
    assert 4 < planned <= 10  # as the run above plans it, not the configured 24 epochs
    assert f"({planned * 3 * 0.5:.1f} s training, " in printed  # 3 steps an epoch
    settings = dict(data=DATA, train_subset=48, batch_size=16, test_subset=32, lr_max=0.05)
    estimate = fastcifar.estimate(**settings, device="cpu", time_budget=20, width=WIDTH)
    assert 4 * 3 * 0.5 < estimate.training <= 10 * 3 * 0.5 and estimate.total <= 20
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_every_rank_plans_from_rank_0s_figures(steady_step):
    """This rank measured 0.5 s a step; rank 0 measured 1.5 s and took 2 s to set up: the plan
    is rank 0's, so that no rank trains epochs the others do not."""
    from types import SimpleNamespace

    from fastcifar.records.config import TrainConfig

    class Ranks:
        def from_rank_0(self, work):
            work()  # this rank's own figures, sent nowhere
            return (1.5, 2.0)

    trainer = SimpleNamespace(config=TrainConfig(lr_max=0.05, test_subset=32), steps_per_epoch=3,
                              data=SimpleNamespace(test=[0] * 32), dist=Ranks())  # fmt: skip
    plan = budget.plan_budget(trainer, 30, started=0.0)
    assert (plan.seconds_per_step, plan.set_up_seconds) == (1.5, 2.0)
    assert plan.planned_seconds <= 30 < plan.planned_seconds + 3 * 1.5 * 1.5


def test_python_takes_seconds_and_plans_the_same(tmp_path, steady_step):
    result = fastcifar.fit(data=DATA, train_subset=48, batch_size=16, test_subset=32,
                           lr_max=0.05, plots=False, device="cpu", time_budget=12,
                           width=WIDTH, out=str(tmp_path / "run"))  # fmt: skip
    plan = result.summary.time_budget
    assert plan["budget_seconds"] == 12 and result.summary.epochs_completed == plan["epochs"] >= 1


def test_a_budget_too_small_for_one_cycle_is_one_line(tmp_path, steady_step, capsys):
    out = tmp_path / "run"
    assert exit_code([*SLICE, "--time-budget", "1s", "--out", str(out)], DATA) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: a time budget of --time-budget 1s fits no One Cycle here")
    assert "raise --time-budget" in error and "\n" not in error
    with pytest.raises(ConfigError, match="raise time_budget, or train on fewer images"):
        fastcifar.fit(data=DATA, train_subset=48, batch_size=16, test_subset=32, lr_max=0.05,
                      plots=False, device="cpu", time_budget=1,
                      out=str(tmp_path / "p"))  # fmt: skip


def test_a_budget_plans_one_run_not_several():
    with pytest.raises(ConfigError, match="time_budget plans the epochs of one run"):
        fastcifar.fit(seeds=2, time_budget=60)
    with pytest.raises(ConfigError, match="time_budget must be a positive number of seconds"):
        fastcifar.fit(time_budget=-5)


def test_the_plan_quotes_the_recorded_runs_nearest_its_length():
    assert recorded_accuracy("assignment", 24).startswith("recorded at 24 epochs: 93.84%")
    assert "no run of assignment at 30 epochs is recorded; recorded at 24 epochs" in (
        recorded_accuracy("assignment", 30)
    )
    between = recorded_accuracy("assignment", 18)  # the lengths on both sides
    assert "at 12 epochs 92.45%" in between and "at 24 epochs 93.84%" in between
    assert recorded_accuracy("fast", 12).startswith("recorded at 12 epochs: 93.41% ± 0.02%")
    assert "at 10 epochs 92.84%" in recorded_accuracy("fast", 11)


def test_the_plan_quotes_records_only_of_the_recipes_own_network_on_all_of_cifar10():
    from fastcifar.records.config import TrainConfig

    plan = budget.BudgetPlan(3600, 24, 0.5, 1.0, 3000.0, 100.0, 60.0)
    assert "; recorded at 24 epochs: 93.84%" in plan.line(TrainConfig())
    assert "recorded" not in plan.line(TrainConfig(width=WIDTH))  # another network's run
    assert "recorded" not in plan.line(TrainConfig(train_subset=1024))  # a slice
    assert "recorded" not in plan.line(TrainConfig(dataset="cifar100"))
    assert "recorded" not in plan.line(TrainConfig(model="airbench", whitening_init=True))
    assert "recorded" not in plan.line(TrainConfig(), "tests.test_api.TinyNet")  # one's own
    airbench = TrainConfig.from_dict({"recipe": "airbench"})  # its network: its records
    ten = budget.BudgetPlan(3600, 10, 0.5, 1.0, 3000.0, 100.0, 60.0)
    assert "; recorded at 10 epochs: 93.39%" in ten.line(airbench, "AirbenchNet")


RESULTS = (
    Path(__file__).parent.parent
    / "benchmarks/results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07"
)


@pytest.mark.parametrize(
    ("recipe", "epochs", "aggregate"),
    [
        ("fast", 12, "fast-init-12ep-seeds-summary.json"),
        ("airbench", 10, "airbench-reflect-10ep-5seeds-summary.json"),
        ("airbench-muon", 8, "airbench-muon-8ep-5seeds-summary.json"),
    ],
)
def test_the_quoted_seed_statistics_are_the_recorded_aggregates(recipe, epochs, aggregate):
    group = json.loads((RESULTS / aggregate).read_text())["groups"][0]

    def said(key: str) -> str:
        return f"{100 * group[key]['mean']:.2f}% ± {100 * group[key]['std']:.2f}%"

    quoted = recorded_accuracy(recipe, epochs)
    expected = f"{said('accuracy')} (flip + translate TTA {said('accuracy_tta')})"
    assert quoted.startswith(f"recorded at {epochs} epochs: {expected}")
    assert f"{group['accuracy']['count']} seeds" in quoted
