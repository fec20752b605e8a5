"""benchmarks/peer.py on a slice: the peer's own code runs on the CPU through the patches, its
data written in its format, and the comparison table says both sides."""

from __future__ import annotations

import pytest
import torch

from benchmarks import peer
from tests.cifar_files import synthetic_cifar

pytest.importorskip("airbench")


def test_the_peer_trains_on_this_cpu_and_the_table_compares_it(tmp_path):
    data = synthetic_cifar(512, 200)
    folder = peer.write_peer_data(data, tmp_path / "peer")
    saved = torch.load(folder / "cifar10" / "train.pt", weights_only=True)
    assert saved["images"].shape == (512, 32, 32, 3) and saved["images"].dtype == torch.uint8
    result = peer.run_peer(folder, seed=0, precision="fp32", epochs=1, batch=256)
    assert result.training_images == 512 and 0 <= result.tta_accuracy <= 100
    # 1 epoch = 2 steps of 256 (a slice: its published batch is 1024): the network's 0.236
    # GFLOP forward x 3 per image.
    assert result.training_pflop == pytest.approx(512 * 3 * 0.2363e9 / 1e15, rel=0.01)
    other = peer.Result("fastcifar --recipe airbench", 0, 50.0, 40.0, 2 * result.training_seconds,
                        1.0, 512, 0.001, "fp32")  # fmt: skip
    table = peer.table([result, other])
    assert "| airbench94 (peer) | 0 |" in table and "fastcifar's training time is 2.00x" in table
    sliced = peer.table([result, other], "--train-subset --epochs")
    assert "2.00x the peer's (a slice, --train-subset --epochs: the times compare only" in sliced


def test_the_peer_runs_in_fp32_on_the_cpu_and_the_patches_are_undone():
    before = (torch.Tensor.half, torch.cuda.Event)
    with peer.peer_on_cpu("fp32"):
        assert torch.zeros(1).half().dtype == torch.float32  # its weights and images stay fp32
        assert torch.nn.Conv2d(3, 4, 3).half().weight.dtype == torch.float32
        assert torch.cuda.Event(enable_timing=True).elapsed_time(torch.cuda.Event()) <= 0
    assert (torch.Tensor.half, torch.cuda.Event) == before
    assert torch.zeros(1).half().dtype == torch.float16


def test_fastcifars_side_is_its_airbench_recipe_on_the_same_data(tmp_path):
    data = synthetic_cifar(384, 100)  # 3 steps at batch 128, One Cycle's least: 1024 cost 8x
    result = peer.run_fastcifar(data, tmp_path / "run", 0, epochs=1, batch_size=128, amp=False)
    assert result.side == "fastcifar --recipe airbench" and result.training_images == 384
    assert result.precision == "fp32"  # as the peer on the CPU
    assert result.training_pflop == pytest.approx(384 * 3 * 0.2363e9 / 1e15, rel=0.01)
    assert (tmp_path / "run" / "model.pt").is_file() and 0 <= result.tta_accuracy <= 100


def test_fastcifars_side_can_be_its_muon_recipe(tmp_path):
    data = synthetic_cifar(400, 100)
    result = peer.run_fastcifar(data, tmp_path / "run", 0, recipe="airbench-muon", epochs=1,
                                batch_size=100, amp=False)  # fmt: skip
    assert result.side == "fastcifar --recipe airbench-muon" and result.training_images == 400


def test_the_results_name_the_machine_and_the_versions():
    facts = peer.machine_facts("cpu")
    assert facts["device"].startswith("CPU ") and facts["peer"] == peer.PEER
    assert facts["torch"] == torch.__version__ and facts["commit"]


def test_the_steps_alone_are_timed_in_pairs_on_the_same_batches(tmp_path):
    data = synthetic_cifar(256, 64)
    pairs = peer.step_pairs(data, pairs=2, batch_size=64)
    assert len(pairs.peer) == len(pairs.fastcifar) == 2 and pairs.batch == 64
    assert all(seconds > 0 for seconds in pairs.peer + pairs.fastcifar)
    assert pairs.line().startswith("one training step of 64 images, fp32, 2 pairs: airbench94 ")
