"""The beton writer: atomic, every record verified, skips complete files unless forced, ends
cleanly when interrupted; and its CLI. Signals sent to the real script: test_beton_interrupt.py."""

from __future__ import annotations

import _thread
import contextlib
import importlib.util
import io
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tqdm

from tests.cifar_files import synthetic_cifar
from tests.loader_helpers import build_loader, import_backend, random_split

beton = import_backend("fastcifar.data.loaders.beton")
supervised_write = import_backend("fastcifar.data.loaders.supervised_write")
psutil = pytest.importorskip("psutil")  # installed with FFCV

ROOT = Path(__file__).resolve().parents[1]
# Run once, in the parent, by the next fork of this process (FFCV starting a worker).
AFTER_NEXT_FORK: list[Callable[[], None]] = []


def run_after_fork() -> None:
    while AFTER_NEXT_FORK:
        AFTER_NEXT_FORK.pop()()


os.register_at_fork(after_in_parent=run_after_fork)


def files(folder: Path) -> list[str]:
    """What a folder holds besides the writers' lock file (which only serialises writers)."""
    return sorted(p.name for p in folder.iterdir() if p.name != beton.LOCK_NAME)


def load_script():
    spec = importlib.util.spec_from_file_location("write_beton", ROOT / "data_prep/write_beton.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InterruptedWriter(beton.DatasetWriter):
    """Dies where a killed process would: after the data pages, before the header is final."""

    def finalize(self, allocations) -> None:
        raise KeyboardInterrupt


class UnfinishedWriter(beton.DatasetWriter):
    """Leaves the file as a killed process would, without anyone cleaning up."""

    def finalize(self, allocations) -> None:
        pass


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def write_with(writer: type, split, path: Path) -> None:
    fields = {"image": beton.RGBImageField(write_mode="raw"), "label": beton.IntField()}
    writer(str(path), fields, num_workers=1).from_indexed_dataset(beton._Examples(split))


def zero_image(path: Path, index: int) -> None:
    """Zero one stored image in place, as a disk error or a stray write would."""
    pointer = int(beton.Reader(str(path)).metadata["f0"]["data_ptr"][index])
    with open(path, "r+b") as file:
        file.seek(pointer)
        file.write(bytes(3072))


def shared_memory_segments() -> set[Path]:
    """The POSIX shared memory segments (multiprocessing.shared_memory) this process maps."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return {Path(line.split(maxsplit=5)[-1]) for line in maps if "/dev/shm/psm_" in line}


def test_written_beton_holds_the_split_and_nothing_else(tmp_path):
    split = random_split(300)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=1)
    beton.verify_beton(path, split)
    assert files(tmp_path) == ["split.beton"]
    other = random_split(300, seed=1)
    with pytest.raises(beton.BetonError, match="other"):
        beton.verify_beton(path, other)
    with pytest.raises(beton.BetonError, match="holds 300 examples"):
        beton.verify_beton(path, random_split(299))


def test_image_comparison_finds_a_change_in_any_record_wherever_the_file_holds_it(tmp_path):
    # FFCV's workers leave records in runs, out of order, with gaps between pages.
    images = random_split(12).images
    slots = np.array([5, 6, 7, 0, 1, 2, 3, 4, 12, 9, 10, 11])
    pointers = (100 + slots * 3072).astype(np.uint64)
    data = bytearray(100 + 13 * 3072)
    for image, pointer in zip(images, pointers.tolist(), strict=True):
        data[pointer : pointer + 3072] = image.tobytes()
    path = tmp_path / "records"
    path.write_bytes(bytes(data))
    beton._compare_images(path, pointers, images)
    for record in range(len(images)):
        changed = images.copy()
        changed[record, 31, 31, 2] ^= 1
        with pytest.raises(beton.BetonError, match=f"record {record} differs"):
            beton._compare_images(path, pointers, changed)


def test_ensure_beton_rewrites_a_beton_with_one_image_zeroed_in_the_middle(tmp_path):
    split = random_split(300)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=2)
    zero_image(path, 161)  # neither first nor last, nor in the 256 records once sampled
    with pytest.raises(beton.BetonError, match="other images than this split \\(record 161"):
        beton.verify_beton(path, split)
    assert beton.ensure_beton(split, path, workers=1)
    assert beton.beton_holds(path, split)


def test_an_interrupted_write_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(beton, "DatasetWriter", InterruptedWriter)
    with pytest.raises(KeyboardInterrupt):
        beton.write_beton(random_split(100), tmp_path / "split.beton", workers=1)
    assert files(tmp_path) == []


def test_an_interrupted_rewrite_keeps_the_complete_file(tmp_path, monkeypatch):
    split = random_split(100)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=1)
    monkeypatch.setattr(beton, "DatasetWriter", InterruptedWriter)
    with pytest.raises(KeyboardInterrupt):
        beton.ensure_beton(random_split(100, seed=2), path, force=True, workers=1)
    assert beton.beton_holds(path, split)
    assert files(tmp_path) == ["split.beton"]


def test_an_interrupted_write_ends_ffcv_workers_and_frees_its_shared_memory(tmp_path, monkeypatch):
    running: dict[str, object] = {}

    def stalled_fetch(examples, index):
        time.sleep(60)  # the workers never finish on their own: only the interruption ends them

    def interrupt_the_main_loop(seconds: float) -> None:
        # FFCV's main process polls its workers with this sleep once they have all started.
        running["workers"] = multiprocessing.active_children()
        running["segments"] = shared_memory_segments()
        raise KeyboardInterrupt

    monkeypatch.setattr(beton._Examples, "__getitem__", stalled_fetch)
    monkeypatch.setattr(supervised_write.ffcv_writer, "sleep", interrupt_the_main_loop)
    with pytest.raises(KeyboardInterrupt):
        beton.write_beton(random_split(300), tmp_path / "split.beton", workers=2)
    assert len(running["workers"]) >= 2 and len(running["segments"]) == 1
    # Ended by the cleanup, not waited for (each would run a minute): a wall-clock bound instead
    # would depend on the machine.
    ended = {-signal.SIGTERM, -signal.SIGKILL}
    assert all(worker.exitcode in ended for worker in running["workers"])
    assert not any(segment.exists() for segment in running["segments"])
    assert files(tmp_path) == []


@contextlib.contextmanager
def signal_handled_by(number: int, handler: object) -> Iterator[None]:
    """The process's own disposition of `number` is inherited: a shell starts a background job
    with SIGINT ignored, and a test that needs Python's default must set it."""
    previous = signal.signal(number, handler)
    try:
        yield
    finally:
        signal.signal(number, previous)


def stalled_and_counted_polls(monkeypatch) -> list[float]:
    """FFCV's workers never finish, so only a signal ends the write; returns the main loop's
    polls, of which more than 100 mean the signal was lost (instead of a hang)."""
    polls: list[float] = []
    original = supervised_write.ffcv_writer.sleep

    def poll(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) > 100:
            raise AssertionError("the signal was lost: the write went on")
        original(seconds)

    monkeypatch.setattr(beton._Examples, "__getitem__", lambda examples, index: time.sleep(60))
    monkeypatch.setattr(supervised_write.ffcv_writer, "sleep", poll)
    return polls


@pytest.mark.parametrize(
    ("number", "handler", "raised"),
    [
        (signal.SIGINT, signal.default_int_handler, KeyboardInterrupt),
        (signal.SIGTERM, signal.SIG_DFL, SystemExit),  # no Python handler: held, then exit 143
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_stop_signal_while_ffcv_starts_a_worker_is_not_lost_and_ends_the_write(
    tmp_path, monkeypatch, number, handler, raised
):
    # Python prints and drops an exception raised in an after-fork hook: the write then ran on
    # as if the signal had never come.
    segments: set[Path] = set()

    def stop() -> None:
        segments.update(shared_memory_segments())
        # As when another thread (FFCV's queue feeder) catches the signal: the main thread
        # runs the handler at its next step, which is inside this hook.
        _thread.interrupt_main(number)

    polls = stalled_and_counted_polls(monkeypatch)
    children = set(psutil.Process().children())
    AFTER_NEXT_FORK.append(stop)
    with signal_handled_by(number, handler):
        with pytest.raises(raised) as stopped:
            beton.write_beton(random_split(4), tmp_path / "split.beton", workers=2)
        assert signal.getsignal(number) == handler  # the write put it back
    assert len(polls) == 1  # raised at the main loop's first poll after the workers started
    assert raised is not SystemExit or stopped.value.code == 143
    new = set(psutil.Process().children()) - children
    assert all("resource_tracker" in " ".join(child.cmdline()) for child in new)
    assert len(segments) == 1 and not any(segment.exists() for segment in segments)
    assert files(tmp_path) == []


def test_a_sigint_the_process_ignores_leaves_the_write_to_finish(tmp_path):
    # A job a shell starts in the background ignores SIGINT: the write keeps to that.
    split = random_split(4)
    AFTER_NEXT_FORK.append(lambda: _thread.interrupt_main(signal.SIGINT))
    with signal_handled_by(signal.SIGINT, signal.SIG_IGN):
        path = beton.write_beton(split, tmp_path / "split.beton", workers=2)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert not AFTER_NEXT_FORK  # the signal did come, while a worker started
    assert beton.beton_holds(path, split)


def test_a_file_left_by_a_killed_write_never_passes_as_complete(tmp_path):
    split = random_split(100)
    path = tmp_path / "split.beton"
    write_with(UnfinishedWriter, split, path)
    assert path.stat().st_size > 100 * 3072  # the data is there, only the header is missing
    assert not beton.beton_holds(path, split)
    complete = beton.write_beton(split, tmp_path / "complete.beton", workers=1)
    truncated = tmp_path / "truncated.beton"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    assert not beton.beton_holds(truncated, split)


def test_ensure_beton_skips_a_complete_file_unless_forced(tmp_path):
    split = random_split(100)
    path = tmp_path / "split.beton"
    assert beton.ensure_beton(split, path, workers=1)
    first = path.stat().st_ino
    assert not beton.ensure_beton(split, path, workers=1)
    assert path.stat().st_ino == first
    assert beton.ensure_beton(split, path, force=True, workers=1)
    assert path.stat().st_ino != first and beton.beton_holds(path, split)


def test_ensure_beton_rewrites_a_file_that_holds_other_data(tmp_path):
    path = tmp_path / "split.beton"
    beton.write_beton(random_split(100, seed=3), path, workers=1)
    split = random_split(100)
    assert beton.ensure_beton(split, path, workers=1)
    assert beton.beton_holds(path, split)


def test_write_progress_is_one_plain_labelled_line_when_stderr_is_no_terminal(tmp_path, capsys):
    beton.write_beton(random_split(50), tmp_path / "split.beton", workers=1)
    assert capsys.readouterr().err == "writing split.beton: 50 records\n"


def test_write_progress_bar_on_a_terminal_is_labelled_with_the_file_name(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    beton.write_beton(random_split(50), tmp_path / "split.beton", workers=1)
    assert "writing split.beton: 100%" in terminal.getvalue()
    assert (
        supervised_write.ffcv_writer.tqdm is tqdm.tqdm
    )  # FFCV's own bar is back for other callers


def test_bad_input_fails_before_ffcv_starts_its_workers(tmp_path):
    split = random_split(10)
    with pytest.raises(ValueError, match="uint8"):
        beton.write_beton(type(split)(split.images.astype(np.int16), split.labels), tmp_path / "b")
    assert files(tmp_path) == []


def test_cli_writes_both_splits_keeps_them_rewrites_a_corrupted_one_and_forces_a_rewrite(
    tmp_path, monkeypatch, capsys
):
    script = load_script()
    data = synthetic_cifar(train=300, test=100)
    out = tmp_path / "out"
    script.main(["--out-dir", str(out)], data=data)
    train, test = out / "cifar10_train.beton", out / "cifar10_test.beton"
    assert beton.beton_holds(train, data.train) and beton.beton_holds(test, data.test)
    assert capsys.readouterr().out.count("wrote") == 2
    inodes = train.stat().st_ino, test.stat().st_ino
    script.main(["--out-dir", str(out)], data=data)
    assert capsys.readouterr().out.count("kept") == 2
    assert (train.stat().st_ino, test.stat().st_ino) == inodes
    zero_image(train, 146)  # neither first nor last, nor in the 256 records once sampled
    script.main(["--out-dir", str(out)], data=data)
    wrote, kept = capsys.readouterr().out.splitlines()
    assert wrote.startswith(f"wrote {train} (") and wrote.endswith("): all 300 records verified")
    assert kept == f"kept {test}: already complete, all 100 records verified (--force rewrites it)"
    assert train.stat().st_ino != inodes[0] and beton.beton_holds(train, data.train)
    script.main(["--out-dir", str(out), "--force"], data=data)
    assert capsys.readouterr().out.count("wrote") == 2
    assert test.stat().st_ino != inodes[1] and beton.beton_holds(test, data.test)


def test_ffcv_loader_writes_a_missing_beton_path_and_refuses_a_wrong_one(tmp_path):
    split = random_split(200)
    path = tmp_path / "split.beton"
    build_loader("ffcv", split, batch_size=50, beton_path=path)
    assert beton.beton_holds(path, split)
    with pytest.raises(beton.BetonError, match=r"other .*\(data_prep/write_beton.py --force\)"):
        build_loader("ffcv", random_split(200, seed=1), batch_size=50, beton_path=path)
