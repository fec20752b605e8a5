"""Checkpoints, signals and exact resume: a run stopped by SIGTERM or SIGINT (after an epoch, or in
the middle of one) and resumed ends bit-identical to the run that was never stopped: every tensor
of model.pt, and metrics.csv except its timings. The summary names the source (commit, torch) of
every process that trained the run, and a resume under another source says so."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from fastcifar.engine import step as engine
from fastcifar.records.checkpoint import load_checkpoint
from fastcifar.records.metrics_row import TIMING_COLUMNS
from fastcifar.system.device import compute_kind
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, exit_code, finished_run, signal_after

# 3 steps per epoch, 2 epochs; evaluation on 32 images.
ORIGINAL_STEP = engine.training_step
ARGS = TWO_EPOCHS


DATA = synthetic_cifar(64, 32)


def run(argv: list[str]) -> int:
    return exit_code(argv, DATA)


def metrics_without_timings(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as handle:
        return [
            {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
            for row in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory, "whole", ARGS, DATA)


@pytest.mark.parametrize(
    ("steps", "number", "code", "where"),
    [
        (3, signal.SIGTERM, 143, "after epoch 1"),  # the last step of epoch 1
        (4, signal.SIGINT, 130, "at step 1/3 of epoch 2"),  # inside epoch 2
    ],
)
def test_a_stopped_and_resumed_run_ends_bit_identical(
    uninterrupted, tmp_path, monkeypatch, capsys, steps, number, code, where
):
    out = tmp_path / "run"
    signal_after(monkeypatch, steps, number)
    assert run([*ARGS, "--out", str(out)]) == code
    error = capsys.readouterr().err.strip().splitlines()
    name = "SIGTERM" if number == signal.SIGTERM else "SIGINT"
    again = "Ctrl-C again" if number == signal.SIGINT else "SIGTERM again"
    # Answered at once (a watcher thread), then the stop once the step is done.
    assert error == [
        f"{name}: stopping after this step ({again} to stop now)",
        f"interrupted by {name} {where}: resume with {sys.executable} -m fastcifar.train "
        f"--resume {out}",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "interrupted by" in summary["reason"]
    assert f"{sys.executable} -m fastcifar.train --resume {out}" in summary["reason"]
    assert not (out / "model.pt").exists()
    checkpoint = load_checkpoint(out / "checkpoint.pt")  # weights_only=True
    assert checkpoint.epoch * 3 + checkpoint.step_in_epoch == steps

    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert run(["--resume", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    resumed = torch.load(out / "model.pt", weights_only=True)
    whole = torch.load(uninterrupted / "model.pt", weights_only=True)
    assert resumed.keys() == whole.keys()
    for key in whole:
        assert torch.equal(resumed[key], whole[key]), key
    assert metrics_without_timings(out) == metrics_without_timings(uninterrupted)
    assert not (out / "checkpoint.pt").exists()
    assert "was trained with commit" not in capsys.readouterr().err  # the same source
    segments = json.loads((out / "summary.json").read_text())["provenance"]["segments"]
    assert [s["start"] for s in segments] == ["after epoch 0", where]
    assert segments[0]["commit"] == segments[1]["commit"]
    assert segments[0]["torch"] == segments[1]["torch"] == torch.__version__
    whole_segments = json.loads((uninterrupted / "summary.json").read_text())["provenance"]
    assert [s["start"] for s in whole_segments["segments"]] == ["after epoch 0"]


def test_a_checkpoint_of_schema_2_still_resumes_bit_identical(uninterrupted, tmp_path, monkeypatch):
    """fastcifar 0.2 saved each part as a field of its own: such a checkpoint is upgraded."""
    out = tmp_path / "run"
    signal_after(monkeypatch, 4)
    assert run([*ARGS, "--out", str(out)]) == 143
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    old = {key: value for key, value in payload.items() if key not in ("parts", "segments")}
    torch.save({**old, **payload["parts"], "scaler": None, "schema": 2}, out / "checkpoint.pt")
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert run(["--resume", str(out)]) == 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    whole = torch.load(uninterrupted / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)
    assert metrics_without_timings(out) == metrics_without_timings(uninterrupted)
    # What trained it before the checkpoint is not known, and the summary says so.
    segments = json.loads((out / "summary.json").read_text())["provenance"]["segments"]
    assert (segments[0]["start"], segments[0]["commit"]) == ("after epoch 0", "not recorded")
    assert segments[1]["start"] == "at step 1/3 of epoch 2" and segments[1]["torch"]


def test_resuming_a_complete_run_is_refused(uninterrupted, capsys):
    assert run(["--resume", str(uninterrupted)]) == 2
    assert "is complete: there is nothing to resume" in capsys.readouterr().err


def test_a_checkpoint_holds_the_whole_state(tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, 2)
    assert run([*ARGS, "--out", str(out)]) == 143
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(payload) >= {"parts", "epoch", "step_in_epoch", "partial", "history", "lr_min",
                            "lr_max", "lr_source", "world_size", "rank_batch", "threads",
                            "loader", "schema"}  # fmt: skip
    # Every stateful part under one mapping (fp32 on a CPU: no GradScaler part).
    assert set(payload["parts"]) == {"model", "optimizer", "scheduler", "rng"}
    assert checkpoint.step_in_epoch == 2 and len(checkpoint.partial["step_losses"]) == 2
    assert checkpoint.config["lr_max"] == 0.05
    assert checkpoint.optimizer["state"], "momentum buffers are part of the checkpoint"
    assert (checkpoint.world_size, checkpoint.rank_batch, checkpoint.loader) == (1, 16, "torch")
    assert checkpoint.threads == torch.get_num_threads()


@pytest.fixture
def interrupted(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "run"
    signal_after(monkeypatch, 2)
    assert run([*ARGS, "--out", str(out)]) == 143
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    return out


def test_a_checkpoint_of_a_newer_schema_is_refused_in_one_line(interrupted, capsys):
    payload = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    payload["schema"] = 99
    torch.save(payload, interrupted / "checkpoint.pt")
    capsys.readouterr()
    assert run(["--resume", str(interrupted)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has schema 99; this fastcifar reads schema 3" in error


def test_an_unfinished_range_test_is_not_resumed_as_a_training_run(interrupted, capsys):
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "kind": "range_test"}))
    before = sorted(p.name for p in interrupted.iterdir())
    capsys.readouterr()
    assert run(["--resume", str(interrupted)]) == 2
    assert "holds an LR range test (find_lr), not a training run" in capsys.readouterr().err
    assert sorted(p.name for p in interrupted.iterdir()) == before


def test_a_resume_with_another_thread_count_says_the_results_may_differ(interrupted, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        assert run(["--resume", str(interrupted)]) == 0
    finally:
        torch.set_num_threads(threads)
    error = capsys.readouterr().err
    assert f"was trained with {threads} CPU threads per process, this process has" in error
    assert "on a CPU the results may differ in the last bits" in error


def test_a_resume_under_another_source_says_so_and_the_summary_keeps_both(interrupted, capsys):
    payload = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert [s["start"] for s in payload["segments"]] == ["after epoch 0"]
    payload["segments"][0].update(commit="0a1b2c3", torch="2.0.0")  # trained by another source
    torch.save(payload, interrupted / "checkpoint.pt")
    capsys.readouterr()
    assert run(["--resume", str(interrupted)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "was trained with" in line]
    here = compute_kind(torch.device("cpu"))
    assert len(warning) == 1
    assert f"commit 0a1b2c3, torch 2.0.0, on {here} and this is commit " in warning[0]
    assert "continues exactly only if both compute the same" in warning[0]
    summary = json.loads((interrupted / "summary.json").read_text())
    segments = summary["provenance"]["segments"]
    assert segments[0]["commit"] == "0a1b2c3" and len(segments) == 2
    assert segments[1]["commit"] == summary["provenance"]["commit"] + (
        "+dirty" if summary["provenance"]["dirty"] else ""
    )
    assert (
        f"resumed under another source: commit 0a1b2c3, torch 2.0.0, on {here} then commit "
        in captured.out
    )


def test_a_resume_on_another_kind_of_device_says_so_and_an_unrecorded_device_does_not(
    interrupted, capsys
):
    """Each process records the kind of device it ran on (the CPU's kernels and its bf16, which
    decide the numbers and Muon's Newton-Schulz precision); a checkpoint saved before devices
    were recorded is compared on the commit and torch alone."""
    here = compute_kind(torch.device("cpu"))
    assert here.startswith("CPU ") and " kernels, bf16 " in here
    payload = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert payload["segments"][0]["device"] == here
    elsewhere = "CPU Another Processor, AVX2 kernels, bf16 not native"
    payload["segments"][0]["device"] = elsewhere
    torch.save(payload, interrupted / "checkpoint.pt")
    capsys.readouterr()
    assert run(["--resume", str(interrupted), "--max-steps", "3"]) == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.splitlines() if "was trained with" in line]
    assert f", on {elsewhere} and this is commit " in warning and warning.endswith(
        f", on {here}: the run continues exactly only if both compute the same; summary.json "
        "records each (provenance: segments)"
    )
    payload = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert [s["device"] for s in payload["segments"]] == [elsewhere, here]
    del payload["segments"][0]["device"], payload["segments"][1]["device"]  # as saved before
    torch.save(payload, interrupted / "checkpoint.pt")
    assert run(["--resume", str(interrupted)]) == 0
    captured = capsys.readouterr()
    assert "was trained with" not in captured.err
    assert "resumed under another source" not in captured.out  # the same commit and torch


@pytest.mark.parametrize("segments", ["one", [{"start": "after epoch 0"}]])
def test_malformed_segments_are_one_line_naming_the_checkpoint(interrupted, capsys, segments):
    payload = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "segments": segments}, interrupted / "checkpoint.pt")
    capsys.readouterr()
    assert run(["--resume", str(interrupted)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "segments must be a list of {start, commit, torch}" in error
    assert str(interrupted / "checkpoint.pt") in error
