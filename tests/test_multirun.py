"""Several runs in one process: seeds that equal fresh runs, honest aggregate statistics, flip TTA,
LR sweeps, and a multi-run that resumes where it was stopped."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from fastcifar.engine import step as engine
from fastcifar.engine.evaluation import EvalForward
from fastcifar.engine.model import build_model
from fastcifar.outputs.statistics import aggregate, t_quantile
from fastcifar.records.metrics_row import TIMING_COLUMNS
from fastcifar.runs import setup
from fastcifar.system.device import Precision
from fastcifar.train import main as command_main
from fastcifar.training import loop as training_run
from fastcifar.training.trainer import Trainer
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, finished_run, signal_after

TINY = [*NARROW, "--epochs", "1", "--train-subset", "48", "--batch-size", "16",
        "--test-subset", "16", "--no-plots", "--device", "cpu"]  # fmt: skip
ORIGINAL_STEP = engine.training_step


DATA = synthetic_cifar(64, 32)


def train_main(argv: list[str]) -> None:
    command_main(argv, data=DATA)


def rows_without_timings(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as handle:
        return [
            {k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(handle)
        ]


@pytest.mark.parametrize(
    ("probability", "dof", "expected"),
    [(0.975, 1, 12.7062), (0.975, 4, 2.7764), (0.975, 29, 2.0452), (0.95, 10, 1.8125)],
)
def test_t_quantiles_match_the_tables(probability, dof, expected):
    assert t_quantile(probability, dof) == pytest.approx(expected, abs=1e-4)


def test_aggregate_statistics_of_known_values():
    result = aggregate([0.93, 0.94, 0.95])
    assert result.count == 3 and result.mean == pytest.approx(0.94)
    assert result.std == pytest.approx(0.01)  # sample standard deviation
    assert (result.min, result.max) == (0.93, 0.95)
    half_width = 4.302653 * 0.01 / 3**0.5
    assert result.ci95_low == pytest.approx(0.94 - half_width, abs=1e-6)
    assert result.ci95_high == pytest.approx(0.94 + half_width, abs=1e-6)
    single = aggregate([0.9])
    assert single.std == 0.0 and single.ci95_low is None
    assert "94.00% ± 1.00% (n = 3, 95% CI 91.52–96.48%" in result.describe()


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = build_model(torch.device("cpu"), seed=3).eval()
    images = torch.randn(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 3, 4, -1])  # the last is padding
    _, plain_predictions, tta_scores, tta_predictions = EvalForward(
        model, Precision("cpu", None), tta=True
    )(images, labels)
    with torch.no_grad():
        averaged = (model(images) + model(images.flip(3))) / 2
    assert torch.equal(tta_predictions, averaged.argmax(1))
    expected_loss = torch.nn.functional.cross_entropy(averaged[:5], labels[:5], reduction="sum")
    assert tta_scores[0].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    assert tta_scores[1].item() == (averaged[:5].argmax(1) == labels[:5]).sum().item()
    assert torch.equal(plain_predictions, model(images).argmax(1))


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> Path:
    return finished_run(
        tmp_path_factory,
        "seeds",
        [*TINY, "--seeds", "2", "--seed", "5", "--lr-max", "0.05", "--tta"],
        DATA,
    )


def test_seed_k_of_a_multi_seed_run_equals_a_fresh_run_with_seed_k(two_seeds, tmp_path):
    fresh = tmp_path / "fresh"
    train_main([*TINY, "--seed", "6", "--lr-max", "0.05", "--tta", "--out", str(fresh)])
    inside = two_seeds / "seed-6"
    ours = torch.load(inside / "model.pt", weights_only=True)
    theirs = torch.load(fresh / "model.pt", weights_only=True)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert rows_without_timings(inside) == rows_without_timings(fresh)


def test_the_parent_folder_holds_the_aggregate(two_seeds):
    summary = json.loads((two_seeds / "summary.json").read_text())
    assert summary["kind"] == "multi" and summary["status"] == "complete"
    (group,) = summary["groups"]
    seeds = [json.loads((two_seeds / f"seed-{k}" / "summary.json").read_text()) for k in (5, 6)]
    accuracies = [s["final_test_accuracy"] for s in seeds]
    assert [run["seed"] for run in group["runs"]] == [5, 6]
    assert group["accuracy"] == aggregate(accuracies, 0.0, 1.0).to_dict()  # CI within [0, 1]
    assert group["accuracy_tta"]["mean"] == pytest.approx(
        sum(s["final_test_accuracy_tta"] for s in seeds) / 2
    )


def test_an_lr_sweep_trains_each_lrmax_and_marks_the_range_test(tmp_path):
    out = tmp_path / "sweep"
    train_main([*TINY[:-3], "--device", "cpu", "--lr-max", "0.02,0.1", "--range-test",
                "--range-test-steps", "4", "--out", str(out)])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert [group["lr_max"] for group in summary["groups"]] == [0.02, 0.1]
    assert summary["config"]["lr_max"] == [0.02, 0.1]  # the parent records the whole sweep
    assert summary["range_test"]["lr_max"] > 0
    for lr in ("0.02", "0.1"):
        child = json.loads((out / f"lr-{lr}" / "seed-0" / "summary.json").read_text())
        assert child["lr_max"] == float(lr) and child["lr_min"] == pytest.approx(float(lr) / 25)
    assert (out / "lr_sweep.png").stat().st_size > 1000
    assert (out / "lr_range_test.png").is_file()


def test_a_sweep_of_given_lrs_runs_no_range_test_unless_asked(tmp_path):
    out = tmp_path / "sweep"
    train_main([*TINY, "--lr-max", "0.02,0.1", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["range_test"] is None and not (out / "lr_range_test.json").exists()


def test_a_stopped_multi_run_resumes_with_the_runs_it_lacks(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    signal_after(monkeypatch, 4)  # the first step of the second seed
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, "--seeds", "2", "--lr-max", "0.05", "--out", str(out)])
    assert exit_info.value.code == 143
    assert (
        f"resume all runs with {sys.executable} -m fastcifar.train --resume {out}"
        in capsys.readouterr().err
    )
    first = (out / "seed-0" / "model.pt").stat().st_mtime_ns
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    # A checkpoint this process could not continue exactly is refused before its run is
    # marked running: the run stays interrupted, and resumable.
    how = Trainer.trained_how
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "trained_how", lambda self: {**how(self), "world_size": 2})
        with pytest.raises(SystemExit) as refused:
            train_main(["--resume", str(out)])
    assert refused.value.code == 2 and "was trained by 1 proc" in capsys.readouterr().err
    assert json.loads((out / "seed-1" / "summary.json").read_text())["status"] == "interrupted"
    train_main(["--resume", str(out)])
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert (out / "seed-0" / "model.pt").stat().st_mtime_ns == first  # not trained again
    assert json.loads((out / "seed-1" / "summary.json").read_text())["status"] == "complete"


def test_a_diverging_run_of_a_sweep_is_recorded_and_the_others_go_on(tmp_path, capsys):
    out = tmp_path / "sweep"
    train_main([*TINY, "--epochs", "2", "--lr-max", "0.05,1e6", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    good, bad = summary["groups"]
    assert good["accuracy"]["count"] == 1 and good["diverged_seeds"] == []
    assert bad["accuracy"] is None and bad["diverged_seeds"] == [0]
    child = json.loads((out / "lr-1e+06" / "seed-0" / "summary.json").read_text())
    assert child["status"] == "diverged"
    assert "the other runs go on" in capsys.readouterr().err


def test_overwrite_of_a_multi_run_puts_the_new_one_in_place(two_seeds, tmp_path):
    import shutil

    target = tmp_path / "runs"
    shutil.copytree(two_seeds, target)
    train_main([*TINY, "--seeds", "2", "--seed", "8", "--lr-max", "0.05", "--overwrite",
                "--out", str(target)])  # fmt: skip
    assert sorted(p.name for p in target.iterdir() if p.name.startswith("seed-")) == [
        "seed-8",
        "seed-9",
    ]
    assert json.loads((target / "summary.json").read_text())["status"] == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no hidden staging folder left


def test_overwrite_by_a_multi_run_whose_runs_all_diverge_keeps_the_old_one(
    two_seeds, tmp_path, capsys
):
    import shutil

    target = tmp_path / "runs"
    shutil.copytree(two_seeds, target)
    before = (target / "summary.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, "--seeds", "2", "--lr-max", "1e30", "--overwrite", "--out", str(target)])
    assert exit_info.value.code == 3
    assert f"so {target} still holds the previous run, unchanged" in capsys.readouterr().err
    assert (target / "summary.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no hidden staging folder left


@pytest.mark.parametrize(
    ("target", "name", "stopped_before"),
    [
        # With --lr-max there is no range test: the warm-up is all that runs before seed 0.
        (setup, "warm_up", "seed-0"),
        # After seed 0's last epoch, where its own loop no longer looks for a stop.
        (training_run.TrainingRun, "_finish", "seed-1"),
    ],
    ids=["during the warm-up", "while a run writes its outputs"],
)
def test_a_signal_between_the_runs_of_a_multi_run_is_not_lost(
    tmp_path, monkeypatch, capsys, target, name, stopped_before
):
    out = tmp_path / "runs"
    original = getattr(target, name)

    def signal_after(*args):
        result = original(*args)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(target, name, signal_after)
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, "--seeds", "2", "--lr-max", "0.05", "--out", str(out)])
    assert exit_info.value.code == 143
    assert f"interrupted by SIGTERM before run {stopped_before}" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert not (out / stopped_before).exists()


def test_a_complete_multi_run_is_not_resumed(two_seeds, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--resume", str(two_seeds)])
    assert exit_info.value.code == 2
    assert "is complete: there is nothing to resume" in capsys.readouterr().err


def test_seeds_beyond_the_seed_range_are_refused_before_training(capsys):
    with pytest.raises(SystemExit):
        train_main([*TINY, "--seed", "4294967295", "--seeds", "2", "--lr-max", "0.05"])
    assert "seed must be an integer from 0 to 4294967295" in capsys.readouterr().err


def test_the_aggregate_of_runs_trained_apart_equals_the_multi_run_aggregate(two_seeds, tmp_path):
    from fastcifar import aggregate

    out = tmp_path / "together"
    aggregate.main([str(two_seeds / "seed-5"), str(two_seeds / "seed-6"), "--out", str(out)])
    (ours,) = json.loads((out / "summary.json").read_text())["groups"]
    (theirs,) = json.loads((two_seeds / "summary.json").read_text())["groups"]
    for key in ("lr_max", "accuracy", "accuracy_tta", "diverged_seeds", "runs"):
        assert ours[key] == theirs[key], key
    assert (out / "seed_accuracies.png").stat().st_size > 1000
    aggregate.main([str(two_seeds), "--out", str(tmp_path / "parent")])  # stands for its runs
    parent = json.loads((tmp_path / "parent" / "summary.json").read_text())
    assert parent["groups"][0]["accuracy"] == theirs["accuracy"]


def test_the_aggregate_refuses_to_mix_recipes_or_count_a_run_twice(two_seeds, tmp_path, capsys):
    from fastcifar import aggregate

    other = tmp_path / "other"
    train_main([*TINY, "--lr-max", "0.05", "--weight-decay", "0.001", "--out", str(other)])
    with pytest.raises(SystemExit):
        aggregate.main([str(two_seeds / "seed-5"), str(other)])
    error = capsys.readouterr().err
    assert "differs from" in error
    assert "in tta, weight_decay: an aggregate takes runs of one recipe" in error
    with pytest.raises(SystemExit):
        aggregate.main([str(two_seeds / "seed-5"), str(two_seeds / "seed-5")])
    assert "named more than once" in capsys.readouterr().err
    again = tmp_path / "seed-5-again"  # the same seed trained again: the same draw
    shutil.copytree(two_seeds / "seed-5", again)
    with pytest.raises(SystemExit):
        aggregate.main([str(two_seeds), str(again)])
    error = capsys.readouterr().err
    assert f"seed-5 and {again} are both seed 5 at LRMAX 0.05: one seed is one sample" in error
    with pytest.raises(SystemExit):  # a finished run in --out: aggregate has no --overwrite
        aggregate.main([str(two_seeds / "seed-5"), "--out", str(two_seeds / "seed-6")])
    error = capsys.readouterr().err
    assert "choose another --out" in error and "--overwrite" not in error


def edited_copy(run: Path, to: Path, settings=None, record=None, summary=None) -> Path:
    """A copy of `run` with its recorded settings (config.json and summary.json alike), its
    config.json's other fields and its summary.json's fields changed."""
    shutil.copytree(run, to)
    config, recorded = json.loads((to / "config.json").read_text()), None
    config["config"].update(settings or {})
    config.update(record or {})
    (to / "config.json").write_text(json.dumps(config))
    recorded = json.loads((to / "summary.json").read_text())
    recorded["config"].update(settings or {})
    recorded.update(summary or {})
    (to / "summary.json").write_text(json.dumps(recorded))
    return to


def test_the_aggregate_takes_runs_run_apart_and_refuses_other_data_or_networks(
    two_seeds, tmp_path, capsys
):
    """One process per GPU: other devices, outputs, checkpoints and data folders are one recipe;
    other images or another network are not, whatever the settings say."""
    from fastcifar import aggregate

    seed_5 = two_seeds / "seed-5"
    elsewhere = dict(device="cuda:1", plots=False, checkpoint_every=1, eval_every=2)
    data = json.loads((seed_5 / "config.json").read_text())["data"]
    moved = edited_copy(two_seeds / "seed-6", tmp_path / "moved", elsewhere,
                        {"data": {**data, "folder": "/elsewhere"}})  # fmt: skip
    out = tmp_path / "together"
    aggregate.main([str(seed_5), str(moved), "--out", str(out)])
    record = json.loads((out / "config.json").read_text())
    assert record["data"] == data and record["model"] == "ResNet9"
    old = edited_copy(
        two_seeds / "seed-6", tmp_path / "old", record={"data": None}
    )  # fastcifar 0.1
    aggregate.main([str(seed_5), str(old)])  # its data not recorded: not told apart
    unshaped = edited_copy(
        two_seeds / "seed-6", tmp_path / "unshaped", record={"architecture": None}
    )
    aggregate.main([str(seed_5), str(unshaped)])  # recorded before the digest: not told apart
    other_images = edited_copy(two_seeds / "seed-6", tmp_path / "images",
                               record={"data": {**data, "train_images": 40}})  # fmt: skip
    other_net = edited_copy(two_seeds / "seed-6", tmp_path / "net", record={"model": "my.Net"})
    digest = record["architecture"]
    wider = edited_copy(two_seeds / "seed-6", tmp_path / "wider",
                        record={"architecture": "0123456789abcdef"})  # fmt: skip
    capsys.readouterr()
    shapes = f"model's parameter shapes (digest 0123456789abcdef, not {digest})"
    for other, why in ((other_images, "data (its train images)"),
                       (other_net, "model (my.Net, not ResNet9)"), (wider, shapes)):  # fmt: skip
        with pytest.raises(SystemExit):
            aggregate.main([str(seed_5), str(other)])
        assert f"differs from {seed_5} in {why}: an aggregate takes" in capsys.readouterr().err


def test_an_aggregate_says_which_seeds_and_that_none_completed(two_seeds, tmp_path, capsys):
    from fastcifar import aggregate

    nine = edited_copy(two_seeds / "seed-6", tmp_path / "nine", {"seed": 9})
    out = tmp_path / "apart"
    aggregate.main([str(two_seeds / "seed-5"), str(nine), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["reason"] == "aggregated from 2 run folders (seeds 5, 9)"
    diverged = {"status": "diverged", "reason": "diverged: loss nan at epoch 1"}
    runs = [edited_copy(two_seeds / f"seed-{k}", tmp_path / f"d{k}", summary=diverged)
            for k in (5, 6)]  # fmt: skip
    aggregate.main([*map(str, runs), "--out", str(tmp_path / "none")])
    summary = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"].startswith("diverged: every run")
    capsys.readouterr()
    with pytest.raises(SystemExit):  # an occupied --out: refused before any result is printed
        aggregate.main([*map(str, runs), "--out", str(out)])
    printed = capsys.readouterr()
    assert "choose another --out" in printed.err and printed.out == ""


def test_the_aggregate_of_found_and_given_lrmax_plots_both_without_an_lr_for_the_found(
    two_seeds, tmp_path
):
    from fastcifar import aggregate

    found = tmp_path / "found"
    train_main([*TINY, "--tta", "--range-test-steps", "4", "--out", str(found)])
    out = tmp_path / "together"
    aggregate.main([str(two_seeds / "seed-5"), str(found), "--out", str(out)])
    groups = json.loads((out / "summary.json").read_text())["groups"]
    assert [(group["lr_max"], group["lr_max_found"]) for group in groups] == [
        (0.05, False),
        (None, True),
    ]
    assert (out / "seed_accuracies_lr-found.png").is_file()
    assert (out / "seed_accuracies_lr-0.05.png").is_file()


def test_the_aggregate_refuses_a_multi_run_that_has_not_made_all_its_runs(
    two_seeds, tmp_path, capsys
):
    from fastcifar import aggregate

    stopped = tmp_path / "stopped"
    shutil.copytree(two_seeds, stopped)
    summary = json.loads((stopped / "summary.json").read_text())
    summary.update(status="interrupted", reason="interrupted by SIGTERM before run 2/2")
    (stopped / "summary.json").write_text(json.dumps(summary))
    shutil.rmtree(stopped / "seed-6")
    with pytest.raises(SystemExit):
        aggregate.main([str(stopped)])
    assert f"{stopped} is a multi-run that is interrupted: resume it first" in (
        capsys.readouterr().err
    )
