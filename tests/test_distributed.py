"""Data-parallel training under torchrun, on CPU with gloo: two processes on one machine, and two
"nodes" on loopback. The ranks must agree (identical weights), split every epoch exactly
(disjoint samples that together are the epoch), evaluate every test image once, and write one
run folder; the sharding of all three loaders is checked without processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcifar import load_run
from fastcifar.data.augmentation import draw_epoch, rank_order
from fastcifar.engine.evaluation import EvalBatches, EvalForward, evaluate
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.system.device import Precision
from fastcifar.system.distributed import Distributed, start
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.loader_helpers import build_loader, random_split
from tests.runs import NARROW, TWO_EPOCHS, exit_code
from tests.workers import TEST_THREADS

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "ddp_worker.py")
# 3 global batches of 16 (8 per rank) per epoch; 33 test images: the second rank's shard is padded.
FLAGS = [*NARROW, "--device", "cpu", "--epochs", "2", "--train-subset", "48",
         "--batch-size", "16", "--test-subset", "33", "--lr-max", "0.05", "--no-plots"]  # fmt: skip


def torchrun(
    launcher: list[str],
    folder: Path,
    log_name: str,
    flags: list[str] = FLAGS,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`torchrun LAUNCHER tests/ddp_worker.py FLAGS --out FOLDER/run`, logging to a file."""
    data = ["--data-dir", str(real_cifar_dir())] if real_cifar_dir() else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTCIFAR_TEST_DUMP": str(folder), **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, WORKER, *flags, *data,
               "--out", str(folder / "run")]  # fmt: skip
    with open(folder / log_name, "w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path, expected: int = 0) -> str:
    """The job's log, once torchrun has exited with `expected`."""
    # The timeout only keeps a deadlock from hanging CI; the run takes about 20 s on 2 cores.
    try:
        code = process.wait(timeout=900)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"torchrun hung: {log.read_text()[-4000:]}") from None
    assert code == expected, log.read_text()[-4000:]
    return log.read_text()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    finish(torchrun(["--standalone", "--nproc_per_node=2"], folder, "log.txt"), folder / "log.txt")
    return folder


