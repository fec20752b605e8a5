"""The first hour of a new user, second pass: the data folder is only read, a CPU user is told
the cost up front (and --estimate tells it alone), Ctrl-C answers at once and a second Ctrl-C
stops at once, limits that stop cleanly, evaluate and predict as one expects them, flags that
are checked early and strictly, and plots that show what they claim."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcifar import evaluate, predict
from fastcifar.data import images
from fastcifar.engine import lr_range_test
from fastcifar.engine import step as engine
from fastcifar.outputs import plots
from fastcifar.outputs.statistics import aggregate
from fastcifar.records.metrics_row import MetricsRow
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.runs import NARROW, TWO_EPOCHS, exit_code, signal_after

ROOT = Path(__file__).resolve().parents[1]
DATA = synthetic_cifar(64, 48)
ARGS = TWO_EPOCHS


def run(argv: list[str]) -> int:
    return exit_code(argv, DATA)


def snapshot(folder: Path) -> dict[str, tuple[int, float, str]]:
    """Every file under `folder`: size, modification time and SHA-256."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size,
            path.stat().st_mtime,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_write_beton_and_every_loader_leave_the_data_folder_as_they_found_it(tmp_path):
    data = real_cifar_dir()
    if data is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10")
    before = snapshot(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTCIFAR_CACHE": str(tmp_path / "cache")}
    script = subprocess.run([sys.executable, "data_prep/write_beton.py", "--data-dir", str(data)],
                            cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert script.returncode == 0, script.stderr
    written = sorted(p.name for p in (tmp_path / "cache" / "betons").rglob("*.beton"))
    assert written == ["cifar10_test.beton", "cifar10_train.beton"]
    for loader in ("torch", "ffcv", "dali"):
        argv = [*ARGS, "--epochs", "1", "--loader", loader, "--data-dir", str(data)]
        assert exit_code([*argv, "--out", str(tmp_path / loader)]) == 0
    assert snapshot(data) == before


def test_the_default_beton_of_the_full_split_lives_in_the_cache_not_the_data_folder(monkeypatch):
    from fastcifar.data.dataset import Dataset
    from fastcifar.data.source import cache_dir
    from fastcifar.data.spec import CIFAR10
    from fastcifar.records.config import TrainConfig
    from fastcifar.training.trainer import _beton_path

    folder = Path("/data") / CIFAR10.folder_name
    cifar = Dataset(DATA.train, DATA.test, DATA.class_names, folder=folder, source="cifar10")
    path = _beton_path(TrainConfig(loader="ffcv", data_dir="/data"), cifar)
    assert path.is_relative_to(cache_dir() / "betons") and path.name == "cifar10_train.beton"
    given = _beton_path(TrainConfig(loader="ffcv", beton_dir="/mine"), cifar)
    assert given == Path("/mine/cifar10_train.beton")


def test_estimate_says_what_the_run_costs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run([*ARGS[:-5], "--device", "cpu", "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert "estimated time: ~" in printed and "LR range test" in printed
    assert "GFLOP per step" in printed
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_a_long_cpu_estimate_points_at_a_slice_unless_it_is_one(tmp_path, monkeypatch, capsys):
    from fastcifar.runs import setup

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(setup, "measure_step", lambda trainer: 200.0)  # hours, as at width 64
    whole = [*NARROW, "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--estimate"]
    hint = "on a CPU try a slice first"
    assert run(whole) == 0 and hint in capsys.readouterr().out
    assert run([*whole, "--train-subset", "48"]) == 0
    printed = capsys.readouterr().out
    assert "estimated time: ~" in printed and hint not in printed


def test_a_cpu_run_says_its_cost_before_the_range_test(tmp_path, capsys):
    assert run([*ARGS[:-5], "--device", "cpu", "--range-test-steps", "4",
                "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimated time"))
    range_test = next(i for i, line in enumerate(lines) if line.startswith("LR range test"))
    assert estimate < range_test


def test_a_range_test_interrupted_says_the_resume_starts_it_over(tmp_path, monkeypatch, capsys):
    original, done = lr_range_test.training_step, []

    def step_then_stop(*args):
        done.append(1)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args)

    monkeypatch.setattr(lr_range_test, "training_step", step_then_stop)
    out = tmp_path / "run"
    assert run([*ARGS[:-5], "--device", "cpu", "--range-test-steps", "4", "--out", str(out)]) == 143
    assert "during the LR range test" in capsys.readouterr().err
    monkeypatch.setattr(lr_range_test, "training_step", original)
    assert run(["--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no checkpoint was saved, so the run starts over with the LR range test" in printed
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_max_time_stops_the_range_test_at_a_step(tmp_path, monkeypatch, capsys):
    from fastcifar.training.limits import Limits

    original, done = lr_range_test.training_step, []

    def counted_step(*args):
        done.append(1)
        return original(*args)

    monkeypatch.setattr(lr_range_test, "training_step", counted_step)
    monkeypatch.setattr(Limits, "out_of_time", lambda self: len(done) >= 2)  # 3 h "passed"
    out = tmp_path / "run"
    argv = [*ARGS[:-5], "--range-test-steps", "8", "--max-time", "3h", "--out", str(out)]
    assert run(argv) == 0  # a limit is a clean stop
    printed = "".join(capsys.readouterr())
    assert "stopped at --max-time 3.0 h during the LR range test: resume with" in printed
    assert len(done) == 2 and not (out / "lr_range_test.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "during the LR range test" in summary["reason"]
    monkeypatch.undo()
    assert run(["--resume", str(out)]) == 0
    assert "starts over with the LR range test" in capsys.readouterr().out


def test_a_run_stopped_after_its_range_test_resumes_from_its_bounds_bit_identically(
    tmp_path, monkeypatch, capsys
):
    """No checkpoint before the first step, but the range test's record stands: the resume
    trains from its bounds, as the run would have gone on."""
    from fastcifar.runs import single
    from fastcifar.training.limits import Limits

    argv = [*ARGS[:-5], "--range-test-steps", "4"]
    assert run([*argv, "--out", str(tmp_path / "whole")]) == 0
    saved, found = single.save_range_test, []
    monkeypatch.setattr(single, "save_range_test", lambda *a: (saved(*a), found.append(1)))
    monkeypatch.setattr(Limits, "out_of_time", lambda self: bool(found))
    out = tmp_path / "stopped"
    assert run([*argv, "--max-time", "3h", "--out", str(out)]) == 0
    assert "stopped at --max-time 3.0 h after epoch 0" in "".join(capsys.readouterr())
    assert not (out / "checkpoint.pt").exists() and (out / "lr_range_test.json").is_file()
    monkeypatch.undo()
    assert run(["--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "starts over from the bounds its LR range test found" in printed
    assert "LR range test (" not in printed  # not run again
    whole, resumed = (json.loads((tmp_path / name / "summary.json").read_text())
                      for name in ("whole", "stopped"))  # fmt: skip
    assert resumed["status"] == "complete"
    assert (resumed["lr_min"], resumed["lr_max"]) == (whole["lr_min"], whole["lr_max"])
    earlier = "the range test of an earlier process of this run (lr_range_test.json)"
    assert resumed["lr_source"]["found_by"] == earlier
    assert f"LRMAX {whole['lr_max']:.4g}: found by {earlier}" in printed
    theirs = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    ours = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


# Trains on synthetic data; the second step is one long C++ call (repeated squaring of a
# 3000 x 3000 matrix: 20 products, 1 TFLOP, many seconds on any CPU), marked on stderr before
# and after it.
LONG_STEP = """
import sys, torch
from fastcifar.engine import step as engine
from fastcifar.train import main
from tests.cifar_files import synthetic_cifar

original, done = engine.training_step, []
def step(*args):
    if args[0].scheduler is None:  # not a step of the epochs (warm-up, estimate)
        return original(*args)
    done.append(1)
    if len(done) == 2:
        print("LONG STEP STARTS", file=sys.stderr, flush=True)
        torch.linalg.matrix_power(torch.eye(3000), 2**20)
        print("LONG STEP ENDS", file=sys.stderr, flush=True)
    return original(*args)
engine.training_step = step
main(sys.argv[1:], data=synthetic_cifar(64, 48))
"""


def test_ctrl_c_answers_at_once_and_a_second_stops_within_the_long_step(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", LONG_STEP, *ARGS, "--out", str(out)],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    try:
        for line in process.stderr:
            lines.append(line.strip())
            if line.startswith("LONG STEP STARTS"):
                time.sleep(0.5)  # well inside the C++ call
                process.send_signal(signal.SIGINT)
            elif line.startswith("SIGINT: stopping after this step"):
                process.send_signal(signal.SIGINT)
        code = process.wait(timeout=600)  # a hang guard only
    finally:
        process.kill()
    # Both answers came while the long step ran, which never ended: the process stopped first.
    assert "SIGINT: stopping after this step (Ctrl-C again to stop now)" in lines, lines
    assert "SIGINT again: stopped now; the last checkpoint stands" in lines, lines
    assert "LONG STEP ENDS" not in lines and code == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "second signal" in summary["reason"]
    assert not (out / ".lock").exists()  # only a killed process leaves one


def test_max_steps_stops_cleanly_with_a_checkpoint_and_the_resume_ends_the_same(tmp_path, capsys):
    assert run([*ARGS, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "run"
    assert run([*ARGS, "--max-steps", "4", "--out", str(out)]) == 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("stopped at --max-steps 4 at step 1/3 of epoch 2: resume with ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "--max-steps 4" in summary["reason"]
    evaluate.main([str(out), "--allow-incomplete"], data=DATA)  # evaluation.json, of step 4
    for name in ("model.onnx", "model.onnx.check.json", "notes.txt"):
        (out / name).write_text("made before the resume")
    capsys.readouterr()
    assert run(["--resume", str(out), "--max-steps", "5"]) == 0  # a limit may come along
    printed = capsys.readouterr()
    assert "stopped at --max-steps 5 at step 2/3 of epoch 2" in printed.err
    assert (f"removed evaluation.json, model.onnx, model.onnx.check.json of {out}: made of its "
            "weights before this resume") in printed.out  # fmt: skip
    assert not (out / "evaluation.json").exists() and (out / "notes.txt").is_file()
    assert run(["--resume", str(out)]) == 0
    ours = torch.load(out / "model.pt", weights_only=True)
    theirs = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_max_time_reads_as_people_write_durations():
    from fastcifar.cli import duration
    from fastcifar.training.limits import Limits

    assert [duration(text) for text in ("90", "90s", "15m", "1h30m", "1:30:00")] == [
        90.0, 90.0, 900.0, 5400.0, 5400.0
    ]  # fmt: skip
    limits = Limits.of(600.0, None, started=time.monotonic() - 601)
    assert limits.reached(step=0) == "--max-time 10.0 min"
    assert Limits.of(600.0, None, started=time.monotonic()).reached(step=0) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train_main([*ARGS, "--out", str(out)], data=DATA)
    return out


def test_a_run_on_data_of_ones_own_is_looked_at_with_that_data_as_its_caller_can(trained, capsys):
    from fastcifar.errors import DataError

    with pytest.raises(SystemExit):
        evaluate.main([str(trained)])  # the command cannot pass arrays: Python can
    error = capsys.readouterr().err
    assert error.strip().endswith(
        "trained on data of one's own: look at it from Python, with "
        "that data (fastcifar.evaluate or fastcifar.export, data=...)"
    )
    with pytest.raises(DataError, match=r"own: pass that data again as data=$"):
        evaluate(trained)


def test_evaluate_takes_the_runs_own_test_images_unless_asked_for_all(trained, capsys):
    evaluate.main([str(trained)], data=DATA)
    own = "evaluating the 32 test images the run was evaluated on"
    assert f"{own} (--test-subset all for all of them)" in capsys.readouterr().out
    evaluate.main([str(trained), "--test-subset", "all"], data=DATA)
    assert "evaluating all 48 test images" in capsys.readouterr().out
    evaluate(trained, data=DATA)  # from Python, the setting as Python writes it
    assert f"{own} (test_subset='all' for all of them)" in capsys.readouterr().out
    assert json.loads((trained / "evaluation.json").read_text())["test_examples"] == 48


def images_in(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"image{index}.png"
        Image.fromarray(np.full((40, 60, 3), 30 * index, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_takes_a_folder_skips_what_it_cannot_read_and_says_so(trained, tmp_path, capsys):
    images_in(tmp_path / "photos", 3)
    (tmp_path / "photos" / "broken.png").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(trained), str(tmp_path / "photos"), str(tmp_path / "empty")])
    assert exit_info.value.code == 1  # unreadable inputs: a partial success
    captured = capsys.readouterr()
    assert captured.out.count("%") == 9 and captured.out.count("\n") == 3  # 3 images, top 3
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'photos' / 'broken.png'} is not an image file that "
                      "Pillow can read (use PNG, JPEG, BMP, ...)",
                      f"error: {tmp_path / 'empty'} holds no image files "
                      "(.bmp, .gif, .jpeg, .jpg, .png, .ppm, .tif, .tiff, .webp)"]  # fmt: skip
    assert "reached only" in captured.err and "(a smoke run?)" in captured.err


def test_predict_json_and_the_crop_option(trained, tmp_path, capsys):
    (path,) = images_in(tmp_path / "one", 1)
    predict.main([str(trained), str(path), "--json", "--top", "2", "--resize", "crop"])
    report = json.loads(capsys.readouterr().out)
    (row,) = report["predictions"]
    assert row["image"] == str(path) and len(row["top"]) == 2
    assert report["errors"] == [] and "smoke run" in report["warning"]
    assert not report["warning"].startswith("warning")  # the key says it
    from PIL import Image

    wide = tmp_path / "wide.png"
    pixels = np.zeros((32, 96, 3), np.uint8)
    pixels[:, 32:64] = 255  # only the central square is white
    Image.fromarray(pixels).save(wide)
    assert images.read_image(wide, "crop").mean() == 255
    assert images.read_image(wide, "squash").mean() < 200


def test_predict_takes_bfloat16_and_refuses_paths_mixed_with_arrays_numpy_counts_do(
    trained, tmp_path
):
    import fastcifar
    from fastcifar.errors import ImageInputError

    pixels = torch.rand(2, 3, 32, 32)
    ours = fastcifar.predict(trained, pixels.bfloat16()).predictions
    assert [p.label for p in ours] == [
        p.label for p in fastcifar.predict(trained, pixels.bfloat16().float()).predictions
    ]
    (path,) = images_in(tmp_path / "one", 1)
    with pytest.raises(ImageInputError, match=r"^images is a list of file or folder paths, or of"):
        fastcifar.predict(trained, [str(path), np.zeros((32, 32, 3), np.uint8)])
    assert fastcifar.evaluate(trained, test_subset="ALL", data=DATA).which.startswith("all ")
    counted = fastcifar.evaluate(trained, test_subset=np.int64(8), batch_size=np.int32(4),
                                 tta=np.bool_(True), data=DATA)  # fmt: skip
    assert counted.test_examples == 8 and counted.tta is not None
    assert len(fastcifar.predict(trained, pixels.numpy(), top=np.int64(2)).predictions[0].top) == 2


def test_the_confidence_interval_of_an_accuracy_stays_within_0_and_100_percent():
    result = aggregate([0.0, 0.125], 0.0, 1.0)
    assert result.ci95_low == 0.0 and result.ci95_high <= 1.0
    assert aggregate([0.0, 0.125]).ci95_low < 0  # unclamped, it would not


def test_a_resumed_epochs_bar_starts_where_it_stopped(monkeypatch):
    from fastcifar.system import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    list(progress.progress(range(3), "epoch 2", initial=4, total=7))
    assert "4/7" in screen.getvalue() and "7/7" in screen.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epoch", "2"], "unrecognized arguments: --epoch 2; did you mean '--epochs'?"),
        (["--lr-mx", "0.1"], "did you mean '--lr-max'?"),
    ],
)
def test_flags_are_never_abbreviated_and_a_typo_gets_a_suggestion(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_one_cycles_length_is_checked_before_any_data_is_loaded(tmp_path, capsys):
    nowhere = tmp_path / "no-data-here"
    code = exit_code(["--epochs", "1", "--train-subset", "32", "--batch-size", "16",
                      "--data-dir", str(nowhere), "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert "make 2 training steps; One Cycle needs at least 3" in error
    assert not nowhere.exists() and not (tmp_path / "r").exists()


def drawn(monkeypatch) -> list:
    """The figures the plots module saves, kept open for inspection."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure) or path)
    return figures


def test_the_curves_show_every_steps_loss(monkeypatch, tmp_path):
    figures = drawn(monkeypatch)
    history = [MetricsRow.of({"epoch": e, "train_loss": 2.0, "test_loss": 2.1,
                              "train_accuracy": 0.1, "test_accuracy": 0.1})
               for e in (1, 2)]  # fmt: skip
    plots.plot_curves(history, tmp_path / "c.png", [2.3, 2.2, 2.1, 2.0, 1.9, 1.8], 3)
    loss_axes = figures[0].axes[0]
    per_step = next(line for line in loss_axes.lines if line.get_label() == "train, per step")
    assert len(per_step.get_xdata()) == 6 and per_step.get_xdata()[-1] == 2.0


def test_the_range_test_plot_marks_the_valley_floor_and_both_bounds(monkeypatch, tmp_path):
    from fastcifar.engine.lr_range_test import RangeTestResult

    figures = drawn(monkeypatch)
    curve = RangeTestResult([0.01, 0.1, 1.0], [2.3, 1.9, 2.5], [2.3, 2.0, 2.2], 0.1, 0.001,
                            "valley floor", "onset", "completed")  # fmt: skip
    plots.plot_range_test(curve, tmp_path / "r.png")
    labels = [line.get_label() for line in figures[0].axes[0].lines]
    assert "valley floor at LR 0.1" in labels
    assert {"LRMAX 0.1", "LRMIN 0.001"} <= set(labels)
    assert not any(label.startswith("blew up") for label in labels)
    low = RangeTestResult([0.01, 0.1, 1.0], [2.3, 1.2, 2.5], [2.3, 2.0, 2.2], 0.1, 0.001,
                          "valley floor", "onset", "completed")  # fmt: skip
    plots.plot_range_test(low, tmp_path / "low.png")
    assert figures[1].axes[0].get_ylim()[0] < 1.2  # the raw loss's dip is in the picture


def test_the_range_test_plot_marks_where_the_loss_blew_up(monkeypatch, tmp_path):
    from fastcifar.engine.lr_range_test import RangeTestResult

    figures = drawn(monkeypatch)
    curve = RangeTestResult([0.01, 0.1, 1.0], [2.3, 1.9, 9.5], [2.3, 2.0, 8.2], 0.1, 0.001,
                            "blow-up / 10", "onset", "diverged", blow_up_lr=1.0)  # fmt: skip
    plots.plot_range_test(curve, tmp_path / "r.png")
    labels = [line.get_label() for line in figures[0].axes[0].lines]
    assert {"blew up at LR 1", "LRMAX 0.1", "valley floor at LR 0.1"} <= set(labels)


def test_the_seed_plot_shows_flip_tta_when_it_was_measured(monkeypatch, tmp_path):
    figures = drawn(monkeypatch)
    plots.plot_seed_accuracies(["seed 0", "seed 1"], [0.9, 0.92], tmp_path / "s.png",
                               tta=[0.91, 0.93])  # fmt: skip
    labels = [line.get_label() for line in figures[0].axes[0].lines]
    assert "plain" in labels and "flip TTA" in labels


def test_tensorboard_gets_the_steps_of_an_epoch_in_progress_without_a_read_per_step(
    monkeypatch, tmp_path
):
    """While an epoch runs, the device-side losses are read once per LIVE_SECONDS (here: at
    every other step, by a clock that moves 20 s per step), not at every step."""
    from fastcifar.engine.step import EpochAccumulator
    from fastcifar.outputs import report

    class Log:
        def __init__(self) -> None:
            self.steps, self.flushes = [], 0

        def steps_logged(self, first, lrs, losses):
            self.steps += list(range(first, first + len(losses)))

        def flush(self) -> None:
            self.flushes += 1

    class Quiet:
        dist = type("Single", (), {"enabled": False})()
        config = type("Config", (), {"tensorboard": True})()

    log = Log()
    clock = iter(range(0, 1000, 20))
    monkeypatch.setattr(report.time, "monotonic", lambda: next(clock))
    reporter = report.Reporter(Quiet(), folder=None)
    reporter.log = type("TB", (), {"steps": log.steps_logged, "flush": log.flush})()
    accumulator = EpochAccumulator(6, torch.device("cpu"))
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or original(self))
    for step in range(6):
        accumulator.add(torch.tensor(2.0 - step / 10), torch.tensor(1), 16)
        reporter.live_steps(accumulator, 100, lambda _step: 0.1)
    assert log.steps == [100, 101, 102, 103, 104, 105] and log.flushes == 3 and len(reads) == 3
    reporter.steps(100, [2.0] * 6, lambda _step: 0.1)  # the epoch's end: nothing left to add
    assert len(log.steps) == 6


def test_auto_resume_continues_the_unfinished_run_of_the_same_settings(
    tmp_path, monkeypatch, capsys
):
    """Its own --data-dir, whatever $FASTCIFAR_DATA says: the same settings, the same run;
    also where cifar-10-batches-bin/ is a link into a shared data set."""
    data = real_cifar_dir()
    if data is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10")
    monkeypatch.setenv("FASTCIFAR_DATA", str(tmp_path / "elsewhere"))
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cifar-10-batches-bin").symlink_to(Path(data) / "cifar-10-batches-bin")
    out = tmp_path / "run"
    argv = [*ARGS, "--data-dir", str(linked), "--out", str(out)]
    original = signal_after(monkeypatch, 4)
    assert exit_code(argv) == 143
    monkeypatch.setattr(engine, "training_step", original)
    capsys.readouterr()
    assert exit_code([*argv, "--auto-resume"]) == 0
    assert f"resuming {out} at step 1/3 of epoch 2" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["config"]["data_dir"] == str(linked)
    assert exit_code([*argv, "--epochs", "3", "--auto-resume"]) == 2  # complete: refused
    assert "already holds a run (status: complete)" in capsys.readouterr().err
