"""Epoch time of the full training loop (augmentation + forward + backward + SGD step) for every
configuration of the matrix in `settings.config_matrix`, the reference pipeline included."""

from __future__ import annotations

from typing import Any

from benchmarks.runner import BenchEnv, EpochRunner, skip_if_backend_broken
from benchmarks.settings import BenchConfig


def test_training_epoch(
    benchmark: Any, bench_config: BenchConfig, bench_env: BenchEnv, bench_report: dict[str, Any]
) -> None:
    sizes = bench_env.sizes
    with skip_if_backend_broken(bench_config.loader):
        runner = EpochRunner(
            bench_config, bench_env.train_split, sizes, bench_env.device, bench_env.scratch
        )
        runner.warm_up(sizes.warmup_epochs)
    if bench_config.loader == "torch":  # as in the 24 epochs the row stands for
        loader = getattr(runner.batches, "batches", runner.batches)  # under ContiguousBatches
        assert loader.options.compile_augmentation, "the recipe's run compiles its augmentation"
    benchmark.group = "training epoch"
    benchmark.pedantic(runner.run_epoch, rounds=sizes.timed_epochs, iterations=1)
    bench_report["epochs"].append(runner.result.to_dict())
    # Shapes are static (drop_last, dynamic=False), so nothing may compile after the warm-up.
    assert runner.result.recompiled_frames == 0, "the model recompiled between epochs"
    assert runner.result.rerecorded_cuda_graphs == 0, "CUDA graphs were recorded again"
    assert runner.result.cuda_graph_skips == 0, "a graph ran without CUDA graphs"
