"""data_prep/write_beton.py stopped mid-write by Ctrl-C or SIGTERM, in a real process: it exits at
once with the shell's status for the signal and leaves no file, process or shared memory behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loader_helpers import import_backend

beton = import_backend("fastcifar.data.loaders.beton")  # the script needs FFCV
psutil = pytest.importorskip("psutil")  # installed with FFCV

ROOT = Path(__file__).resolve().parents[1]
# The real script, on data that needs no download, with a dataset on which FFCV's workers never
# finish: whatever the number of cores, only the test's signal ends the write.
RUN_SCRIPT = """
import runpy, sys, time
import numpy as np
from fastcifar.cli import run_main
from fastcifar.data.dataset import CifarSplit, Dataset
from fastcifar.data.loaders import beton

def split(count):
    return CifarSplit(np.zeros((count, 32, 32, 3), np.uint8), np.zeros(count, np.int64))

data = Dataset(split(1000), split(100), tuple("abcdefghij"))
beton._Examples.__getitem__ = lambda examples, index: time.sleep(3600)
script = runpy.run_path("data_prep/write_beton.py")  # its functions, not its __main__
run_main(lambda: script["main"](sys.argv[1:], data=data))
"""


def ctrl_c(pid: int) -> None:
    os.killpg(pid, signal.SIGINT)  # a terminal sends it to the whole foreground process group


def sigterm(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)  # `kill PID`: only the script hears it, not FFCV's workers


STOPS = {"ctrl_c": (ctrl_c, 130), "sigterm": (sigterm, 143)}
HANG_GUARD_S = 600  # not a speed requirement: only what a hang would exceed


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    """A running script for each way of stopping it, all started at once: most of their start-up
    is importing torch and FFCV (7 s on 2 cores, one core each), which then overlaps."""
    started = {}
    try:
        for name in STOPS:
            out = tmp_path_factory.mktemp(name) / "out"
            started[name] = (start_script(out), out)
        yield started
    finally:
        for script, _ in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(script.pid, signal.SIGKILL)  # only left if a test failed
            script.wait()
            script.stdout.close()
            script.stderr.close()


@pytest.mark.parametrize("stop_name", STOPS)
def test_a_stopped_write_exits_at_once_leaving_no_file_process_or_shared_memory(
    scripts, stop_name: str
):
    stop, exit_status = STOPS[stop_name]
    script, out = scripts[stop_name]
    segments = wait_until_writing(script, out)
    stop(script.pid)
    # FFCV's workers here never finish: only the signal can end the script, so its exit proves
    # the point without a time limit (it took 1.5 s on 2 busy cores); the timeout only keeps a
    # hung script from hanging the suite.
    stderr = script.communicate(timeout=HANG_GUARD_S)[1]
    assert script.returncode == exit_status, stderr
    # A grace for the kernel to reap them, not a speed bound: a worker left behind sleeps on.
    assert psutil.wait_procs(processes_in_session(script.pid), timeout=30)[1] == []
    left = [p.name for p in out.iterdir() if p.name != beton.LOCK_NAME]
    assert left == []  # no hidden .partial file, no beton
    assert not any(segment.exists() for segment in segments)
    *progress, last = stderr.splitlines()
    assert last.startswith("interrupted") and "Traceback" not in stderr, stderr
    assert all(line.startswith("writing cifar10_train.beton") for line in progress), stderr


def start_script(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, "--out-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group and session, which hold all it starts
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_writing(script: subprocess.Popen, out: Path) -> set[Path]:
    """Wait until the script has a partial file and FFCV workers; return the shared memory
    segments it maps (FFCV's)."""
    main = psutil.Process(script.pid)
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        assert script.poll() is None, script.communicate()
        maps = Path(f"/proc/{script.pid}/maps").read_text().splitlines()
        segments = {Path(line.split()[-1]) for line in maps if "/dev/shm/psm_" in line}
        # Its children: the resource tracker (started with the shared memory) and the workers.
        if segments and list(out.glob(".*.partial")) and len(main.children()) >= 2:
            return segments
        time.sleep(0.05)
    pytest.fail("the script never started writing")


def processes_in_session(session: int) -> list[psutil.Process]:
    """Every live process of the session, wherever it was re-parented."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def test_a_killed_write_takes_its_workers_along_and_the_next_write_removes_its_file(tmp_path):
    """SIGKILL, which no handler sees: the kernel ends FFCV's workers with the script (their
    parent-death signal), so no worker sleeps on holding the output pipes (a `| tee` would wait
    forever) and FFCV's shared memory goes; the hidden partial file is removed the next time
    a beton is written there."""
    out = tmp_path / "out"
    script = start_script(out)
    try:
        segments = wait_until_writing(script, out)
        workers = [p for p in psutil.Process(script.pid).children() if "resource_tracker" not in
                   " ".join(p.cmdline())]  # fmt: skip
        os.kill(script.pid, signal.SIGKILL)
        # A grace for the kernel to reap them: without the parent-death signal they would sleep
        # in their hour-long fetch, holding the pipes that communicate() waits on.
        assert psutil.wait_procs(workers, timeout=30)[1] == []
        script.communicate(timeout=HANG_GUARD_S)
        assert script.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 30  # the resource tracker unlinks it once alone
        while any(segment.exists() for segment in segments) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(segment.exists() for segment in segments)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
    assert list(out.glob(".*.partial"))  # left by the killed write ...
    from tests.loader_helpers import random_split

    beton.ensure_beton(random_split(20), out / "again.beton", workers=1)
    assert not list(out.glob(".*.partial"))  # ... and removed by the next one


FAILING_WORKER = RUN_SCRIPT.replace(
    "lambda examples, index: time.sleep(3600)",
    "lambda examples, index: (_ for _ in ()).throw(OSError(28, 'No space left on device'))",
)


def test_a_failing_writer_process_ends_the_write_in_one_line_leaving_no_file(tmp_path):
    out = tmp_path / "out"
    script = subprocess.Popen(
        [sys.executable, "-c", FAILING_WORKER, "--out-dir", str(out)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # It hung before (FFCV waits on records a dead worker never counts); the guard only keeps
    # a hang from hanging the suite.
    stderr = script.communicate(timeout=HANG_GUARD_S)[1]
    assert script.returncode == 2, stderr
    assert stderr.splitlines()[-1].startswith(
        "error: writing cifar10_train.beton: an FFCV writer process failed (exit status 1"
    ), stderr
    assert psutil.wait_procs(processes_in_session(script.pid), timeout=30)[1] == []
    assert [p.name for p in out.iterdir()] == []  # no .partial, no beton, no lock
