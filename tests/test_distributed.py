"""Data-parallel training under torchrun, on CPU with gloo: two processes on one machine, and two
"nodes" on loopback. The ranks must agree (identical weights), split every epoch exactly
(disjoint samples that together are the epoch), evaluate every test image once, and write one
run folder; the sharding of all three loaders is checked without processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcifar import load_run
from fastcifar.augmentation import draw_epoch, rank_order
from fastcifar.config import TrainConfig
from fastcifar.device import Precision
from fastcifar.distributed import Distributed, start
from fastcifar.errors import ConfigError
from fastcifar.evaluation import EvalBatches, EvalForward, evaluate
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.loader_helpers import build_loader, random_split

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "ddp_worker.py")
# 3 global batches of 16 (8 per rank) per epoch; 33 test images: the second rank's shard is padded.
FLAGS = ["--device", "cpu", "--epochs", "2", "--train-subset", "48", "--batch-size", "16",
         "--test-subset", "33", "--lr-max", "0.05", "--no-plots"]  # fmt: skip


def torchrun(launcher: list[str], folder: Path, log_name: str) -> subprocess.Popen:
    """`torchrun LAUNCHER tests/ddp_worker.py FLAGS --out FOLDER/run`, logging to a file."""
    data = ["--data-dir", str(real_cifar_dir())] if real_cifar_dir() else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTCIFAR_TEST_DUMP": str(folder)}
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, WORKER, *FLAGS, *data,
               "--out", str(folder / "run")]  # fmt: skip
    with open(folder / log_name, "w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path) -> None:
    # The timeout only keeps a deadlock from hanging CI; the run takes about 20 s on 2 cores.
    try:
        code = process.wait(timeout=900)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"torchrun hung: {log.read_text()[-4000:]}") from None
    assert code == 0, log.read_text()[-4000:]


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
        from fastcifar.data_source import load_cifar10

        data = load_cifar10(real_cifar_dir())
    test = data.test.subset(33)
    single = Distributed()
    forward = EvalForward(model, Precision("cpu", None), tta=False)
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