def test_two_ranks_write_one_run_folder_and_only_rank_0_speaks(ddp):
    summary = json.loads((ddp / "run" / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert len(summary["rank_devices"]) == 2
    assert sorted(p.name for p in ddp.iterdir()) == ["log.txt", "rank0.pt", "rank1.pt", "run"]
    log = (ddp / "log.txt").read_text()
    assert log.count("epoch 1/2 ") == 1 and log.count("test accuracy") == 1


def test_the_ranks_end_with_identical_weights(ddp):
    first = torch.load(ddp / "rank0.pt", weights_only=True)
    second = torch.load(ddp / "rank1.pt", weights_only=True)
    assert (first["rank"], second["rank"]) == (0, 1)
    assert not first["syncs_buffers"]  # yet the BatchNorm statistics below agree
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    saved = torch.load(ddp / "run" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in first["model"].items())


def test_each_epoch_splits_into_disjoint_rank_samples_that_make_up_the_subset(ddp):
    first = torch.load(ddp / "rank0.pt", weights_only=True)["indices"]
    second = torch.load(ddp / "rank1.pt", weights_only=True)["indices"]
    assert len(first) == len(second) == 2
    for mine, theirs in zip(first, second, strict=True):
        assert len(mine) == len(theirs) == 24  # 3 steps of 8 on each rank
        assert not set(mine.tolist()) & set(theirs.tolist())
        assert sorted(mine.tolist() + theirs.tolist()) == list(range(48))
    assert first[0].tolist() != first[1].tolist()


def test_the_sharded_evaluation_equals_a_single_process_one(ddp, monkeypatch):
    summary = json.loads((ddp / "run" / "summary.json").read_text())
    assert summary["test_examples"] == 33  # counted once, padding excluded
    model = load_run(ddp / "run", device="cpu").model
    data = synthetic_cifar(256, 100)
    if real_cifar_dir() is not None:
        from fastcifar.data.source import load_cifar10

        data = load_cifar10(real_cifar_dir())
    test = data.test.subset(33)
    single = Distributed()
    # The precision the run evaluated in: bf16 on a CPU with AMX or AVX512_BF16, else fp32.
    forward = EvalForward(model, Precision.choose(torch.device("cpu"), None), tta=False)
    result = evaluate(forward, EvalBatches(test, 1000, torch.device("cpu"), single,
                                           data.normalisation),
                      torch.from_numpy(test.labels), single)  # fmt: skip
    assert result.plain.accuracy == summary["final_test_accuracy"]
    assert result.plain.loss == pytest.approx(summary["final_test_loss"], rel=1e-5)


def test_two_nodes_on_loopback_train_together(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=loopback"]  # fmt: skip
    nodes = [
        torchrun([*launcher, f"--node-rank={rank}"], tmp_path, f"node{rank}.txt") for rank in (0, 1)
    ]
    for rank, node in enumerate(nodes):
        finish(node, tmp_path / f"node{rank}.txt")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 2


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_one_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="batch_size 512 does not divide among 3 ranks"):
        start(None, TrainConfig().batch_size, data_parallel=True)


@pytest.mark.parametrize("name", ["torch", "ffcv", "dali"])
def test_every_loader_shards_an_epoch_into_disjoint_equal_rank_slices(name):
    split = random_split(100)  # labels are the example ids
    served = []
    for rank in (0, 1):
        loader = build_loader(name, split, batch_size=16, shuffle=True, drop_last=True, seed=3,
                              rank=rank, world_size=2, augment=True)  # fmt: skip
        loader.set_epoch(4)
        served.append([labels.tolist() for _, labels in loader])
    assert len(served[0]) == len(served[1]) == 3  # 100 // 32 global batches
    first = [i for batch in served[0] for i in batch]
    second = [i for batch in served[1] for i in batch]
    assert not set(first) & set(second)
    expected = rank_order(draw_epoch(100, 3, 4, shuffle=True).order, 32, 0, 1)
    for step in range(3):  # rank r serves the r-th half of each single-process batch
        assert served[0][step] + served[1][step] == expected[step * 32 : (step + 1) * 32].tolist()


def test_evaluation_shards_cover_the_test_set_once_with_equal_batch_counts():
    split = synthetic_cifar(16, 33).test
    shards = [EvalBatches(split, 8, torch.device("cpu"), Distributed(rank, rank, 2, "gloo"))
              for rank in (0, 1)]  # fmt: skip
    assert [len(shard) for shard in shards] == [3, 3] and [s.count for s in shards] == [17, 16]
    # 17 images per shard in 3 batches of at most 8: batches of 6, the least padding.
    assert [s.batch_size for s in shards] == [6, 6]
    labels = np.concatenate([s.labels.numpy() for s in shards])
    assert (labels == -1).sum() == 2 * 3 * 6 - 33
    assert labels[labels >= 0].tolist() == split.labels.tolist()


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_ends_as_if_never_stopped(ddp, tmp_path):
    """Rank 1 is SIGKILLed at its 4th step (epoch 2); rank 0 sees the peer gone and stops in
    one line; torchrun restarts both, which continue from the checkpoint after epoch 1."""
    launcher = ["--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    job = torchrun(launcher, tmp_path, "log.txt", [*FLAGS, "--checkpoint-every", "1"],
                   {"FASTCIFAR_TEST_KILL_AT": "4"})  # fmt: skip
    log = finish(job, tmp_path / "log.txt")
    assert "rank 0: a peer rank is gone" in log and "Traceback" not in log.split("rank 0:")[1][:300]
    assert f"resuming {tmp_path / 'run'} after epoch 1" in log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["resumed"]
    restarted, whole = (
        weights_of(tmp_path / "run" / "model.pt"),
        weights_of(ddp / "run" / "model.pt"),
    )
    assert all(torch.equal(restarted[key], whole[key]) for key in whole)


def test_a_resume_by_another_number_of_processes_is_refused_in_one_line(tmp_path, capsys):
    from fastcifar.train import main as train_main

    flags, kill = [*FLAGS, "--checkpoint-every", "1"], {"FASTCIFAR_TEST_KILL_AT": "4"}
    job = torchrun(["--standalone", "--nproc_per_node=2"], tmp_path, "log.txt", flags, kill)
    finish(job, tmp_path / "log.txt", expected=1)  # no restarts: the job fails, resumable
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (checkpoint["world_size"], checkpoint["rank_batch"]) == (2, 8)
    data = None if real_cifar_dir() else synthetic_cifar(256, 100)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--resume", str(tmp_path / "run")], data=data)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    command = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2"
    assert error.count("\n") == 1 and "was trained by 2 processes and this is 1" in error
    assert f"resume it with {command} -m fastcifar.train --resume {tmp_path / 'run'}" in error


def test_ranks_training_seeds_in_parallel_aggregate_like_one_process(tmp_path):
    """--seeds 4 on 2 ranks: each rank trains 2 whole runs on its own; the aggregate equals
    the one-process --seeds 4 aggregate, seed for seed (both with the thread count that
    tests/conftest.py sets, which the workers import too)."""
    from fastcifar.train import main as train_main

    flags = [*FLAGS[:-3], "--lr-max", "0.05", "--no-plots", "--seeds", "4", "--epochs", "1"]
    finish(torchrun(["--standalone", "--nproc_per_node=2"], tmp_path, "log.txt", flags),
           tmp_path / "log.txt")  # fmt: skip
    threads = torch.get_num_threads()  # an FFCV test before may have changed it
    torch.set_num_threads(TEST_THREADS)
    try:
        data = [] if real_cifar_dir() is None else ["--data-dir", str(real_cifar_dir())]
        train_main([*flags, *data, "--out", str(tmp_path / "alone")],
                   data=None if real_cifar_dir() else synthetic_cifar(256, 100))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    parallel = json.loads((tmp_path / "run" / "summary.json").read_text())
    alone = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert parallel["parallel"] == "runs" and parallel["world_size"] == 2
    (ours,), (theirs,) = parallel["groups"], alone["groups"]
    for key in ("accuracy", "accuracy_tta", "diverged_seeds"):
        assert ours[key] == theirs[key], key
    accuracies = [(r["seed"], r["final_test_accuracy"]) for r in ours["runs"]]
    assert accuracies == [(r["seed"], r["final_test_accuracy"]) for r in theirs["runs"]]
    for seed in range(4):
        mine = weights_of(tmp_path / "run" / f"seed-{seed}" / "model.pt")
        reference = weights_of(tmp_path / "alone" / f"seed-{seed}" / "model.pt")
        assert all(torch.equal(mine[key], reference[key]) for key in reference), seed
        trained_by = json.loads((tmp_path / "run" / f"seed-{seed}" / "summary.json").read_text())
        assert trained_by["world_size"] == 1  # a whole run on one rank


def test_a_flag_error_under_torchrun_is_said_once(tmp_path):
    job = torchrun(["--standalone", "--nproc_per_node=2"], tmp_path, "log.txt",
                   [*FLAGS, "--epochs", "0"])  # fmt: skip
    log = finish(job, tmp_path / "log.txt", expected=1)  # torchrun's own status for failures
    assert log.count("--epochs: must be a positive integer, got 0") == 1


def test_the_resume_hint_under_torchrun_is_the_torchrun_command(monkeypatch):
    from fastcifar.records.run_folder import resume_command
    from fastcifar.system.distributed import launch_command

    python = sys.executable
    assert launch_command("fastcifar.train --resume r") == f"{python} -m fastcifar.train --resume r"
    # Pasted into a shell, a folder with a space is still one argument.
    assert resume_command(Path("runs/my run")).endswith("--resume 'runs/my run'")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch_command("fastcifar.train --resume r") == (
        f"{python} -m torch.distributed.run --nnodes=2 --nproc_per_node=2 --rdzv-backend=c10d "
        "--rdzv-endpoint=HOST:PORT --rdzv-id=ID -m fastcifar.train --resume r"
    )
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert launch_command("fastcifar.train --resume r") == (
        f"{python} -m torch.distributed.run --standalone --nproc_per_node=4 -m fastcifar.train "
        "--resume r"
    )


@pytest.mark.parametrize(
    ("visible", "local_rank", "expected"),
    [(8, 3, "cuda:3"), (1, 3, "cuda:0"), (2, 3, None)],
    ids=["one machine, all GPUs", "srun: one GPU per process", "fewer GPUs than ranks"],
)
def test_each_rank_takes_its_gpu(monkeypatch, visible, local_rank, expected):
    from fastcifar.system.distributed import local_device_name

    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    if expected is None:
        with pytest.raises(ConfigError, match="LOCAL_RANK 3 but sees 2 GPU"):
            local_device_name("cuda")
    else:
        assert local_device_name("cuda") == expected


def test_evaluation_on_8_ranks_pads_under_5_percent():
    split = synthetic_cifar(16, 10_000).test
    shards = [EvalBatches(split, 1000, torch.device("cpu"), Distributed(rank, rank, 8, "gloo"))
              for rank in range(8)]  # fmt: skip
    slots = sum(len(shard) * shard.batch_size for shard in shards)
    assert sum(s.count for s in shards) == 10_000 and (slots - 10_000) / slots < 0.05


def test_an_error_of_rank_0_reaches_every_rank_as_the_same_error():
    from fastcifar.errors import CheckpointError, Interrupted
    from fastcifar.system.distributed import describe_error, rebuild_error

    stop = rebuild_error(*describe_error(Interrupted("interrupted by SIGTERM", 143, ": resume")))
    assert isinstance(stop, Interrupted) and stop.exit_code == 143
    assert str(stop) == "interrupted by SIGTERM: resume"
    refusal = rebuild_error(*describe_error(CheckpointError("x.pt is not a regular file")))
    assert isinstance(refusal, CheckpointError) and str(refusal) == "x.pt is not a regular file"


def test_max_steps_stops_at_its_step_even_between_the_votes_of_a_gpu():
    """Under DDP on a GPU the ranks vote on a stop every 8 steps; --max-steps is the same on
    every rank, so it stops at its step, off the votes' rhythm (every rank agrees on why)."""
    from types import SimpleNamespace

    from fastcifar.training.limits import Limits
    from fastcifar.training.loop import TrainingRun

    votes = []
    dist = SimpleNamespace(
        stop_vote=lambda code, done, device: votes.append(done) or 0, agree=lambda code: code
    )
    run = SimpleNamespace(
        limits=Limits(max_steps=10),
        stop=SimpleNamespace(received=None),
        state=SimpleNamespace(epoch=0),
        trainer=SimpleNamespace(steps_per_epoch=97, dist=dist, device=torch.device("cuda")),
        limit=None,
    )
    run._wanted = lambda step: TrainingRun._wanted(run, step)
    assert not TrainingRun._should_stop(run, 9) and votes == [9]
    assert TrainingRun._should_stop(run, 10) and run.limit == "--max-steps 10" and run.agreed == 1


@pytest.mark.parametrize(
    ("other_rank", "code", "line"),
    [
        (1, 0, "stopped at --max-time 60.0 min after epoch 1: resume with "),
        (2 + signal.SIGTERM, 143, "interrupted by SIGTERM after epoch 1: resume with "),
    ],
)
def test_the_ranks_stop_for_the_reason_they_agree_on(tmp_path, monkeypatch, capsys, other_rank,
                                                     code, line):  # fmt: skip
    """A rank whose own clock and signals say nothing still stops as the others do: with their
    --max-time (exit 0), or their signal (its exit status), never as a SIGINT of its own."""
    votes = []

    def agree(self, mine):  # the other rank: its reason from the vote after epoch 1 on
        votes.append(mine)
        return max(mine, other_rank if len(votes) >= 2 else 0)

    monkeypatch.setattr(Distributed, "agree", agree)
    out = tmp_path / "run"
    argv = [*TWO_EPOCHS, "--max-time", "1h", "--out", str(out)]
    assert exit_code(argv, synthetic_cifar(64, 32)) == code
    assert capsys.readouterr().err.strip().startswith(line)
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert votes == [0, 0]  # neither the clock nor a signal of this rank's own


def test_a_rank_whose_state_is_finite_diverges_with_the_one_whose_state_is_not(
    tmp_path, monkeypatch, capsys
):
    """BatchNorm statistics are each rank's own between evaluations: when another rank's turn
    non-finite, this rank calls the run diverged too (the verdict is agreed), so no rank writes
    a checkpoint that another has refused."""
    flags = []

    def any_rank(self, flag):  # the other rank: its running variance is infinite
        flags.append(flag)
        return True

    monkeypatch.setattr(Distributed, "any", any_rank)
    out = tmp_path / "run"
    argv = [*TWO_EPOCHS, "--checkpoint-every", "1", "--out", str(out)]
    assert exit_code(argv, synthetic_cifar(64, 32)) == 3
    error = capsys.readouterr().err
    assert "weights, BatchNorm statistics, momentum or averages are not finite in epoch 1" in error
    assert flags == [False]  # this rank's own state was finite
    assert not (out / "checkpoint.pt").exists()
