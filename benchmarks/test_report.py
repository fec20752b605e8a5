"""How measured epochs become table rows: extrapolation, ratios, peaks and wording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import hardware, report
from benchmarks.settings import REFERENCE_CONFIG, BenchConfig

ROOT = Path(__file__).resolve().parents[1]


def result(config: BenchConfig, seconds: list[float], images: int = 1024, precision="fp32"):
    return {
        "config": {**config.__dict__, "label": config.label},
        "images_per_epoch": images,
        "epoch_seconds": seconds,
        "warmup_seconds": [9.0],
        "recompiled_frames": 0,
        "precision": precision,
    }


def test_epoch_time_is_the_median_scaled_to_97_steps_of_512() -> None:
    row = report.epoch_row(result(BenchConfig("torch", True, None), [2.0, 9.0, 4.0], 1024, "bf16"))
    assert row.images_per_second == pytest.approx(1024 / 4.0)
    assert row.epoch_seconds == pytest.approx(97 * 512 / 256)
    assert row.tflops == pytest.approx(256 * 3 * 0.76e9 / 1e12)
    assert row.label == "torch · AMP bf16 · channels_last · eager"


def test_baseline_phrase_says_faster_or_slower() -> None:
    assert report.baseline_phrase(3.0) == "3.00× faster than the 24 s/epoch baseline"
    assert report.baseline_phrase(0.25) == "4.00× slower than the 24 s/epoch baseline"


def test_table_gives_each_row_its_ratio_to_the_in_run_reference() -> None:
    rows = [
        report.epoch_row(result(REFERENCE_CONFIG, [8.0])),
        report.epoch_row(result(BenchConfig("torch", False, "default"), [2.0])),
    ]
    table = report.epoch_table(rows, "cpu")
    assert "| 4.00× |" in table and "| 1.00× |" in table
    assert "| n/a |" in table  # a CPU's peak is not known
    assert table.index("torch · fp32") < table.index("reference: torchvision")  # fastest first


@pytest.mark.parametrize(
    ("name", "bf16_peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H200", 989.5),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", None),
        ("NVIDIA GH200 480GB", None),
        ("cpu AMD EPYC 2 cores", None),
    ],
)
def test_peak_lookup_matches_whole_model_names_only(name: str, bf16_peak: float | None) -> None:
    assert hardware.peak_tflops(name, "bf16") == bf16_peak


def test_result_files_are_named_by_device_slug() -> None:
    assert hardware.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_a_smoke_run_on_xdist_workers_prints_one_table_of_every_workers_rows() -> None:
    from benchmarks import conftest

    rows = {"torch": result(REFERENCE_CONFIG, [1.0]), "dali": result(REFERENCE_CONFIG, [2.0])}
    sent = []
    for name, row in rows.items():
        worker = SimpleNamespace(stash=pytest.Stash(), workeroutput={})
        worker.stash[conftest.REPORT] = {"meta": {"from": name}, "epochs": [row], "loaders": []}
        conftest.pytest_sessionfinish(SimpleNamespace(config=worker))
        sent.append(worker.workeroutput)
    controller = SimpleNamespace(stash=pytest.Stash())
    for output in sent:
        conftest.pytest_testnodedown(SimpleNamespace(workeroutput=output, config=controller), None)
    merged = controller.stash[conftest.REPORT]
    assert merged["meta"] == {"from": "torch"} and merged["epochs"] == list(rows.values())
    conftest.pytest_testnodedown(SimpleNamespace(workeroutput={}, config=controller), None)
    assert controller.stash[conftest.REPORT] == merged  # a worker that ran no benchmark


def test_measuring_on_xdist_workers_is_refused_in_one_line() -> None:
    pytest.importorskip("xdist")
    command = [sys.executable, "-m", "pytest", "benchmarks/test_report.py", "-n", "2",
               "--benchmark", "-p", "no:cacheprovider"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "--benchmark and --bench-results measure in one process: drop -n 2" in done.stderr
