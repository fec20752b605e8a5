"""Command-line plumbing: one-line errors, checked value types, the flags commands share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fastcifar.config import ConfigError, TrainConfig
from fastcifar.data_source import DataSourceError
from fastcifar.loaders import LOADER_NAMES, MissingBackendError

DEFAULTS = TrainConfig()
USER_ERRORS = (ConfigError, DataSourceError, MissingBackendError, FileNotFoundError, ValueError)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (plus where to get help), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _number(text: str, kind: type, name: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train and find_lr; defaults come from TrainConfig."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-bin/ (default: $FASTCIFAR_DATA, "
        "else ~/.cache/fastcifar; downloaded there if missing)",
    )
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
        help="training batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--train-subset",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on the first N training images (quick runs)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: bf16 autocast where supported, else fp16 + GradScaler",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: on when CUDA is present)",
    )
    parser.add_argument(
        "--compile-mode",
        default=DEFAULTS.compile_mode,
        help="torch.compile mode (default: %(default)s)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: auto)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="(default: %(default)s)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>)")
    parser.add_argument(
        "--range-test-steps",
        type=positive_int,
        default=DEFAULTS.range_test_steps,
        help="steps of the LR range test (default: %(default)s)",
    )


def run_main(main: Callable[[], None]) -> None:
    """Run a command's main; a user error becomes one line on stderr and exit status 2."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
