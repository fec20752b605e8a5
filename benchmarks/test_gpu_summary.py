"""The table that ends benchmarks/run_gpu.sh, built from the files its stages leave behind, and
the prepared command itself, dry-run end to end on the CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_summary, publish
from fastcifar.statistics import aggregate
from tests.conftest import real_cifar_dir

ROOT = Path(__file__).resolve().parents[1]


def multi_run(folder: Path, groups: list[tuple[float, list[float]]], found: float | None) -> None:
    folder.mkdir(parents=True)
    summary = {
        "status": "complete",
        "range_test": {"lr_min": 0.01, "lr_max": found} if found else None,
        "groups": [
            {
                "lr_max": lr,
                "accuracy": aggregate(values).to_dict(),
                "accuracy_tta": aggregate([v + 0.005 for v in values]).to_dict(),
                "runs": [{"total_train_seconds": 7.0 + i} for i, _ in enumerate(values)],
            }
            for lr, values in groups
        ],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "seed-0").mkdir()
    (folder / "seed-0" / "summary.json").write_text(json.dumps({"device_name": "NVIDIA H100"}))


def test_the_summary_table_reports_every_stage(tmp_path):
    (tmp_path / "cuda-tests.status").write_text("0\n")
    (tmp_path / "cuda-tests.log").write_text("....\n===== 7 passed in 60.1s =====\n")
    multi_run(tmp_path / "seeds", [(0.4, [0.94, 0.941, 0.939, 0.942, 0.938])], found=0.4)
    multi_run(tmp_path / "sweep", [(0.1, [0.93, 0.931]), (0.4, [0.94, 0.942])], found=0.4)
    markdown, device = gpu_summary.render(tmp_path)
    assert device == "NVIDIA H100"
    assert "| CUDA tests (`pytest -m cuda`) | passed: 7 passed in 60.1s |" in markdown
    assert (
        "| Test accuracy, 5 seeds (LRMAX 0.4 found by the range test) | 94.00% ± 0.16%" in markdown
    )
    assert "| … with flip TTA | 94.50% ± 0.16%" in markdown
    assert (
        "| Training time per run (epochs only) | median 9.00 s (min 7.00, max 11.00) |" in markdown
    )
    assert "0.1: 93.05% ± 0.07; 0.4: 94.10% ± 0.14" in markdown
    assert gpu_summary.main([str(tmp_path)]) == 0
    (saved,) = (tmp_path / "results").glob("nvidia-h100-*-training.json")
    text = publish.render(tmp_path / "results")
    assert "### Full 24-epoch training" in text and "94.00% ± 0.16%" in text
    assert json.loads(saved.read_text())["kind"] == "training"


def test_the_prepared_gpu_command_dry_runs_on_the_cpu(tmp_path):
    data = real_cifar_dir()
    if data is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10 to dry-run benchmarks/run_gpu.sh")
    env = {
        **os.environ,
        "ALLOW_CPU": "1",
        "SEEDS": "2",
        "SWEEP": "0.02,0.05",
        "SWEEP_SEEDS": "1",
        "SUITE_ARGS": "",
        "SUITE_K": "reference",
        "TRAIN_ARGS": "--device cpu --epochs 1 --train-subset 48 --batch-size 16 "
        "--test-subset 32 --range-test-steps 4 --no-plots",
        "PYTHON": sys.executable,
    }
    result = subprocess.run(
        ["bash", "benchmarks/run_gpu.sh", str(data), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert "| Test accuracy, 2 seeds" in summary and "| LR sweep" in summary
    assert json.loads((tmp_path / "seeds" / "summary.json").read_text())["status"] == "complete"
    assert list((tmp_path / "results").glob("*-training.json"))
