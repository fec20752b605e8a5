"""Run folders that never lie. Each row of the fault table gets one clear outcome, tested here
(signals and exact resume: tests/test_resume.py; command-line values: tests/test_cli_errors.py;
betons: tests/test_write_beton.py):

| attempt                                    | outcome                                          |
|--------------------------------------------|--------------------------------------------------|
| --out = a finished run                     | refused (names --resume, --overwrite); untouched |
| --overwrite, new run fails pre-checkpoint  | the old run stays, byte for byte                 |
| --overwrite, new run checkpoints           | swapped in then; the old run is gone             |
| disk full while saving                     | old file intact, one line, status failed         |
| two default --out in the same second       | two folders                                      |
| --lr-max 1e6 --lr-min 1e5 (divergence)     | exit 3, one line, status diverged, strict JSON   |
| --lr-max inf, --epochs 1e8, a bad --device | one line (test_cli_errors.py)                    |
| --train-subset 60000, --test-subset 20000  | one line, no folder                              |
| SIGTERM / SIGINT mid-epoch                 | checkpoint, 143 / 130, resume line (test_resume) |
| write_beton.py Ctrl-C / SIGTERM            | prompt exit, nothing left (test_beton_*.py)      |
| one image changed inside a beton           | found: all records verified (test_write_beton)   |
| --out a file/read-only, --data-dir a file  | one line                                         |
| model.pt truncated, wrong shapes, a pickle | one line naming the file; no code runs           |
| model.pt or checkpoint.pt bytes changed    | one line: its checksums no longer match          |
| summary.json of wrong types, not JSON      | one line naming the file                         |
| lr_range_test.json malformed, on a resume  | one line naming the file                         |
| NaN weights in model.pt                    | evaluate and predict refuse                      |
| an unfinished run                          | evaluate and predict refuse unless asked         |
| a 16-bit, palette or alpha PNG to predict  | converted correctly                              |
| a directory / a 20000x20000 PNG to predict | one line                                         |
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcifar
from fastcifar import evaluate, predict
from fastcifar.data import images
from fastcifar.engine import step as engine
from fastcifar.errors import ImageInputError, RunFolderError
from fastcifar.records.checkpoint import load_checkpoint
from fastcifar.records.run_folder import RunFolder, strict_json
from fastcifar.system import files as atomic_file
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, exit_code, finished_run, signal_after

TINY = [*NARROW, "--epochs", "1", "--train-subset", "48", "--batch-size", "16",
        "--test-subset", "16", "--lr-max", "0.05", "--no-plots", "--device", "cpu"]  # fmt: skip


DATA = synthetic_cifar(64, 32)


def run(argv: list[str]) -> int:
    return exit_code(argv, DATA)


def evaluate_main(argv: list[str]) -> None:
    evaluate.main(argv, data=DATA)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory, "finished", TINY, DATA)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_out_of_a_finished_run_is_refused_and_left_untouched(finished, capsys):
    before = snapshot(finished)
    assert run([*TINY, "--out", str(finished)]) == 2
    error = capsys.readouterr().err
    assert "already holds a run (status: complete): choose another --out" in error
    assert "--overwrite" in error and "--resume continues only unfinished runs" in error
    assert snapshot(finished) == before


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_before_its_checkpoint(
    finished, tmp_path, monkeypatch, capsys
):
    target = copy_run(finished, tmp_path / "run")
    before = snapshot(target)

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(target / "checkpoint.pt"))

    monkeypatch.setattr(RunFolder, "save_checkpoint", broken)
    assert run([*TINY, "--out", str(target), "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert snapshot(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left


def test_overwrite_replaces_the_run_once_the_new_one_checkpoints(finished, tmp_path):
    target = copy_run(finished, tmp_path / "run")
    (target / "old-marker.txt").write_text("from the old run")
    assert run([*TINY, "--out", str(target), "--overwrite", "--seed", "7"]) == 0
    assert not (target / "old-marker.txt").exists()
    assert json.loads((target / "summary.json").read_text())["config"]["seed"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous complete weights")

    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

    def failing_writer(*_args):
        with atomic_file.atomic_writer(path) as handle:
            handle.write(b"half")
            FullDisk().write(b"rest")

    with pytest.raises(OSError, match="No space"):
        failing_writer()
    assert path.read_bytes() == b"previous complete weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_disk_full_during_training_is_one_line_and_a_failed_status(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = RunFolder.save

    def full_disk_for_weights(self, name, write):
        if name == "model.pt":
            raise OSError(28, "No space left on device", str(self.path / name))
        real_save(self, name, write)

    monkeypatch.setattr(RunFolder, "save", full_disk_for_weights)
    assert run([*TINY, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"error: {out / 'model.pt'}: No space left on device: free some space, then resume "
        f"with {sys.executable} -m fastcifar.train --resume {out}\n"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["reason"]


def test_two_default_folders_in_the_same_second_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    draws = iter(["abcd", "abcd", "abcd", "ef01"])  # the second claim draws the same name first
    monkeypatch.setattr("fastcifar.records.run_folder.secrets.token_hex", lambda _n: next(draws))
    first, second = RunFolder.claim(None), RunFolder.claim(None)
    first.create()
    second.create()
    assert first.path != second.path and first.path.is_dir() and second.path.is_dir()


def test_a_diverging_run_stops_with_exit_3_and_strict_json(tmp_path, capsys):
    out = tmp_path / "run"
    code = run([*TINY, "--epochs", "2", "--lr-max", "1e6", "--lr-min", "1e5", "--out", str(out)])
    assert code == 3
    error = capsys.readouterr().err.strip()
    # Which value goes first depends on the data (tests/test_divergence.py has each guard).
    assert error.startswith("diverged: ") and "no checkpoint had been saved" in error
    assert "\n" not in error
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"] == error
    with pytest.raises(SystemExit):  # nothing to resume, no weights to read as they are
        evaluate_main([str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert "it cannot be resumed (it would diverge again): train again with a lower" in error
    assert "--resume" not in error and "--allow-incomplete" not in error
    assert not (out / "model.pt").exists()
    for path in out.glob("*.json"):
        assert "NaN" not in path.read_text() and "Infinity" not in path.read_text(), path


def test_strict_json_writes_null_and_says_why():
    text = strict_json({"loss": float("nan"), "rows": [1.0, float("inf")]})
    payload = json.loads(text, parse_constant=lambda name: pytest.fail(name))
    assert payload["loss"] is None and payload["rows"] == [1.0, None]
    assert payload["non_finite"] == ["loss was nan", "rows[1] was inf"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--train-subset", "60000", "--train-subset (60,000) exceeds the 64 images of the split"),
        ("--test-subset", "20000", "--test-subset (20,000) exceeds the 32 images of the split"),
    ],
)
def test_subsets_larger_than_the_split_are_refused(tmp_path, capsys, flag, value, message):
    assert run([*TINY, flag, value, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_or_read_only_is_one_line(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert run([*TINY, "--out", str(file)]) == 2
    assert capsys.readouterr().err == f"error: --out {file} is a file, not a folder\n"
    # A folder nobody may write to; root may write anywhere but in a read-only file system.
    locked = Path("/proc/fastcifar-run") if os.geteuid() == 0 else tmp_path / "locked" / "run"
    if os.geteuid() != 0:
        locked.parent.mkdir(mode=0o500)
    assert run([*TINY, "--out", str(locked)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(locked) in error


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "data"
    file.write_text("x")
    assert exit_code([*TINY, "--data-dir", str(file), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(file) in error


def flip_bytes_inside(path: Path) -> str:
    """XOR 16 bytes in the middle of the largest tensor's data of a torch zip file, as a bad
    disk or copy would; the member's name."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda item: item.compress_size)
    data = bytearray(path.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little")
    start += int.from_bytes(data[header + 28 : header + 30], "little") + info.compress_size // 2
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    path.write_bytes(bytes(data))
    return info.filename


def test_a_checkpoint_with_flipped_bytes_is_refused_when_read(tmp_path):
    from torch.utils.serialization import config as serialization

    from fastcifar.errors import CheckpointError
    from fastcifar.records.checkpoint import load_weights_file

    path = tmp_path / "checkpoint.pt"
    state = {"model": {"weight": torch.randn(64, 64)}, "step": 3}
    torch.save(state, path)
    member = flip_bytes_inside(path)
    with pytest.raises(CheckpointError, match=f"is damaged: the bytes of {member} no longer"):
        load_weights_file(path, "a checkpoint")
    # Saved without checksums (torch's setting, off): nothing to compare, and read as it is.
    with serialization.patch({"save.compute_crc32": False}):
        torch.save(state, path)
    assert torch.equal(load_weights_file(path, "a checkpoint")["model"]["weight"],
                       state["model"]["weight"])  # fmt: skip


@pytest.mark.parametrize(
    "damage", ["truncated", "flipped bytes", "wrong shapes", "code", "not a state dict"]
)
def test_a_damaged_model_file_is_one_line_naming_it(finished, tmp_path, capsys, damage):
    target = copy_run(finished, tmp_path / "run")
    weights = target / "model.pt"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:6800])
    elif damage == "flipped bytes":  # read as it was, it gave other predictions in silence
        flip_bytes_inside(weights)
    elif damage == "wrong shapes":
        state = torch.load(weights, weights_only=True)
        state["fc.weight"] = torch.zeros(3, 3)
        torch.save(state, weights)
    elif damage == "code":
        torch.save({"payload": Exploit(tmp_path / "exploit-ran")}, weights)
    else:
        torch.save([1, 2, 3], weights)
    for command in (evaluate_main, lambda argv: predict.main([*argv, str(weights)])):
        with pytest.raises(SystemExit) as exit_info:
            command([str(target)])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and str(weights) in error, error
    assert not (tmp_path / "exploit-ran").exists()  # the pickle's code never ran


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("curve", ["not json", '{"lrs": 3}', '{"lrs": [], "lr_max": 1.0}', "[]"])
def test_a_malformed_range_test_record_is_one_line_naming_it(tmp_path, curve):
    """A resume reads it back (a run stopped after its range test): never a traceback."""
    from fastcifar.errors import RunFolderError
    from fastcifar.outputs.report import read_range_test

    (tmp_path / "lr_range_test.json").write_text(curve)
    with pytest.raises(RunFolderError, match=r"lr_range_test\.json is no LR range test that"):
        read_range_test(tmp_path)


