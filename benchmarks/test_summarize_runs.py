"""Summaries of repeated training runs (run_gpu.sh) and BENCHMARKS.md, built from fake files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import publish, summarize_runs


def write_run(root: Path, name: str, accuracy: float, seconds: float, wall: float | None = None):
    folder = root / name
    folder.mkdir()
    summary = {
        "config": {"seed": int(name[-1])},
        "final_test_accuracy": accuracy,
        "total_train_seconds": seconds,
        "epoch_seconds": [seconds / 24] * 24,
        "eval_seconds": [0.1] * 24,
        "device_name": "NVIDIA H100 80GB HBM3",
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    if wall is not None:
        (folder / summarize_runs.WALL_SECONDS_FILE).write_text(f"{wall}\n")
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [
        write_run(tmp_path, "gpu-seed-0", 0.94, 6.0, wall=30.0),
        write_run(tmp_path, "gpu-seed-1", 0.93, 8.0, wall=31.0),
        write_run(tmp_path, "gpu-seed-2", 0.95, 7.0, wall=29.0),
    ]


def test_summary_gives_mean_sample_std_and_medians(three_runs: list[Path]) -> None:
    summary = summarize_runs.summarize([summarize_runs.read_run(f) for f in three_runs])
    assert summary.runs == 3
    assert summary.accuracy_mean == pytest.approx(0.94)
    assert summary.accuracy_std == pytest.approx(0.01)  # sample std (n - 1) of .93/.94/.95
    assert summary.median_train_seconds == 7.0
    assert summary.median_train_and_eval_seconds == pytest.approx(7.0 + 2.4)
    assert summary.median_wall_seconds == 30.0


def test_single_run_has_zero_std_and_missing_wall_time_reads_na(tmp_path: Path) -> None:
    records = [summarize_runs.read_run(write_run(tmp_path, "gpu-seed-0", 0.9, 5.0))]
    summary = summarize_runs.summarize(records)
    assert summary.accuracy_std == 0.0
    assert summary.median_wall_seconds is None
    assert "| median n/a |" in summarize_runs.format_summary(records, summary)


def test_main_prints_one_table_and_saves_json(three_runs: list[Path], tmp_path: Path, capsys):
    save_dir = tmp_path / "results"
    args = [*map(str, three_runs), "--save-dir", str(save_dir), "--command", "run_gpu.sh 3"]
    assert summarize_runs.main(args) == 0
    out = capsys.readouterr().out
    assert "| **3 runs** | | **94.00% ± 1.00%** | median 7.0 |" in out
    (saved,) = save_dir.glob("nvidia-h100-80gb-hbm3-*-training.json")
    assert json.loads(saved.read_text())["summary"]["runs"] == 3


def test_main_reports_a_missing_summary_in_one_line(tmp_path: Path, capsys) -> None:
    assert summarize_runs.main([str(tmp_path / "nowhere")]) == 1
    assert "summary.json not found" in capsys.readouterr().err


def test_publish_renders_the_newest_training_result_per_device(three_runs, tmp_path: Path):
    save_dir = tmp_path / "results"
    records = [summarize_runs.read_run(f) for f in three_runs]
    summarize_runs.save_summary(records, summarize_runs.summarize(records), save_dir, "x")
    text = publish.render(save_dir)
    assert text.startswith("# Benchmarks")
    assert "## NVIDIA H100 80GB HBM3" in text
    assert "94.00% ± 1.00%" in text
