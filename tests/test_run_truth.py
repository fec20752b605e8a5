"""Run folders that never lie, part two: a divergence guard that never calls a broken run
complete, checkpoints and summaries checked field by field (every refusal one line naming the
file), nothing left behind by a killed process, and the torch floor that weights_only needs."""

from __future__ import annotations

import configparser
import json
import math
import os
import pickle
import re
import shlex
from pathlib import Path

import pytest
import torch

from fastcifar import predict
from fastcifar.engine import step as engine
from fastcifar.engine.evaluation import Evaluation, Scores
from fastcifar.errors import CheckpointError
from fastcifar.records.checkpoint import load_checkpoint
from fastcifar.training.trainer import Trainer
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, WIDTH, after_training_steps, exit_code, signal_after

ROOT = Path(__file__).resolve().parents[1]
DATA = synthetic_cifar(64, 32)
ARGS = TWO_EPOCHS


def run(argv: list[str]) -> int:
    return exit_code(argv, DATA)


def one_line(capsys) -> str:
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if not line.startswith(("SIGTERM", "SIGINT"))]
    assert len(lines) == 1, error
    return lines[0]


def test_a_huge_lrmax_is_diverged_not_complete(tmp_path, capsys):
    out = tmp_path / "run"
    assert run([*ARGS, "--lr-max", "1e6", "--out", str(out)]) == 3
    line = one_line(capsys)
    assert line.startswith("diverged: ") and "LRMAX 1e+06" in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and not (out / "model.pt").exists()
    assert run(["--resume", str(out)]) == 2
    line = one_line(capsys)
    assert "diverged" in line and "train again with a lower LRMAX than 1e+06 (--lr-max)" in line
    # Doing so in that --out with --auto-resume asks for a new run there: another config.
    assert run([*ARGS, "--lr-max", "0.05", "--out", str(out), "--auto-resume"]) == 2
    line = one_line(capsys)
    assert "holds a run of another config (lr_max differ)" in line
    assert "choose another --out" in line


def nan_after(monkeypatch, steps: int) -> None:
    """The training loss of every step from the `steps`-th on is NaN (the step itself runs)."""

    def nan_loss(count, _ctx, result):
        loss, correct = result
        return (loss * math.nan if count >= steps else loss), correct

    after_training_steps(monkeypatch, nan_loss)


def test_a_non_finite_training_loss_names_its_step(tmp_path, monkeypatch, capsys):
    nan_after(monkeypatch, 5)  # the 2nd step of epoch 2
    out = tmp_path / "run"
    assert run([*ARGS, "--checkpoint-every", "1", "--out", str(out)]) == 3
    line = one_line(capsys)
    assert line.startswith("diverged: the training loss became non-finite at step 2 of epoch 2")
    assert f"the last good checkpoint (after epoch 1) is kept in {out}" in line
    assert load_checkpoint(out / "checkpoint.pt").epoch == 1


def test_a_non_finite_test_loss_is_divergence(tmp_path, monkeypatch, capsys):
    original = Trainer.evaluate

    def nan_loss(self):
        result = original(self)
        return Evaluation(Scores(math.nan, result.plain.accuracy, result.plain.predictions),
                          None, result.labels)  # fmt: skip

    monkeypatch.setattr(Trainer, "evaluate", nan_loss)
    out = tmp_path / "run"
    assert run([*ARGS, "--checkpoint-every", "1", "--out", str(out)]) == 3
    line = one_line(capsys)
    assert line.startswith("diverged: the test loss is not finite after epoch 1")
    assert "no checkpoint had been saved" in line
    assert not (out / "checkpoint.pt").exists()  # none is written after the check failed