@pytest.mark.parametrize(
    "summary", ['{"status": 3}', "not json", '{"status": "complete", "schema": 1, "config": []}']
)
def test_a_malformed_summary_is_one_line_naming_it(finished, tmp_path, capsys, summary):
    target = copy_run(finished, tmp_path / "run")
    (target / "summary.json").write_text(summary)
    with pytest.raises(SystemExit):
        evaluate_main([str(target)])
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "summary.json" in error


@pytest.mark.parametrize(
    "data",
    [
        "cifar",
        {"source": "arrays"},
        {"normalisation": {"mean": 1}},
        {"normalisation": {"mean": [125, 123, 114], "std": [0, 0, 0]}},  # would divide by 0
    ],
)
def test_a_malformed_data_record_is_one_line_naming_config_json(finished, tmp_path, capsys, data):
    target = copy_run(finished, tmp_path / "run")
    record = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**record, "data": data}))
    with pytest.raises(SystemExit):
        evaluate_main([str(target)])
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "config.json" in error and "data" in error, error


@pytest.mark.parametrize("architecture", [3, ["0123456789abcdef"]])
def test_a_malformed_architecture_is_one_line_naming_config_json(
    finished, tmp_path, capsys, architecture
):
    target = copy_run(finished, tmp_path / "run")
    record = json.loads((target / "config.json").read_text())
    assert isinstance(record["architecture"], str)  # what a run records
    (target / "config.json").write_text(json.dumps({**record, "architecture": architecture}))
    with pytest.raises(SystemExit):
        evaluate_main([str(target)])
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "config.json" in error and "architecture" in error, error


