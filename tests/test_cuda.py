"""The CUDA fast path (`pytest -m cuda`; skipped without a GPU): every loader meets the spec on
the GPU, the training step is captured as CUDA graphs with none skipped, a compiled run records
each graph once and says so in its summary, bf16 and fp16 + GradScaler
steps train, --device cuda:0 leaves the other GPUs alone, and the first-conv benchmark
(benchmarks/first_conv.py) times its variants on the GPU."""

from __future__ import annotations

import json

import pytest
import torch

from fastcifar.data.loaders import LOADER_NAMES
from fastcifar.engine.compilation import compile_counts, compile_model
from fastcifar.engine.model import build_model
from fastcifar.engine.step import StepContext, TrainForward, training_step
from fastcifar.runs import setup
from fastcifar.system.device import Precision
from fastcifar.train import main as train_main
from fastcifar.training import loop
from tests.cifar_files import synthetic_cifar
from tests.loader_helpers import build_loader, coordinate_split, decode_augmented

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("name", LOADER_NAMES)
def test_each_loader_meets_the_spec_on_the_gpu(name):
    # Only a missing FFCV/DALI (a bare GPU machine) skips; any other error fails.
    options = dict(batch_size=64, augment=True, shuffle=True)
    loader = build_loader(name, coordinate_split(256), device="cuda", **options)
    for images, labels in loader:
        assert images.is_cuda and labels.is_cuda
        assert images.is_contiguous(memory_format=torch.channels_last)
        decode_augmented(images)


@pytest.mark.compiles
def test_the_training_step_itself_is_captured_as_cuda_graphs_with_none_skipped():
    device = torch.device("cuda")
    precision = Precision.choose(device, None)
    model = build_model(device, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    forward = compile_model(TrainForward(model, torch.nn.CrossEntropyLoss(), precision),
                            "reduce-overhead")  # fmt: skip
    ctx = StepContext(forward, optimizer, precision.make_scaler())
    images = torch.randn(64, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,), device=device)
    before = compile_counts()
    for _ in range(4):  # warm-up run, recording, replays
        training_step(ctx, images, labels)
    torch.cuda.synchronize()
    captured = compile_counts() - before  # read while `forward` is alive: its trees count
    assert captured.cuda_graph_skips == 0, "a training graph ran without CUDA graphs"
    assert captured.cuda_graphs is not None and captured.cuda_graphs >= 2  # forward and backward


@pytest.mark.compiles
def test_cuda_graphs_are_recorded_once_across_range_test_epochs_and_evaluation(
    tmp_path, monkeypatch
):
    seen = {"start": compile_counts()}
    warm_up, finish = setup.warm_up, loop.TrainingRun._finish

    def counted(*args):
        seconds = warm_up(*args)
        seen["after warm-up"] = compile_counts()
        return seconds

    def finished(self, *args):
        seen["at the end"] = compile_counts()  # the trainer, and so its graphs, still alive
        return finish(self, *args)

    monkeypatch.setattr(setup, "warm_up", counted)
    monkeypatch.setattr(loop.TrainingRun, "_finish", finished)
    out = tmp_path / "run"
    train_main(["--epochs", "2", "--train-subset", "1024", "--batch-size", "256", "--test-subset",
                "300", "--eval-batch-size", "128", "--range-test-steps", "5", "--no-plots",
                "--device", "cuda", "--out", str(out)],
               data=synthetic_cifar(1024, 300))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compile_mode"] == "reduce-overhead" and summary["precision"] in ("bf16", "fp16")
    warmed = seen["after warm-up"] - seen["start"]
    assert warmed.cuda_graph_skips == 0, "a graph ran without CUDA graphs"
    assert warmed.cuda_graphs >= 3  # the training step's forward and backward, the evaluation
    after = seen["at the end"]
    assert after == seen["after warm-up"], f"compiled or recorded again: {after}"
    recorded = summary["compile_counts"]  # every run says whether its steps ran as graphs
    assert (
        recorded["cuda_graphs"] >= 3
        and recorded["cuda_graph_skips"] == seen["start"].cuda_graph_skips
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bf16_and_fp16_with_grad_scaler_steps_train(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bf16")
    device = torch.device("cuda")
    precision = Precision("cuda", dtype)
    model = build_model(device, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    ctx = StepContext(
        TrainForward(model, torch.nn.CrossEntropyLoss(), precision),
        optimizer,
        precision.make_scaler(),
    )
    assert (ctx.scaler is not None) == (dtype == torch.float16)
    images = torch.randn(64, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,), device=device)
    losses = [training_step(ctx, images, labels)[0].item() for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_device_cuda_0_leaves_the_other_gpus_untouched(tmp_path, monkeypatch):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    train_main(["--epochs", "1", "--train-subset", "256", "--batch-size", "64", "--lr-max", "0.1",
                "--no-plots", "--device", "cuda:0", "--out", str(tmp_path / "run")],
               data=synthetic_cifar(256, 100))  # fmt: skip
    for index in range(1, torch.cuda.device_count()):
        assert torch.cuda.memory_reserved(index) == 0  # the allocator keeps what it ever took
    assert torch.cuda.current_device() == 0


def test_the_first_conv_benchmark_times_its_variants_on_the_gpu():
    from benchmarks.first_conv import measure, padded_prep
    from fastcifar.engine.model import ResNet9

    rows = measure(batch_size=8, repeats=2, device=torch.device("cuda"))
    native = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert rows[0].variant == f"first conv, {native} (as trained)"
    assert len(rows) == 5 and all(row.seconds > 0 for row in rows)
    wider = padded_prep(ResNet9().prep.cuda(), 8)  # on the device of the layer it widens
    assert wider[0].weight.is_cuda and wider[1].running_mean.is_cuda