def test_non_finite_batchnorm_statistics_are_divergence(tmp_path, monkeypatch, capsys):
    """Training normalises with the batch's statistics, so an infinite running variance leaves
    the training loss finite; the end-of-epoch check of every buffer finds it."""

    def poison(count, ctx, result):
        if count == 3:  # the last step of epoch 1
            model = getattr(ctx.forward, "_orig_mod", ctx.forward).model
            model.layer2[2].running_var[0] = math.inf
        return result

    after_training_steps(monkeypatch, poison)
    out = tmp_path / "run"
    assert run([*ARGS, "--checkpoint-every", "1", "--out", str(out)]) == 3
    line = one_line(capsys)
    assert "weights, BatchNorm statistics, momentum or averages are not finite in epoch 1" in line
    assert not (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()


@pytest.fixture
def stopped(tmp_path, monkeypatch) -> Path:
    """A run stopped by SIGTERM at step 2 of epoch 1, with its checkpoint."""
    out = tmp_path / "run"
    original = signal_after(monkeypatch, 2)
    assert run([*ARGS, "--out", str(out)]) == 143
    monkeypatch.setattr(engine, "training_step", original)
    return out


def rewrite(folder: Path, **changes) -> None:
    """The checkpoint with `changes`: a field, or a part as "parts.NAME"; KeyError deletes."""
    payload = torch.load(folder / "checkpoint.pt", weights_only=True)
    for key, value in changes.items():
        holder = payload["parts"] if key.startswith("parts.") else payload
        name = key.removeprefix("parts.")
        if value is KeyError:
            del holder[name]
        else:
            holder[name] = value
    torch.save(payload, folder / "checkpoint.pt")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epoch": 99}, "history has 0 rows for 99 completed epochs"),
        ({"history": "garbage"}, "history must be a list of metrics rows"),
        ({"step_in_epoch": -1}, "step_in_epoch must be an integer >= 0, got -1"),
        ({"config": KeyError}, "is not a complete checkpoint: no config"),
        ({"parts.model": KeyError}, "is not a complete checkpoint: no model"),
        ({"parts.rng": KeyError}, "is not a complete checkpoint: no rng"),
        ({"parts.model": {"fc.weight": torch.zeros(3, 3)}}, "does not fit this run's model"),
        ({"world_size": 0}, "bad world_size: 0"),
    ],
    ids=["epoch 99", "history", "negative step", "no config", "no model", "no rng",
         "wrong shapes", "world size"],
)  # fmt: skip
def test_a_damaged_checkpoint_is_refused_in_one_line(stopped, capsys, changes, message):
    rewrite(stopped, **changes)
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    line = one_line(capsys)
    assert str(stopped / "checkpoint.pt") in line and message in line


def weights(**changed):
    """The checkpoint's model weights with some changed, as a `changes` value of rewrite."""

    def changed_weights(payload):
        return {**payload["parts"]["model"], **changed}

    return changed_weights


def nan_fc(payload):
    fc = payload["parts"]["model"]["fc.weight"].clone()
    fc[0, 0] = float("nan")
    return {**payload["parts"]["model"], "fc.weight": fc}


def bad_batch_size(payload):
    return {**payload["config"], "batch_size": "x"}


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("parts.model", weights(**{"prep.0.weight": torch.zeros(3, 3)}),
         f"does not fit this run's model (shape prep.0.weight (3, 3) for ({WIDTH}, 3, 3, 3))"),
        ("parts.model", weights(**{"fc.weight": torch.zeros(20, 8 * WIDTH)}),
         f"shape fc.weight (20, {8 * WIDTH})"),
        ("parts.model", nan_fc, "the weights fc.weight are not finite"),
        ("config", bad_batch_size,
         "holds another config than the run's config.json (batch_size differ)"),
    ],
    ids=["first conv", "fc", "nan", "stored config"],
)  # fmt: skip
def test_a_tampered_checkpoint_is_refused_before_the_warm_up(
    stopped, capsys, monkeypatch, field, change, message
):
    """Refused from what is read and built, never after the warm-up's training steps (a minute
    of a CPU at batch 512): the refusal comes within seconds, then the process exits."""
    from fastcifar.runs import setup

    payload = torch.load(stopped / "checkpoint.pt", weights_only=True)
    rewrite(stopped, **{field: change(payload)})
    monkeypatch.setattr(setup, "warm_up", lambda *a: pytest.fail("warmed up before refusing"))
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    assert message in one_line(capsys)


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("parts.model", weights(**{"fc.weight": torch.zeros(20, 8 * WIDTH)}),  # 20 classes
         f"does not fit this run's model (shape fc.weight (20, {8 * WIDTH}) for "
         f"(10, {8 * WIDTH}))"),
        ("config", bad_batch_size,
         "holds another config than the run's config.json (batch_size differ)"),
    ],
    ids=["fc", "stored config"],
)  # fmt: skip
def test_a_checkpoint_of_another_run_is_refused_before_the_data_is_read(
    stopped, capsys, monkeypatch, field, change, message
):
    """Its config and (the ResNet9's) weight shapes need no data: refused in the first second,
    not after the data load (seconds on CIFAR-10, more under load)."""
    from fastcifar.runs import setup

    payload = torch.load(stopped / "checkpoint.pt", weights_only=True)
    rewrite(stopped, **{field: change(payload)})
    monkeypatch.setattr(setup, "load_data", lambda *a: pytest.fail("read the data first"))
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    assert message in one_line(capsys)


def test_a_checkpoint_beyond_the_run_is_refused(stopped, capsys):
    """A checkpoint claiming more epochs than the run has, with a history to match."""
    payload = torch.load(stopped / "checkpoint.pt", weights_only=True)
    row = {"epoch": 1, "train_loss": 2.0}
    rewrite(stopped, epoch=3, step_in_epoch=0, history=[{**row, "epoch": e} for e in (1, 2, 3)],
            partial={**payload["partial"], "step_losses": []})  # fmt: skip
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    line = one_line(capsys)
    assert "stands at epoch 3, step 0, beyond a run of 2 epochs" in line