def test_non_finite_weights_are_refused(finished, tmp_path, capsys):
    target = copy_run(finished, tmp_path / "run")
    state = torch.load(target / "model.pt", weights_only=True)
    state["fc.weight"][0, 0] = float("nan")
    torch.save(state, target / "model.pt")
    with pytest.raises(SystemExit):
        evaluate_main([str(target)])
    assert "holds 1 non-finite values" in capsys.readouterr().err


def test_an_unfinished_run_is_refused_unless_asked(finished, tmp_path, capsys):
    target = copy_run(finished, tmp_path / "run")
    summary = json.loads((target / "summary.json").read_text())
    (target / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(SystemExit):
        evaluate_main([str(target)])
    error = capsys.readouterr().err
    assert "is not a complete run (status: interrupted)" in error and "--allow-incomplete" in error
    evaluate_main([str(target), "--allow-incomplete"])
    assert "test accuracy" in capsys.readouterr().out
    with pytest.raises(RunFolderError, match=r"or pass allow_incomplete=True$"):
        predict(target, np.zeros((32, 32, 3), np.uint8))  # from Python: the keyword
    assert predict(target, np.zeros((32, 32, 3), np.uint8), allow_incomplete=True).predictions


def test_a_photo_is_read_upright_as_its_camera_recorded_the_turn(tmp_path):
    from PIL import Image

    from fastcifar.data.images import read_image

    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = 255  # stored lying down: the left half white
    photo = Image.fromarray(pixels)
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF orientation: shown turned 90 degrees clockwise, the white on top
    photo.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "portrait.jpg")
    assert upright[:16].mean() > 240 and upright[16:].mean() < 15


