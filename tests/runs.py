"""Running `python -m fastcifar.train` in-process on synthetic data, for the tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastcifar.engine import step as engine
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar

# The network at 1/8 of its width (ResNet-9: 104k parameters, 1/62 of the arithmetic), wherever
# a test checks the run and not the recipe: the tests at width 64 took 351 s, and 162 s once
# these were at width 8 (tests/ on two workers, a 2-core Xeon capped to AVX2, 2026-12-07).
WIDTH = 8
NARROW = ["--width", str(WIDTH)]
# Two epochs of 3 steps (48 images in batches of 16), evaluation on 32 images, LRMAX given.
TWO_EPOCHS = [*NARROW, "--epochs", "2", "--train-subset", "48", "--batch-size", "16",
              "--test-subset", "32", "--lr-max", "0.05", "--no-plots",
              "--device", "cpu"]  # fmt: skip


def exit_code(argv: list[str], data: Any = None) -> int:
    """Train with `argv` (on `data`); the exit status the command line would give (0 when it
    returns)."""
    try:
        train_main(argv, data=data)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def finished_run(
    factory: pytest.TempPathFactory, name: str, argv: list[str], data: Any = None
) -> Path:
    """A complete run (by default on 64 synthetic training and 32 test images), for
    module-scoped fixtures."""
    out = factory.mktemp(name) / "run"
    train_main(
        [*argv, "--out", str(out)], data=data if data is not None else synthetic_cifar(64, 32)
    )
    return out


def after_training_steps(monkeypatch: pytest.MonkeyPatch, then: Callable) -> Callable:
    """Call `then(n, ctx, result)` after the n-th step of the training epochs (n = 1, 2, ...),
    returning what it returns; returns the plain training step, to put back before a resume.
    Only the epochs' steps count (theirs have a schedule): the warm-up, the estimate's steps and
    the range test take steps too, and which of them reach this wrapper depends on import order."""
    original, done = engine.training_step, []

    def counted(ctx, *batch):
        result = original(ctx, *batch)
        if ctx.scheduler is None:
            return result
        done.append(1)
        return then(len(done), ctx, result)

    monkeypatch.setattr(engine, "training_step", counted)
    return original


def signal_after(
    monkeypatch: pytest.MonkeyPatch, steps: int, number: int = signal.SIGTERM
) -> Callable:
    """Deliver `number` to this process once `steps` training steps have run; returns the
    plain training step, to put back before a resume."""

    def signal_then(count: int, _ctx: object, result: object) -> object:
        if count == steps:
            os.kill(os.getpid(), number)
        return result

    return after_training_steps(monkeypatch, signal_then)
