"""--ema DECAY: the weight average is a part of the training state (saved, restored, checked
for finiteness with the others), evaluated and saved as model.pt, and a stopped run resumes
bit-identical with it."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest
import torch

from fastcifar.engine import step as engine
from fastcifar.engine.model import ResNet9
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.records.metrics_row import TIMING_COLUMNS
from fastcifar.training.ema import WeightAverage
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, exit_code, finished_run, signal_after

DATA = synthetic_cifar(64, 32)
EMA = [*TWO_EPOCHS, "--ema", "0.5"]
ORIGINAL_STEP = engine.training_step


def metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(handle)]  # fmt: skip


@pytest.fixture(scope="module")
def averaged(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory, "ema", EMA, DATA)


def test_the_average_follows_the_weights_and_lends_them_for_a_while():
    torch.manual_seed(0)
    model = ResNet9()
    average = WeightAverage(model, decay=0.75)
    start = model.fc.weight.detach().clone()
    with torch.no_grad():
        model.fc.weight.add_(4.0)
    average.after_step(1000)  # past the warm-up: the decay itself
    torch.testing.assert_close(average.average["fc.weight"], start + 1.0)  # 0.25 of the way
    with average.applied():
        torch.testing.assert_close(model.fc.weight, start + 1.0)
    torch.testing.assert_close(model.fc.weight, start + 4.0)  # its own weights again
    restored = WeightAverage(model, decay=0.75)
    restored.load_state_dict(average.state_dict())
    torch.testing.assert_close(restored.average["fc.weight"], start + 1.0)
    with pytest.raises(ValueError, match="another decay"):
        WeightAverage(model, decay=0.5).load_state_dict(average.state_dict())


def test_model_pt_and_the_evaluation_are_the_average(averaged, tmp_path):
    plain = finished_run_in(tmp_path, TWO_EPOCHS)
    ours = torch.load(averaged / "model.pt", weights_only=True)
    theirs = torch.load(plain / "model.pt", weights_only=True)
    assert not torch.equal(ours["fc.weight"], theirs["fc.weight"])
    # The training columns are the live weights' and agree; the test columns are the average's.
    ema_rows, plain_rows = metrics(averaged), metrics(plain)
    assert [r["train_loss"] for r in ema_rows] == [r["train_loss"] for r in plain_rows]
    assert [r["test_loss"] for r in ema_rows] != [r["test_loss"] for r in plain_rows]


def finished_run_in(folder: Path, argv: list[str]) -> Path:
    out = folder / "plain"
    assert exit_code([*argv, "--out", str(out)], DATA) == 0
    return out


def test_a_stopped_run_with_an_average_resumes_bit_identical(averaged, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, 4, signal.SIGTERM)  # inside epoch 2
    assert exit_code([*EMA, "--out", str(out)], DATA) == 143
    parts = torch.load(out / "checkpoint.pt", weights_only=True)["parts"]
    assert set(parts) == {"model", "optimizer", "scheduler", "rng", "ema"}
    assert parts["ema"]["decay"] == 0.5
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert exit_code(["--resume", str(out)], DATA) == 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    whole = torch.load(averaged / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)
    assert metrics(out) == metrics(averaged)


def test_the_decay_warms_up_so_that_a_short_run_is_not_its_initial_weights():
    average = WeightAverage(ResNet9(), decay=0.99)
    assert average.decay_at(0) == pytest.approx(0.1)  # the first step: mostly the weights
    assert average.decay_at(8) == pytest.approx(9 / 18)
    assert average.decay_at(10_000) == 0.99
    kept = 1.0
    for step in range(8):  # what the 8-step run kept of its initial weights
        kept *= average.decay_at(step)
    assert kept < 0.01  # without the warm-up: 0.99**8 = 92%


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, float("nan")])
def test_a_decay_outside_the_unit_interval_is_one_line(decay):
    with pytest.raises(ConfigError, match="ema must lie in \\(0, 1\\)"):
        TrainConfig(ema=decay)


def test_the_log_and_the_plot_say_the_test_figures_are_the_averages(tmp_path, capsys, monkeypatch):
    from fastcifar.outputs import plots

    labels, original = [], plots.plot_curves

    def spy(*args, **kwargs):
        labels.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_curves", spy)
    with_plots = [flag for flag in EMA if flag != "--no-plots"]
    assert exit_code([*with_plots, "--out", str(tmp_path / "run")], DATA) == 0
    printed = capsys.readouterr().out
    assert "test (EMA weights) loss" in printed and "test accuracy (EMA weights)" in printed
    assert labels == ["test (EMA weights)"]


def test_the_estimate_times_a_step_with_its_after_step_work(monkeypatch):
    import fastcifar
    from fastcifar.training.lookahead import Lookahead

    called = []
    for part in (WeightAverage, Lookahead):
        original = part.after_step
        monkeypatch.setattr(part, "after_step", lambda self, step, _o=original, _p=part: (
            called.append((_p.__name__, step)), _o(self, step))[1])  # fmt: skip
    settings = dict(epochs=2, train_subset=48, batch_size=16, lr_max=0.05, device="cpu")
    fastcifar.estimate(data=DATA, ema=0.5, lookahead=2, **settings)
    assert {name for name, _ in called} == {"WeightAverage", "Lookahead"}
    assert {step for _, step in called} == {5}  # the run's last step (2 epochs of 3): both act
    called.clear()
    fastcifar.estimate(data=DATA, **settings)
    assert called == []
