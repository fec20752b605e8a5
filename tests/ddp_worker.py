"""Run by torchrun in tests/test_distributed.py: `python -m fastcifar.train` with the given flags
(on synthetic data unless FASTCIFAR_DATA points at the real CIFAR-10), then this rank's weights
and per-epoch sample order are saved to $FASTCIFAR_TEST_DUMP/rank<R>.pt for the test to compare."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from fastcifar import experiment, session
from fastcifar.train import main as train_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir


def main() -> None:
    if real_cifar_dir() is None:
        experiment.load_cifar10 = lambda _dir: synthetic_cifar(256, 100)
    built = []
    prepare = session.prepare

    def keep(*args, **kwargs):
        built.append(prepare(*args, **kwargs))
        return built[-1]

    session.prepare = keep
    train_main(sys.argv[1:])
    run = built[-1]
    loader = run.train_loader
    torch.save(
        {
            "model": run.model.state_dict(),
            "indices": [loader.epoch_indices(epoch) for epoch in range(run.config.epochs)],
            "rank": run.dist.rank,
            # DDP's buffer broadcast before every forward, which training does without
            "syncs_buffers": getattr(
                run.train_forward, "_orig_mod", run.train_forward
            ).will_sync_module_buffers(),
        },
        Path(os.environ["FASTCIFAR_TEST_DUMP"]) / f"rank{run.dist.rank}.pt",
    )


if __name__ == "__main__":
    main()