@pytest.mark.parametrize(
    ("mode", "make", "expected_mean"),
    [
        ("I;16", lambda: np.full((20, 20), 128 * 257, np.uint16), 128),
        ("P", None, 200),
        ("LA", None, 90),
    ],
)
def test_predict_converts_high_depth_palette_and_alpha_images(tmp_path, mode, make, expected_mean):
    from PIL import Image

    path = tmp_path / "image.png"
    if mode == "I;16":
        Image.fromarray(make()).save(path)
    elif mode == "P":
        Image.new("RGB", (20, 20), (200, 200, 200)).convert(
            "P", palette=Image.Palette.ADAPTIVE
        ).save(path)
    else:
        Image.new("LA", (20, 20), (90, 255)).save(path)
    pixels = images.read_image(str(path))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert abs(float(pixels.mean()) - expected_mean) <= 1


@pytest.mark.parametrize("side", [20000, 9000])  # beyond Pillow's refusal; where it only warns
def test_predict_refuses_an_enormous_image_before_decoding_it(tmp_path, side):
    import warnings

    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning leaks out
        with pytest.raises(ImageInputError, match="larger than 50,000,000 pixels"):
            images.read_image(str(path))


def test_a_second_process_cannot_write_the_same_run(finished, tmp_path):
    target = copy_run(finished, tmp_path / "run")
    in_use = pytest.raises(RunFolderError, match="is in use by another fastcifar process")
    with RunFolder.reopen(target), in_use:
        RunFolder.reopen(target)
    RunFolder.reopen(target).release()  # free again once the first one is done


def test_no_lock_file_stays_behind_and_a_stale_open_of_one_holds_nothing(finished, tmp_path):
    """A finished folder holds no .lock; the holder removes it before letting go, so a process
    that opened the file just before then locks a removed file: that lock must count for
    nothing, and the path's own lock is taken anew."""
    import fcntl

    from fastcifar.records import run_folder

    assert not (finished / ".lock").exists()
    target = copy_run(finished, tmp_path / "run")
    first = RunFolder.reopen(target)
    early = os.open(target / ".lock", os.O_RDWR)  # opened before the holder let go
    first.release()
    assert not (target / ".lock").exists()
    fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a lock on the removed file
    assert not run_folder._same_file(early, target / ".lock")
    second = RunFolder.reopen(target)  # not blocked by it: the path's file is another
    assert run_folder._same_file(second._lock, target / ".lock")
    with pytest.raises(RunFolderError, match="is in use by another fastcifar process"):
        RunFolder.reopen(target)
    second.release()
    os.close(early)
    assert not (target / ".lock").exists()


