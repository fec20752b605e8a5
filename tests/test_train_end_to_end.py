"""`python -m fastcifar.train`, `find_lr`, `evaluate` and `predict` end to end: on the real CIFAR-10
when FASTCIFAR_DATA points at it (CI), on synthetic data in the official format otherwise."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcifar import experiment, find_lr, predict
from fastcifar.run_folder import load_run
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir

RUN_FILES = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "model.pt",
    "lr_range_test.json",
    "lr_range_test.png",
    "lr_schedule.png",
    "curves.png",
    "misclassified.png",
    "confusion_matrix.png",
)
QUICK = [
    "--epochs",
    "2",
    "--train-subset",
    "1024",
    "--batch-size",
    "64",
    "--range-test-steps",
    "15",
]


@pytest.fixture
def data_args(monkeypatch) -> list[str]:
    """--data-dir of the real data, or synthetic data patched in where the run loads it."""
    real = real_cifar_dir()
    if real is not None:
        return ["--data-dir", str(real)]
    monkeypatch.setattr(experiment, "load_cifar10", lambda _dir: synthetic_cifar(1024, 500))
    return []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A 2-epoch --amp run on 1,024 images, through the real command line when data is present."""
    out = tmp_path_factory.mktemp("run")
    real = real_cifar_dir()
    if real is not None:
        command = [
            sys.executable,
            "-m",
            "fastcifar.train",
            "--amp",
            *QUICK,
            "--data-dir",
            str(real),
            "--out",
            str(out),
        ]
        subprocess.run(command, check=True, timeout=900, env={**os.environ, "PYTHONPATH": "."})
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(experiment, "load_cifar10", lambda _dir: synthetic_cifar(1024, 500))
            train_main(["--amp", *QUICK, "--out", str(out)])
    return out


def read_metrics(folder: Path) -> list[dict[str, float]]:
    with open(folder / "metrics.csv") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_training_writes_every_output_file(trained_run):
    missing = [name for name in RUN_FILES if not (trained_run / name).is_file()]
    assert missing == []
    assert all((trained_run / name).stat().st_size > 1000 for name in RUN_FILES if "png" in name)


def test_training_learns(trained_run):
    metrics = read_metrics(trained_run)
    assert [row["epoch"] for row in metrics] == [1, 2]
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["test_accuracy"] > 0.15  # chance is 0.10


def test_summary_records_the_run(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    metrics = read_metrics(trained_run)
    assert summary["final_test_accuracy"] == pytest.approx(metrics[-1]["test_accuracy"])
    assert summary["test_examples"] == (10_000 if real_cifar_dir() else 500)
    assert summary["train_examples_per_epoch"] == 1024
    assert len(summary["epoch_seconds"]) == 2 and summary["total_train_seconds"] > 0
    assert 0 < summary["lr_min"] < summary["lr_max"]
    assert "valley floor" in summary["lr_source"]["lr_max"]
    assert summary["config"]["amp"] is True and summary["precision"] == "torch.bfloat16"
    assert summary["versions"]["torch"] == torch.__version__ and summary["device_name"]
    assert json.loads((trained_run / "config.json").read_text()) == summary["config"]


def test_weights_load_with_weights_only_and_reproduce_the_accuracy(trained_run, monkeypatch):
    model, summary = load_run(trained_run, torch.device("cpu"))
    state = torch.load(trained_run / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    if real_cifar_dir() is None:
        monkeypatch.setattr(
            "fastcifar.data_source.load_cifar10", lambda _dir: synthetic_cifar(1024, 500)
        )
    from fastcifar import evaluate

    evaluate.main([str(trained_run)])
    report = json.loads((trained_run / "evaluation.json").read_text())
    # Evaluation runs in fp32, training evaluated under bf16 autocast: allow a few flips.
    assert report["test_accuracy"] == pytest.approx(summary["final_test_accuracy"], abs=0.01)
    assert len(report["per_class_accuracy"]) == 10
    assert np.array(report["confusion_matrix"]).sum() == summary["test_examples"]


def test_predict_prints_top_classes(trained_run, tmp_path, capsys):
    from PIL import Image

    image_path = tmp_path / "frog.png"
    Image.fromarray(np.full((48, 40, 3), 90, np.uint8)).save(image_path)
    predict.main([str(trained_run), str(image_path), "--top", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image_path}: ") and line.count("%") == 2


def test_predict_refuses_a_non_image_file(trained_run, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(trained_run), str(text)])
    assert exit_info.value.code == 2
    assert "notes.txt is not an image file" in capsys.readouterr().err


def test_find_lr_prints_both_bounds_and_writes_its_plot(data_args, tmp_path, capsys):
    find_lr.main(
        [
            *data_args,
            "--train-subset",
            "512",
            "--batch-size",
            "64",
            "--range-test-steps",
            "12",
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert "LRMIN" in printed and "LRMAX" in printed
    curve = json.loads((tmp_path / "lr_range_test.json").read_text())
    assert len(curve["lrs"]) == len(curve["smoothed"]) > 2
    assert (tmp_path / "lr_range_test.png").stat().st_size > 1000


@pytest.mark.parametrize("loader", ["torch", "ffcv", "dali"])
def test_one_epoch_trains_with_each_loader(loader, data_args, tmp_path):
    train_main(
        [
            *data_args,
            "--loader",
            loader,
            "--epochs",
            "1",
            "--train-subset",
            "1024",
            "--batch-size",
            "128",
            "--lr-max",
            "0.05",
            "--no-plots",
            "--beton-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 1 and np.isfinite(metrics[0]["train_loss"])
    assert 0 <= metrics[0]["test_accuracy"] <= 1
