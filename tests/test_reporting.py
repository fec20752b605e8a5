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

from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.runs import finished_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--train-subset", "48", "--batch-size", "16", "--test-subset", "32",
        "--device", "cpu"]  # fmt: skip


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
    from fastcifar import plots

    assert plots.mistakes_shown(36, 612, 10_000) == "36 shown of 612 wrong (of 10,000)"
    labels = np.array([0, 1, 2, 3, 4, 5])
    predictions = np.array([0, 2, 2, 0, 4, 1])
    images = np.zeros((6, 32, 32, 3), np.uint8)
    names = [str(i) for i in range(10)]
    plots.plot_mistakes(images, labels, predictions, names, tmp_path / "m.png", count=2)
    assert (tmp_path / "m.png").stat().st_size > 1000
