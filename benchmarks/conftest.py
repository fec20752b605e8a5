"""Options, sizes and the end-of-session report of the benchmark suite.

`pytest benchmarks` alone is smoke mode: every benchmark runs once on tiny sizes (pytest-benchmark's
own timing is disabled), so CI keeps the suite working: 1.5 min on the 2-core AVX2 EPYC, the
prepared GPU command's CPU dry run included. `pytest benchmarks
--benchmark` measures for real, prints the table and writes
`benchmarks/results/<device>-<date>.json` and `.md`.

Smoke mode runs on pytest-xdist workers too (`make test` gives it two): each worker sends its
rows to the controller, which prints the one table. Measuring mode refuses workers: two
processes timing at once on the same cores measure each other.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.hardware import describe_hardware, git_commit, hardware_name, load_average
from benchmarks.reference_pipeline import reference_workers
from benchmarks.report import merge_reports, render_markdown, save_report
from benchmarks.runner import BenchEnv, synthetic_split
from benchmarks.settings import BenchSizes, choose_sizes, config_matrix
from fastcifar.system.device import Precision, cpu_bf16_support, cpu_capability, pick_device
from tests.workers import one_thread_per_worker

one_thread_per_worker()

RESULTS_DIR = Path(__file__).parent / "results"
REPORT = pytest.StashKey[dict[str, Any]]()
WORKER_REPORT = "fastcifar_report"  # the key of a worker's rows in xdist's workeroutput


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastcifar benchmarks")
    group.addoption(
        "--benchmark",
        action="store_true",
        dest="fastcifar_benchmark",
        help="measure for real and save benchmarks/results/ (default: one smoke iteration)",
    )
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda if present)")
    group.addoption(
        "--bench-results",
        default=None,
        help="folder for the results JSON/markdown (default: benchmarks/results; given, a "
        "smoke run writes there too, marked as smoke)",
    )
    group.addoption(
        "--bench-autotune",
        action="store_true",
        help="also time compile mode max-autotune-no-cudagraphs on CUDA (autotunes for minutes)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark reads its options: smoke mode needs one plain call per test.
    if not config.getoption("fastcifar_benchmark"):
        config.option.benchmark_disable = True
    workers = getattr(config.option, "numprocesses", None)
    if workers and (config.getoption("fastcifar_benchmark") or config.getoption("bench_results")):
        raise pytest.UsageError(
            f"--benchmark and --bench-results measure in one process: drop -n {workers} "
            "(workers timing side by side on the same cores measure each other)"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: its rows, for the controller's table."""
    report = session.config.stash.get(REPORT, None)
    if report is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput[WORKER_REPORT] = json.dumps(report)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist never calls it
def pytest_testnodedown(node: Any, error: Any) -> None:
    # pop: after a Ctrl-C xdist reports a worker down twice; its rows count once.
    sent = getattr(node, "workeroutput", {}).pop(WORKER_REPORT, None)
    if sent is not None:
        config = node.config
        config.stash[REPORT] = merge_reports(config.stash.get(REPORT, None), json.loads(sent))


def session_device(config: pytest.Config) -> torch.device:
    return pick_device(config.getoption("bench_device"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_config" in metafunc.fixturenames:
        config = metafunc.config
        device = session_device(config)
        configs = config_matrix(
            device.type,
            autotune=config.getoption("bench_autotune"),
            smoke=not config.getoption("fastcifar_benchmark"),
            native_amp=Precision.choose(device, amp=True).dtype is not None,
        )
        metafunc.parametrize("bench_config", configs, ids=[c.test_id for c in configs])


@pytest.fixture(scope="session")
def bench_env(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> BenchEnv:
    device = session_device(pytestconfig)
    # As fastcifar.training.trainer.build does: cuDNN picks the fastest convolution algorithm per
    # shape.
    torch.backends.cudnn.benchmark = device.type == "cuda"
    sizes = choose_sizes(device.type, full=pytestconfig.getoption("fastcifar_benchmark"))
    report = pytestconfig.stash[REPORT] = new_report(pytestconfig, device, sizes)
    report["meta"]["load_start"] = load_average()
    return BenchEnv(
        device,
        sizes,
        train_split=synthetic_split(sizes.train_images),
        loader_split=synthetic_split(sizes.loader_images),
        scratch=tmp_path_factory.mktemp("bench"),
    )


@pytest.fixture
def bench_report(pytestconfig: pytest.Config, bench_env: BenchEnv) -> Iterator[dict[str, Any]]:
    """The session's report; tests append their result dicts to "epochs" or "loaders". In
    measuring mode it is saved after every test, so that a suite stopped at a time limit
    still leaves the rows it finished."""
    report = pytestconfig.stash[REPORT]
    yield report
    asked = report["sizes"]["full"] or pytestconfig.getoption("bench_results")
    if asked and (report["epochs"] or report["loaders"]):
        report["meta"]["load_end"] = load_average()
        save_report(report, results_folder(pytestconfig))


def results_folder(config: pytest.Config) -> Path:
    folder = config.getoption("bench_results")
    return Path(folder) if folder else RESULTS_DIR


def new_report(config: pytest.Config, device: torch.device, sizes: BenchSizes) -> dict[str, Any]:
    meta = {
        "name": hardware_name(device),
        "hardware": describe_hardware(device),
        "device": str(device),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "command": shlex.join(["pytest", *config.invocation_params.args]),
        "reference_workers": reference_workers(),
        "amp": Precision.choose(device, amp=True).reason,
    }
    if device.type == "cpu":
        meta["cpu_capability"] = cpu_capability()
        meta["native_bf16"] = cpu_bf16_support()[0]
    return {
        "kind": "suite",
        "meta": meta,
        "sizes": {**asdict(sizes), "reduced": sizes.reduced},
        "epochs": [],
        "loaders": [],
    }


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables, so ours ends the output
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = config.stash.get(REPORT, None)
    if report is None or not (report["epochs"] or report["loaders"]):
        return
    report["meta"]["load_end"] = load_average()
    terminalreporter.write_sep("=", "fastcifar benchmarks")
    terminalreporter.write_line(render_markdown(report))
    if report["sizes"]["full"]:
        paths = save_report(report, results_folder(config))
        terminalreporter.write_line("saved " + " and ".join(str(p) for p in paths))
