"""A compiled run compiles once: the warm-up compiles the training and the evaluation graphs
before anything is timed, so the LR range test, two epochs and every evaluation (its last batch
padded to the one shape) compile nothing more. Shown on CPU with mode "default"; the CUDA-graph
side of the same promise is in tests/test_cuda.py."""

from __future__ import annotations

import json

import pytest

from fastcifar.engine.compilation import compile_counts
from fastcifar.runs import setup
from fastcifar.runs import single as runs
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW


def test_nothing_compiles_after_the_warm_up(tmp_path, monkeypatch):
    seen = {}
    warm_up, find_bounds = setup.warm_up, runs.find_bounds

    def counted_warm_up(*args):
        seconds = warm_up(*args)
        seen["after warm-up"] = compile_counts()
        return seconds

    def counted_range_test(*args):
        bounds = find_bounds(*args)
        seen["after range test"] = compile_counts()
        return bounds

    monkeypatch.setattr(setup, "warm_up", counted_warm_up)
    monkeypatch.setattr(runs, "find_bounds", counted_range_test)
    out = tmp_path / "run"
    # 20 test images in batches of 8: the last batch is padded, not a new shape.
    train_main([*NARROW, "--compile", "--compile-mode", "default", "--epochs", "2",
                "--train-subset", "32", "--batch-size", "16", "--test-subset", "20",
                "--eval-batch-size", "8",
                "--range-test-steps", "3", "--no-plots", "--device", "cpu",
                "--out", str(out)], data=synthetic_cifar(64, 32))  # fmt: skip
    after = compile_counts()
    assert seen["after warm-up"].dynamo_frames > 0
    assert seen["after range test"] == seen["after warm-up"], "the range test compiled"
    assert after == seen["after warm-up"], "training or evaluation compiled again"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compiled"] and summary["compile_mode"] == "default"
    assert summary["compile_seconds"] > 0 and summary["test_examples"] == 20
    assert summary["compile_seconds"] == summary["warm_up_seconds"]


@pytest.mark.parametrize("eval_batch_size", [7, 1000])
def test_any_eval_batch_size_gives_the_same_evaluation(eval_batch_size):
    """Padding changes nothing: an evaluation in batches of 7 (the last one padded) equals one
    in a single batch."""
    import torch

    from fastcifar.engine.evaluation import EvalBatches, EvalForward, evaluate
    from fastcifar.engine.model import build_model
    from fastcifar.system.device import Precision
    from fastcifar.system.distributed import Distributed

    test = synthetic_cifar(16, 30).test
    model = build_model(torch.device("cpu"), seed=1)
    forward = EvalForward(model, Precision("cpu", None), tta=True)
    labels = torch.from_numpy(test.labels)
    batches = EvalBatches(test, eval_batch_size, torch.device("cpu"), Distributed())
    result = evaluate(forward, batches, labels, Distributed())
    whole = evaluate(
        forward, EvalBatches(test, 30, torch.device("cpu"), Distributed()), labels, Distributed()
    )
    assert torch.equal(result.plain.predictions, whole.plain.predictions)
    assert result.plain.loss == pytest.approx(whole.plain.loss, rel=1e-5)
    assert result.tta.accuracy == whole.tta.accuracy and len(result.plain.predictions) == 30