def test_overwrite_never_replaces_a_run_another_process_writes(finished, tmp_path):
    target = copy_run(finished, tmp_path / "run")
    before = snapshot(target)
    in_use = pytest.raises(RunFolderError, match="is in use by another fastcifar process")
    with RunFolder.reopen(target), in_use:  # refused at once, before any work
        RunFolder.claim(str(target), overwrite=True)
    replacing = RunFolder.claim(str(target), overwrite=True)
    replacing.create()
    with RunFolder.reopen(target), in_use:  # a --resume of it started since the claim
        replacing.save_checkpoint(lambda file: file.write(b"new weights"))
    assert snapshot(target) == before
    replacing.save_checkpoint(lambda file: file.write(b"new weights"))  # free again: swapped
    assert (target / "checkpoint.pt").read_bytes() == b"new weights"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_explicit_out_under_runs_keeps_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    folder = RunFolder.claim("runs/mine")
    folder.create()
    assert folder.path == Path("runs/mine")


def test_a_range_test_of_one_step_is_one_line(tmp_path, capsys):
    assert (
        run(
            [*TINY[:-5], "--device", "cpu", "--range-test-steps", "1", "--out", str(tmp_path / "r")]
        )
        == 2
    )
    assert "--range-test-steps must be at least 2, got 1" in capsys.readouterr().err


def test_wall_time_counts_every_process_of_a_resumed_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    plain_step = signal_after(monkeypatch, 2)
    assert run([*TINY, "--out", str(out)]) == 143
    elapsed = load_checkpoint(out / "checkpoint.pt").elapsed
    monkeypatch.setattr(engine, "training_step", plain_step)
    assert run(["--resume", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_seconds"] > elapsed > 0


def test_an_unfinished_run_in_out_is_refused_naming_resume(finished, tmp_path, capsys):
    target = copy_run(finished, tmp_path / "run")
    summary = json.loads((target / "summary.json").read_text())
    (target / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    assert run([*TINY, "--out", str(target)]) == 2
    error = capsys.readouterr().err
    assert f"pass --resume {target} to continue it, or --overwrite to replace it" in error
    tiny = dict(epochs=1, train_subset=48, batch_size=16, test_subset=16, lr_max=0.05)
    with pytest.raises(RunFolderError) as caught:  # from Python: the keywords
        fastcifar.fit(**tiny, plots=False, device="cpu", out=str(target), data=DATA)
    hint = f"pass resume={str(target)!r} to continue it, or overwrite=True to replace it"
    assert str(caught.value).endswith(hint)


def test_a_missing_tensorboard_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert run([*TINY, "--tensorboard", "--out", str(tmp_path / "run")]) == 2
    assert "TensorBoard is not installed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_overwrite_stopped_before_a_single_step_keeps_the_old_run(
    finished, tmp_path, monkeypatch, capsys
):
    """A stop during the warm-up (or a limit reached at once) trains nothing: no checkpoint,
    so the run it was to replace stays, byte for byte."""
    from fastcifar.runs import setup

    target = copy_run(finished, tmp_path / "run")
    before = snapshot(target)
    warm_up = setup.warm_up

    def then_stop(*args):
        seconds = warm_up(*args)
        os.kill(os.getpid(), signal.SIGTERM)
        return seconds

    monkeypatch.setattr(setup, "warm_up", then_stop)
    assert run([*TINY, "--out", str(target), "--overwrite"]) == 143
    assert f"so {target} still holds the previous run, unchanged" in capsys.readouterr().err
    assert snapshot(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_swap_killed_between_its_renames_keeps_the_only_copy_of_the_old_run(tmp_path):
    """Killed after the old run was moved aside and before the new one moved in: the next
    claim of that --out must not delete the old run's folder."""
    old = tmp_path / ".run.old-abc123"
    new = tmp_path / ".run.new-def456"
    for folder in (old, new):
        folder.mkdir()
        (folder / "summary.json").write_text("{}")
    RunFolder.claim(str(tmp_path / "run"))
    assert old.is_dir() and not new.exists()
