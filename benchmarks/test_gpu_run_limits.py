"""benchmarks/run_gpu.sh on a machine that lacks something or runs out: a stage that does not
fit the budget is skipped, one past its limit is stopped with all it started, a wrong DATA_DIR
fails before anything compiles, no compiler or a missing package leaves every other stage to
run and say why, and a summary that fails still brings back the stages. (Apart from
test_gpu_summary.py so that its two dry runs go to two pytest-xdist workers.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_run, gpu_summary
from tests.cifar_files import real_cifar_dir

ROOT = Path(__file__).resolve().parents[1]


def test_a_stage_that_does_not_fit_the_budget_is_skipped_and_says_so(tmp_path):
    result = gpu_run.run_stage("tests", ["true"], left=10.0, log=tmp_path / "tests.log")
    assert result.status == "skipped" and result.note == "needs ~90 s, 10 s of the budget left"
    assert not (tmp_path / "tests.log").exists()


def test_a_stage_past_its_limit_is_stopped_with_all_it_started(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_run.CAPS, "suite", 1)
    marker = tmp_path / "grandchild.pid"
    command = ["bash", "-c", f"sleep 300 & echo $! > {marker}; wait"]
    result = gpu_run.run_stage("suite", command, left=1000.0, log=tmp_path / "suite.log")
    assert result.status == "timed out" and result.note == "stopped at its limit of 1 s"
    grandchild = int(marker.read_text())
    with pytest.raises(ProcessLookupError):  # the stage's whole process group was ended
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.1)


def test_a_wrong_data_dir_fails_before_anything_compiles(tmp_path, capsys):
    out = tmp_path / "out"
    code = gpu_run.main(
        [
            str(tmp_path / "nowhere"),
            str(out),
            "--allow-cpu",
            "--python",
            sys.executable,
            "--work",
            str(tmp_path / "work"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("run_gpu.sh: DATA_DIR: CIFAR-10 not found")
    assert "preflight: failed" in (out / "summary.md").read_text()


def test_without_a_compiler_or_a_package_every_other_stage_runs_and_says_why(tmp_path):
    """The preflight's compile fails and pytest-benchmark is missing (both simulated): the
    stages run eagerly, the suite is skipped naming the package, the rest come back."""
    data = real_cifar_dir()
    if data is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10 to dry-run benchmarks/run_gpu.sh")
    out = tmp_path / "out"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "ALLOW_CPU": "1",
        "PYTHON": sys.executable,
        "WORK": str(tmp_path / "work"),
        gpu_run.SIMULATE: "no-compiler,missing=pytest_benchmark",
        "SEEDS": "1",
        "CONV_ARGS": "--batch-size 8 --repeats 1",
        "TRAIN_ARGS": "--device cpu --epochs 1 --train-subset 48 --batch-size 16 "
        "--test-subset 32 --lr-max 0.05 --width 8",
    }
    stages = ["tests", "seeds", "suite", "first-conv"]
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/run_gpu.sh"), str(data), str(out), *stages],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    screen = result.stdout
    assert "torch.compile fails here (RuntimeError: simulated by" in screen
    assert "== suite: skipped: needs pytest_benchmark, not installed for" in screen
    assert "--no-compile" in screen.split("== seeds: ")[1].splitlines()[0]
    assert "-m 'cuda and not compiles'" in screen
    summary = (out / "summary.md").read_text()
    assert "| Preflight | torch.compile failed (RuntimeError: simulated" in summary
    assert "every stage ran eagerly (--no-compile); Python packages: missing pytest_benchmark" in (
        summary
    )
    assert "tests: passed" in summary and "seeds: passed" in summary
    assert "suite: skipped (needs pytest_benchmark" in summary and "first-conv: passed" in summary
    payload = json.loads((out / "results.json").read_text())
    assert [stage["name"] for stage in payload["stages"]] == stages
    assert all(stage["seconds"] > 0 for stage in payload["stages"] if stage["name"] != "suite")


def test_a_summary_that_fails_still_brings_back_the_stages(tmp_path, monkeypatch):
    def broken(*_args):
        raise ImportError("torch is broken here")

    monkeypatch.setattr(gpu_summary, "collect", broken)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "work" / "logs").mkdir(parents=True)
    stage = gpu_run.StageResult("seeds", "failed", 3.0, 1)
    gpu_run.write_out(out, tmp_path / "work", [stage], {"command": "run_gpu.sh"})
    summary = (out / "summary.md").read_text()
    assert "the summary failed (ImportError('torch is broken here'))" in summary
    assert "| seeds | failed  |" in summary
    assert json.loads((out / "results.json").read_text())["stages"][0]["status"] == "failed"
