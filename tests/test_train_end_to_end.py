"""`python -m fastcifar.train`, `find_lr`, `evaluate` and `predict` end to end: on the real CIFAR-10
when FASTCIFAR_DATA points at it (CI), on synthetic data in the official format otherwise.

Sizes are tiny (16-image batches, 100 test images): these tests prove the plumbing, and a
2-core CPU without native bf16 runs each command in well under a minute.
"""

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

import fastcifar
from fastcifar import evaluate, find_lr, load_run, predict
from fastcifar.system.device import cpu_bf16_support
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.runs import NARROW

ROOT = Path(__file__).resolve().parents[1]
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
QUICK = ["--epochs", "2", "--train-subset", "64", "--batch-size", "16", "--test-subset", "100",
         *NARROW]  # fmt: skip


SYNTHETIC = synthetic_cifar(256, 100)


@pytest.fixture
def data_args() -> tuple[list[str], object]:
    """(flags, data): --data-dir of the real data, or synthetic data handed to the command."""
    real = real_cifar_dir()
    if real is not None:
        return ["--data-dir", str(real)], None
    return [], SYNTHETIC


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A 2-epoch --amp --tta run, through the real command line when real data is present; its
    output goes to RUN/../train.log (read by the tests, never a silent captured pipe)."""
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["--amp", "--tta", *QUICK, "--device", "cpu", "--out", str(out)]
    real = real_cifar_dir()
    if real is not None:
        log = out.parent / "train.log"
        command = [sys.executable, "-m", "fastcifar.train", *args, "--data-dir", str(real)]
        with open(log, "w") as handle:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)
    else:
        train_main(args, data=SYNTHETIC)
    return out


def read_metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_every_output_file_and_ends_complete(trained_run):
    missing = [name for name in RUN_FILES if not (trained_run / name).is_file()]
    assert missing == []
    assert all((trained_run / name).stat().st_size > 1000 for name in RUN_FILES if "png" in name)
    assert not (trained_run / "checkpoint.pt").exists()  # model.pt is the result
    assert not (trained_run / ".lock").exists()  # the lock goes with the process that held it
    assert json.loads((trained_run / "summary.json").read_text())["status"] == "complete"


def test_amp_uses_what_the_cpu_runs_natively_and_says_so(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    native, why = cpu_bf16_support()
    assert summary["precision"] == ("bf16" if native else "fp32")
    assert why in summary["precision_reason"]
    log = trained_run.parent / "train.log"
    if not native and log.exists():
        assert f"--amp: {why}; training in fp32, which is faster here" in log.read_text()


def test_metrics_have_a_row_per_epoch_with_plain_and_tta_accuracy(trained_run):
    metrics = read_metrics(trained_run)
    assert [row["epoch"] for row in metrics] == ["1", "2"]
    for row in metrics:
        assert 0 <= float(row["test_accuracy"]) <= 1 and 0 <= float(row["test_accuracy_tta"]) <= 1
        assert np.isfinite(float(row["train_loss"])) and float(row["epoch_seconds"]) > 0


def test_summary_records_the_run(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    metrics = read_metrics(trained_run)
    assert summary["final_test_accuracy"] == pytest.approx(float(metrics[-1]["test_accuracy"]))
    assert summary["headline"] == "flip TTA"
    assert summary["headline_accuracy"] == summary["final_test_accuracy_tta"]
    assert summary["test_examples"] == 100 and summary["config"]["test_subset"] == 100
    assert summary["train_examples_per_epoch"] == 64
    assert len(summary["epoch_seconds"]) == 2 and summary["total_train_seconds"] > 0
    assert summary["wall_seconds"] > summary["total_train_seconds"] + summary["total_eval_seconds"]
    assert 0 < summary["lr_min"] < summary["lr_max"]
    assert "valley floor" in summary["lr_source"]["lr_max"]
    assert summary["lr_source"]["range_test_steps"] == 10  # 8 training steps, at least 10
    assert summary["versions"]["torch"] == torch.__version__ and summary["device_name"]
    assert summary["world_size"] == 1 and summary["schema"] == 2
    assert summary["wall_seconds"] > 0 and summary["checkpoints_written"] == 1
    recorded = json.loads((trained_run / "config.json").read_text())
    assert recorded["kind"] == "run" and recorded["config"] == summary["config"]
    if real_cifar_dir() is not None:
        assert Path(summary["config"]["data_dir"]).is_absolute()
        assert recorded["data"]["source"] == "cifar10"


def test_weights_load_with_weights_only_and_reproduce_the_accuracy(trained_run, capsys):
    saved = load_run(trained_run, device="cpu")
    summary = json.loads((trained_run / "summary.json").read_text())
    state = torch.load(trained_run / "model.pt", weights_only=True)
    assert set(state) == set(saved.model.state_dict())
    data = None if real_cifar_dir() is not None else SYNTHETIC
    evaluate.main([str(trained_run), "--tta"], data=data)  # the run's own 100 test images
    assert "evaluating the 100 test images the run was evaluated on" in capsys.readouterr().out
    report = json.loads((trained_run / "evaluation.json").read_text())
    # Evaluation runs in fp32; training may have evaluated under bf16 autocast: allow a flip.
    assert report["test_accuracy"] == pytest.approx(summary["final_test_accuracy"], abs=0.011)
    assert report["test_accuracy_tta"] == pytest.approx(
        summary["final_test_accuracy_tta"], abs=0.011
    )
    assert len(report["per_class_accuracy"]) == 10
    assert np.array(report["confusion_matrix"]).sum() == 100


def test_evaluate_says_what_it_evaluated_and_refuses_labels_past_the_runs_classes(trained_run):
    from fastcifar.errors import DataError

    images = np.zeros((22, 32, 32, 3), np.uint8)
    eleven = (images, np.arange(22) % 11, images, np.arange(22) % 11)
    with pytest.raises(DataError, match=r"^the test labels go up to 10, and .* classifies 10 "
                       r"classes \(0 to 9\): give it data of its own classes$"):  # fmt: skip
        evaluate(trained_run, data=eleven, device="cpu")
    two = (images[:20], np.arange(20) % 10, images[:4], np.array([0, 1, 0, 1]))
    result = evaluate(trained_run, data=two, device="cpu", tta=True, test_subset="all")
    report = result.to_dict()
    assert (report["test_examples"], report["tta"]) == (4, "flip TTA")
    assert result.which.startswith("all 4 test images") and report["other_images"] is False
    shown = list(report["per_class_accuracy"].values())
    assert None not in shown[:2] and shown[2:] == [None] * 8  # no images: no accuracy, not 0%
    text = evaluate.format_report(result.plain)
    assert text.count("n/a (no test image)") == 8


def test_predict_prints_top_classes(trained_run, tmp_path, capsys):
    from PIL import Image

    image_path = tmp_path / "frog.png"
    Image.fromarray(np.full((48, 40, 3), 90, np.uint8)).save(image_path)
    predict.main([str(trained_run), str(image_path), "--top", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image_path}: ") and line.count("%") == 2


def test_evaluate_and_predict_are_functions_with_typed_results(trained_run, tmp_path):
    """fastcifar.evaluate and fastcifar.predict: what the commands print, as objects."""
    from PIL import Image

    data = None if real_cifar_dir() is not None else SYNTHETIC
    result = evaluate(trained_run, tta=True, data=data, device="cpu")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert isinstance(result, fastcifar.RunEvaluation) and result.test_examples == 100
    assert result.accuracy == pytest.approx(summary["final_test_accuracy"], abs=0.011)
    assert result.tta is not None and len(result.plain.per_class) == 10
    assert result.plain.confusion.sum() == 100 and result.to_dict()["test_examples"] == 100
    if summary["precision"] != "fp32":  # evaluated in fp32: it says why a digit may differ
        assert result.note and summary["precision"] in result.note
    else:
        assert result.note is None
    image_path = tmp_path / "grey.png"
    Image.fromarray(np.full((48, 40, 3), 90, np.uint8)).save(image_path)
    (tmp_path / "notes.txt").write_text("not a picture")
    found = predict(trained_run, [image_path, tmp_path / "notes.txt"], top=2, device="cpu")
    assert isinstance(found, fastcifar.Predictions)
    assert [p.image for p in found.predictions] == [str(image_path)]
    assert len(found.predictions[0].top) == 2 and "notes.txt" in found.errors[0]
    saved = load_run(trained_run, device="cpu")
    arrays = predict(saved, np.full((3, 32, 32, 3), 90, np.uint8), top=1)
    assert [p.image for p in arrays.predictions] == ["0", "1", "2"]
    assert arrays.predictions[0].label == found.predictions[0].label


def test_predict_refuses_a_non_image_file(trained_run, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(trained_run), str(text)])
    assert exit_info.value.code == 2
    assert "notes.txt is not an image file" in capsys.readouterr().err


def test_predict_exits_1_when_some_images_fail_as_its_help_says(trained_run, tmp_path, capsys):
    from PIL import Image

    image_path = tmp_path / "frog.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image_path)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(trained_run), str(image_path), str(tmp_path / "gone.png")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1 and out.startswith(f"{image_path}: ") and "gone.png" in err
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse rewraps it
    assert "the exit status is then 1 (2 when no image could be read)" in help_text


def test_training_learns_a_learnable_problem(tmp_path):
    """Synthetic classes are readable from the brightness: three epochs must find that."""
    train_main(
        [
            *NARROW,
            "--epochs",
            "3",
            "--train-subset",
            "128",
            "--batch-size",
            "16",
            "--lr-max",
            "0.1",
            "--no-plots",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ],
        data=SYNTHETIC,
    )
    metrics = read_metrics(tmp_path / "run")
    assert float(metrics[-1]["train_loss"]) < float(metrics[0]["train_loss"])
    assert float(metrics[-1]["test_accuracy"]) > 0.3  # chance is 0.1


def test_find_lr_prints_both_bounds_and_writes_its_plot(data_args, tmp_path, capsys):
    out = tmp_path / "lr"
    flags, data = data_args
    find_lr.main(
        [
            *flags,
            "--train-subset",
            "64",
            "--batch-size",
            "16",
            "--range-test-steps",
            "6",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        data=data,
    )
    printed = capsys.readouterr().out
    assert "LRMIN" in printed and "LRMAX" in printed
    curve = json.loads((out / "lr_range_test.json").read_text())
    assert len(curve["lrs"]) == len(curve["smoothed"]) == 6
    assert (out / "lr_range_test.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["kind"] == "range_test"


@pytest.mark.parametrize("loader", ["torch", "ffcv", "dali"])
def test_one_epoch_trains_with_each_loader(loader, data_args, tmp_path):
    flags, data = data_args
    train_main(
        [
            *flags,
            *NARROW,
            "--loader",
            loader,
            "--epochs",
            "1",
            "--train-subset",
            "64",
            "--batch-size",
            "16",
            "--test-subset",
            "50",
            "--lr-max",
            "0.05",
            "--no-plots",
            "--device",
            "cpu",
            "--beton-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ],
        data=data,
    )
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 1 and np.isfinite(float(metrics[0]["train_loss"]))
    assert 0 <= float(metrics[0]["test_accuracy"]) <= 1
    # A subset's beton is temporary: --beton-dir holds whole splits only (write_beton.py's).
    assert not (tmp_path / "cifar10_train.beton").exists()
