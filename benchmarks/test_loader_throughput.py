"""Loader-only throughput (images/s) of each back end and of the reference DataLoader: one epoch
of augmented, shuffled batches delivered on the training device, no model."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.runner import (
    BenchEnv,
    LoaderRunner,
    build_batches,
    skip_if_backend_broken,
)
from benchmarks.settings import REFERENCE, BenchConfig
from fastcifar.data.loaders import LOADER_NAMES


@pytest.mark.parametrize("loader", [*LOADER_NAMES, REFERENCE])
def test_loader_throughput(
    benchmark: Any, loader: str, bench_env: BenchEnv, bench_report: dict[str, Any]
) -> None:
    sizes = bench_env.sizes
    with skip_if_backend_broken(loader):
        batches = build_batches(
            BenchConfig(loader, amp=False, compile_mode=None),
            bench_env.loader_split,
            sizes.batch_size,
            bench_env.device,
            bench_env.scratch,
        )
        runner = LoaderRunner(batches, loader, sizes.batch_size, bench_env.device)
        runner.warm_up(1)
    benchmark.group = "loader only"
    benchmark.pedantic(runner.run_epoch, rounds=sizes.loader_epochs, iterations=1)
    bench_report["loaders"].append(runner.result.to_dict())
    assert runner.result.images_per_epoch == len(batches) * sizes.batch_size > 0