def test_a_checkpoint_that_is_a_folder_is_refused_not_ignored(stopped, capsys):
    (stopped / "checkpoint.pt").unlink()
    (stopped / "checkpoint.pt").mkdir()
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    assert "checkpoint.pt is not a regular file: move it away" in one_line(capsys)


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_pickle_that_would_run_code_is_our_one_line_without_torchs_advice(stopped, capsys):
    torch.save({"payload": Exploit(stopped / "ran")}, stopped / "checkpoint.pt")
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    line = one_line(capsys)
    assert "holds Python objects beyond tensors and numbers, which are never loaded" in line
    assert "weights_only" not in line and not (stopped / "ran").exists()


def test_a_legacy_pickle_is_refused_without_torch_warnings(stopped, capsys, recwarn):
    with open(stopped / "checkpoint.pt", "wb") as handle:
        pickle.dump({"state": {"epoch": 1}}, handle)  # not a torch zip file at all
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    assert str(stopped / "checkpoint.pt") in one_line(capsys)
    assert not [w for w in recwarn if "torch" in str(w.filename)]


@pytest.mark.parametrize(
    "content, found",
    [(b"", "it is empty (0 bytes)"), (bytes(100), "its 100 bytes are no torch file")],
)
def test_a_file_of_zeros_is_called_what_it_is_not_a_pickle(stopped, capsys, content, found):
    from fastcifar.records.checkpoint import load_weights_file

    (stopped / "checkpoint.pt").write_bytes(content)
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    line = one_line(capsys)
    assert f"checkpoint.pt is not a checkpoint that fastcifar wrote: {found}" in line
    assert "Python objects" not in line
    (stopped / "model.pt").write_bytes(content)
    expected = "model.pt is not model weights that .*: " + re.escape(found)
    with pytest.raises(CheckpointError, match=expected):
        load_weights_file(stopped / "model.pt", "model weights")


def test_a_summary_status_that_is_not_text_is_named_not_called_missing(stopped, capsys):
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "status": 42}))
    capsys.readouterr()
    assert run(["--resume", str(stopped)]) == 2
    line = one_line(capsys)
    assert (
        "its status is 42, not one of running, complete, interrupted" in line
        and "no status" not in line
    )


def test_a_non_numeric_logit_scale_in_a_summary_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert run([*ARGS, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    summary["config"]["logit_scale"] = "big"
    (out / "summary.json").write_text(json.dumps(summary))
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(out), str(image)])
    assert exit_info.value.code == 2
    line = one_line(capsys)
    assert "summary.json: bad config" in line and "logit_scale" in line


def test_temporary_files_of_a_killed_process_are_removed_when_the_folder_is_used(stopped):
    stale = stopped / ".checkpoint.pt.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint, from a process killed mid-write")
    assert run(["--resume", str(stopped)]) == 0
    assert not stale.exists()
    assert not list(stopped.glob(".*.tmp"))


def test_torch_is_required_at_2_6_or_later_for_safe_weights_only_loads():
    """Before 2.6, torch.load(weights_only=True) could be made to run code (CVE-2025-32434),
    and every run folder and predict rely on it."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    requirements = setup["options"]["install_requires"].split()
    assert "torch>=2.6" in requirements


def test_a_summary_without_its_config_is_one_line(tmp_path, capsys):
    from fastcifar import aggregate

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").write_text('{"schema": 2, "kind": "run", "status": "complete"}')
    with pytest.raises(SystemExit):
        aggregate.main([str(folder)])
    assert one_line(capsys).endswith("summary.json: config must be a table of settings")


def test_a_lost_checkpoint_of_a_cleanly_stopped_run_is_refused_not_trained_over(
    tmp_path, monkeypatch, capsys
):
    """Stopped inside epoch 2 (metrics.csv holds epoch 1), its checkpoint then deleted: starting
    over would throw a whole epoch away in silence. Refused at once, before any data is read."""
    out = tmp_path / "run"
    original = signal_after(monkeypatch, 4)
    assert run([*ARGS, "--out", str(out)]) == 143
    monkeypatch.setattr(engine, "training_step", original)
    (out / "checkpoint.pt").unlink()
    before = (out / "metrics.csv").read_bytes()
    capsys.readouterr()
    assert run(["--resume", str(out)]) == 2
    assert "checkpoint.pt is missing, though the run stopped cleanly" in one_line(capsys)
    assert (out / "metrics.csv").read_bytes() == before
