"""Run by torchrun in tests/test_distributed.py: `python -m fastcifar.train` with the given flags
(on synthetic data unless FASTCIFAR_DATA points at the real CIFAR-10), then this rank's weights
and per-epoch sample order are saved to $FASTCIFAR_TEST_DUMP/rank<R>.pt for the test to compare."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastcifar.engine import step as engine
from fastcifar.runs import setup
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir  # and conftest's thread count, as in the tests


def kill_once() -> None:
    """$FASTCIFAR_TEST_KILL_AT=N: rank 1 SIGKILLs itself at its N-th training step, in the first
    attempt only: a crashed rank for torchrun to restart."""
    at = int(os.environ.get("FASTCIFAR_TEST_KILL_AT", "0"))
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if not at or os.environ.get("RANK") != "1" or not first_attempt:
        return
    original, done = engine.training_step, []

    def step_then_die(*args):
        if args[0].scheduler is None:  # not a step of the epochs (warm-up, estimate)
            return original(*args)
        done.append(1)
        if len(done) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)

    engine.training_step = step_then_die


def main() -> None:
    kill_once()
    built = []
    build = setup.build

    def keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    setup.build = keep
    train_main(sys.argv[1:], data=None if real_cifar_dir() else synthetic_cifar(256, 100))
    trainer = built[-1]
    loader = trainer.train_loader
    forward = getattr(trainer.train_forward, "_orig_mod", trainer.train_forward)  # None: no DDP
    torch.save(
        {
            "model": trainer.model.state_dict(),
            "indices": [loader.epoch_indices(epoch) for epoch in range(trainer.config.epochs)],
            "rank": trainer.dist.rank,
            # DDP's buffer broadcast before every forward, which training does without
            "syncs_buffers": getattr(forward, "will_sync_module_buffers", lambda: None)(),
        },
        Path(os.environ["FASTCIFAR_TEST_DUMP"]) / f"rank{trainer.dist.rank}.pt",
    )


if __name__ == "__main__":
    main()
