"""Command-line plumbing: one-line errors, checked value types, the flags commands share.

Imports nothing heavy (no torch): `--help` and a bad flag answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from fastcifar.config import (
    COMPILE_MODES,
    LOADER_NAMES,
    MAX_SEED,
    RANGE_TEST_MAX_STEPS,
    RANGE_TEST_MIN_STEPS,
    TrainConfig,
)
from fastcifar.errors import RunStopped, UserError

DEFAULTS = TrainConfig()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (plus where to get help), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_value(text: str) -> int:
    value = _number(text, int, "an integer")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def positive_floats(text: str) -> tuple[float, ...]:
    """One number, or several separated by commas (an LR sweep)."""
    return tuple(positive_float(part.strip()) for part in text.split(","))


def _number(text: str, kind: type, name: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    add_device_argument(parser)


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-bin/ (default: $FASTCIFAR_DATA, "
        "else ~/.cache/fastcifar; downloaded there if missing)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)"
    )


def add_common_arguments(parser: argparse.ArgumentParser, evaluates: bool = True) -> None:
    """Flags shared by train and find_lr (which `evaluates` nothing); defaults: TrainConfig."""
    add_data_arguments(parser)
    parser.add_argument(
        "--loader",
        choices=LOADER_NAMES,
        default=DEFAULTS.loader,
        help="batch loader back end (default: %(default)s)",
    )
    parser.add_argument(
        "--beton-dir",
        default=None,
        help="folder of the FFCV .beton files, written there if missing (default: data folder)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS.batch_size,
        help="global training batch, split evenly across torchrun ranks (default: %(default)s)",
    )
    for split, total in (("train", "50,000"), ("test", "10,000"))[: 2 if evaluates else 1]:
        parser.add_argument(
            f"--{split}-subset",
            type=positive_int,
            default=None,
            metavar="N",
            help=f"use the first N of the {total} {split} images (quick runs)",
        )
    _add_speed_arguments(parser)
    parser.add_argument(
        "--seed",
        type=seed_value,
        default=DEFAULTS.seed,
        help="seeds the weights, the sample order and the augmentation (default: %(default)s)",
    )
    parser.add_argument("--out", default=None, help="run folder (default: runs/<date>-<time>-<id>)")
    parser.add_argument(
        "--range-test-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="steps of the LR range test (default: as many as the training run has, at least "
        f"{RANGE_TEST_MIN_STEPS} and at most {RANGE_TEST_MAX_STEPS}; 100 for the full recipe)",
    )


def _add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision as the device runs it natively: bf16, or fp16 + GradScaler on "
        "GPUs without bf16; a CPU without native bf16 trains fp32, which is faster there "
        "(default: on with CUDA and on CPUs with native bf16)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: on when CUDA is present)",
    )
    parser.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default=None,
        help="torch.compile mode (default: reduce-overhead; default under torchrun)",
    )


def run_main(main: Callable[[], object]) -> None:
    """Run a command's main; what a user can cause or fix becomes one line on stderr."""
    try:
        main()
    except UserError as error:
        _fail(f"error: {error}", 2)
    except RunStopped as stopped:
        _fail(str(stopped), stopped.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        _fail(f"error: {where}{error.strerror or error}", 2)


def _fail(line: str, code: int) -> None:
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)
