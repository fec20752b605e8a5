"""What a run shows its user: --gradcam and --tensorboard in a real (tiny) run, the explain
command, and log-friendly output when stdout/stderr are files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastcifar.records.metrics_row import MetricsRow
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.runs import NARROW, finished_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--train-subset", "48", "--batch-size", "16", "--test-subset", "32",
        "--device", "cpu", *NARROW]  # fmt: skip


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory) -> Path:
    pytest.importorskip("pytorch_grad_cam", reason="pip install .[gradcam]")
    pytest.importorskip("tensorboard", reason="pip install .[tensorboard]")
    argv = [*TINY, "--lr-max", "0.05", "--gradcam", "--tensorboard"]
    return finished_run(tmp_path_factory, "reported", argv)


def test_gradcam_grid_of_the_mistakes_is_written(reported_run):
    from PIL import Image

    with Image.open(reported_run / "gradcam.png") as image:
        assert image.size[0] > 300 and image.size[1] > 200


def test_tensorboard_logs_every_step_and_every_epoch(reported_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(reported_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    events.Reload()
    scalars = events.Tags()["scalars"]
    steps = [event.step for event in events.Scalars("step/loss")]
    assert steps == list(range(6))  # 3 steps per epoch, 2 epochs
    accuracy = [event.value for event in events.Scalars("epoch/test_accuracy")]
    summary = json.loads((reported_run / "summary.json").read_text())
    assert accuracy[-1] == pytest.approx(summary["final_test_accuracy"])
    assert {"epoch/train_loss", "epoch/images_per_second", "step/lr"} <= set(scalars)
    assert "plots/curves" in events.Tags()["images"] and "plots/gradcam" in events.Tags()["images"]


def test_explain_command_writes_the_grid_of_a_finished_run(
    reported_run, tmp_path, monkeypatch, capsys
):
    from fastcifar import explain

    out = tmp_path / "grid.png"
    explain.main(
        [str(reported_run), "--count", "100", "--device", "cpu", "--out", str(out)],
        data=synthetic_cifar(64, 32),
    )
    assert out.stat().st_size > 1000
    # More asked for than there are mistakes among the 32 test images: it says how many it shows.
    shown, wrong = re.search(
        r"Grad-CAM of (\d+) of (\d+) mistakes", capsys.readouterr().out
    ).groups()
    assert shown == wrong and 0 < int(wrong) <= 32


def test_output_to_a_file_has_one_line_per_epoch_and_no_cursor_moves(tmp_path):
    if real_cifar_dir() is None:
        pytest.skip("the command line needs the real CIFAR-10 (FASTCIFAR_DATA)")
    log = tmp_path / "log.txt"
    command = [sys.executable, "-m", "fastcifar.train", *TINY, "--lr-max", "0.05", "--no-plots",
               "--data-dir", str(real_cifar_dir()), "--out", str(tmp_path / "run")]  # fmt: skip
    with open(log, "w") as handle:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    assert "\x1b[" not in text and "\r" not in text
    assert [line.split()[1] for line in text.splitlines() if line.startswith("epoch ")] == [
        "1/2",
        "2/2",
    ]
    assert "No CUDA runtime is found" not in text
    final = text.strip().splitlines()[-1]
    assert final.startswith("test accuracy") and "training" in final and "wall" in final


def test_misclassified_plot_title_counts_every_mistake(tmp_path):
    from fastcifar.outputs import plots

    assert plots.mistakes_shown(36, 612, 10_000) == "36 shown of 612 wrong (of 10,000)"
    labels = np.array([0, 1, 2, 3, 4, 5])
    predictions = np.array([0, 2, 2, 0, 4, 1])
    images = np.zeros((6, 32, 32, 3), np.uint8)
    names = [str(i) for i in range(10)]
    plots.plot_mistakes(images, labels, predictions, names, tmp_path / "m.png", count=2)
    assert (tmp_path / "m.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory) -> tuple[Path, str]:
    """Three epochs evaluated every second one (and after the last), with its printed lines."""
    import contextlib
    import io

    pytest.importorskip("tensorboard", reason="pip install .[tensorboard]")
    argv = ["--epochs", "3", *TINY[2:], "--lr-max", "0.05", "--eval-every", "2", "--tensorboard"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        folder = finished_run(tmp_path_factory, "sparse", argv)
    return folder, printed.getvalue()


def test_eval_every_evaluates_every_nth_epoch_and_always_the_last(sparse_run):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, printed = sparse_run
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["test_accuracy"] != "" for row in rows] == [False, True, True]
    assert rows[0]["test_loss"] == "" and float(rows[0]["train_loss"]) > 0
    assert rows[0]["eval_seconds"] == "" and float(rows[1]["eval_seconds"]) > 0  # not evaluated
    epoch_lines = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert "not evaluated" in epoch_lines[0] and "+ eval" not in epoch_lines[0]
    assert all("test loss" in line for line in epoch_lines[1:])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["final_test_accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]))
    assert summary["config"]["eval_every"] == 2 and summary["eval_seconds"][0] == 0.0
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [event.step for event in events.Scalars("epoch/test_accuracy")] == [2, 3]
    assert [event.step for event in events.Scalars("epoch/train_loss")] == [1, 2, 3]


def test_the_estimate_counts_only_the_evaluated_epochs():
    from fastcifar.outputs.report import Estimate

    def evaluation(every: int) -> float:
        return Estimate.of(1.0, steps=100, runs=1, epochs=24, batch=512, test_images=10_000,
                           tta=True, range_test_steps=0, eval_every=every).evaluation  # fmt: skip

    assert evaluation(4) == pytest.approx(evaluation(1) * 6 / 24)
    assert evaluation(5) == pytest.approx(evaluation(1) * 5 / 24)  # 5, 10, 15, 20 and 24


def test_curves_show_the_evaluated_epochs_on_a_log_loss_axis_with_whole_epoch_ticks(
    tmp_path, monkeypatch
):
    """A wild first epoch (test loss 17) must not flatten the others; no tick at epoch 1.5."""
    from fastcifar.outputs import plots

    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.setdefault("f", figure))
    history = [
        MetricsRow.of({"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.2 * e,
                       "test_loss": test_loss,
                       "test_accuracy": None if test_loss is None else 0.1 * e})
        for e, test_loss in ((1, 17.0), (2, None), (3, 0.9))
    ]  # fmt: skip
    plots.plot_curves(history, tmp_path / "curves.png")
    loss_axes, accuracy_axes = drawn["f"].axes
    assert loss_axes.get_yscale() == "log"
    test_line = next(line for line in loss_axes.get_lines() if line.get_label() == "test")
    assert list(test_line.get_xdata()) == [1, 3]
    for axes in (loss_axes, accuracy_axes):
        drawn["f"].canvas.draw()
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    # The loss axis reads as people write numbers: 0.9, 2, 5, 10, never 2×10⁰.
    labels = [t.get_text() for t in [*loss_axes.get_yticklabels(), *loss_axes.get_yticklabels(
        minor=True)] if t.get_text()]  # fmt: skip
    assert labels and all(re.fullmatch(r"\d+(\.\d+)?", label) for label in labels), labels
    assert {"2", "5", "10"} <= set(labels)
