"""`python -m fastcifar.train`: train the custom ResNet on CIFAR-10 with the One Cycle recipe.

LRMIN and LRMAX are found by an LR range test unless --lr-max (and optionally --lr-min) are given.
Writes a run folder: config.json, metrics.csv, summary.json, model.pt, lr_range_test.{json,png},
lr_schedule.png, curves.png, misclassified.png, confusion_matrix.png.
"""

from __future__ import annotations

import argparse

from fastcifar.cli import (
    DEFAULTS,
    Parser,
    add_common_arguments,
    positive_float,
    positive_int,
    run_main,
)
from fastcifar.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--epochs", type=positive_int, default=DEFAULTS.epochs, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--lr-max",
        type=positive_float,
        default=None,
        help="peak LR (default: found by the LR range test)",
    )
    parser.add_argument(
        "--lr-min",
        type=positive_float,
        default=None,
        help="start/end LR (default: found by the LR range test, "
        "or LRMAX / 25 when only --lr-max is given)",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=DEFAULTS.weight_decay, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=DEFAULTS.label_smoothing,
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--cycle-momentum",
        action="store_true",
        help="cycle momentum 0.95 -> 0.85 -> 0.95 against the LR",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Every parsed flag whose name is a TrainConfig field overrides that field."""
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{key: value for key, value in vars(args).items() if key in fields})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.trainer import train

        train(config_from_args(args))

    run_main(run)


if __name__ == "__main__":
    main()
