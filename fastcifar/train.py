"""`python -m fastcifar.train`: train the custom ResNet on CIFAR-10 with the One Cycle recipe.

LRMIN and LRMAX are found by an LR range test unless --lr-max (and optionally --lr-min) are
given. Writes a run folder: config.json, metrics.csv, summary.json (with the run's status),
model.pt, lr_range_test.{json,png}, lr_schedule.png, curves.png, misclassified.png,
confusion_matrix.png; checkpoint.pt while the run is unfinished.

Several runs in one process: --seeds N trains seeds S..S+N-1 (S = --seed), compiled once, and
writes their mean ± std; --lr-max 0.1,0.2,0.4 sweeps LRMAX (each with --seeds N).
Under torchrun (--nproc_per_node, --nnodes) every rank runs this command unchanged.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from fastcifar.cli import (
    DEFAULTS,
    Parser,
    add_common_arguments,
    positive_float,
    positive_floats,
    positive_int,
    run_main,
)
from fastcifar.config import TrainConfig
from fastcifar.errors import ConfigError

# Flags that describe how to run rather than what to train.
RUN_FLAGS = ("out", "overwrite", "resume", "seeds", "lr_maxes")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    _add_recipe_arguments(parser.add_argument_group("recipe"))
    _add_reporting_arguments(parser.add_argument_group("evaluation and reporting"))
    _add_run_arguments(parser.add_argument_group("runs"))
    return parser


def _add_recipe_arguments(recipe: argparse._ArgumentGroup) -> None:
    recipe.add_argument(
        "--epochs", type=positive_int, default=DEFAULTS.epochs, help="(default: %(default)s)"
    )
    recipe.add_argument(
        "--lr-max",
        dest="lr_maxes",
        type=positive_floats,
        default=(),
        metavar="LR[,LR...]",
        help="peak LR (default: found by the LR range test); several, comma-separated: an LR "
        "sweep, its plot marking the range test's LRMAX",
    )
    recipe.add_argument(
        "--lr-min",
        type=positive_float,
        default=None,
        help="start/end LR (default: found by the LR range test, or LRMAX / 25 with --lr-max)",
    )
    recipe.add_argument(
        "--weight-decay", type=float, default=DEFAULTS.weight_decay, help="(default: %(default)s)"
    )
    recipe.add_argument(
        "--label-smoothing",
        type=float,
        default=DEFAULTS.label_smoothing,
        help="(default: %(default)s)",
    )
    recipe.add_argument(
        "--cycle-momentum",
        action="store_true",
        help="cycle momentum 0.95 -> 0.85 -> 0.95 against the LR",
    )


def _add_reporting_arguments(evaluation: argparse._ArgumentGroup) -> None:
    evaluation.add_argument(
        "--tta",
        action="store_true",
        help="also evaluate with flip test-time augmentation, and headline it",
    )
    evaluation.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=DEFAULTS.eval_batch_size,
        help="(default: %(default)s)",
    )
    evaluation.add_argument(
        "--no-plots", dest="plots", action="store_false", help="skip the PNG plots"
    )
    evaluation.add_argument(
        "--gradcam",
        action="store_true",
        help="Grad-CAM grid of misclassified test images (pip install '.[gradcam]')",
    )
    evaluation.add_argument(
        "--tensorboard",
        action="store_true",
        help="TensorBoard log in RUN_DIR/tensorboard (pip install '.[tensorboard]')",
    )


def _add_run_arguments(run: argparse._ArgumentGroup) -> None:
    run.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        metavar="N",
        help="train N seeds (from --seed on) and report mean ± std",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (only once the new run has its first checkpoint)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue an unfinished run with its recorded config",
    )
    run.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=DEFAULTS.checkpoint_every,
        metavar="N",
        help="epochs between checkpoints (default: %(default)s)",
    )
    run.add_argument(
        "--sync-bn", action="store_true", help="SyncBatchNorm across torchrun ranks (CUDA)"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Every parsed flag whose name is a TrainConfig field overrides that field."""
    fields = TrainConfig.__dataclass_fields__
    values = {key: value for key, value in vars(args).items() if key in fields}
    if getattr(args, "lr_maxes", ()):  # a sweep's other LRMAX values are checked in main
        values["lr_max"] = args.lr_maxes[0]
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.session import RunOptions, run_training

        if args.resume is not None:
            _refuse_flags_beside_resume(argv)
            config = DEFAULTS
        else:
            config = config_from_args(args)
            for lr_max in args.lr_maxes[1:]:  # every LRMAX of a sweep must pass the checks
                replace(config, lr_max=lr_max)
            if args.seeds > 1:  # and so must the last seed
                replace(config, seed=config.seed + args.seeds - 1)
        options = RunOptions(**{name: getattr(args, name) for name in RUN_FLAGS})
        run_training(config, options)

    run_main(run)


def _refuse_flags_beside_resume(argv: list[str] | None) -> None:
    parser = build_parser()
    for action in parser._actions:  # parse again, keeping only what was given explicitly
        action.default = argparse.SUPPRESS
    flags = {action.dest: action.option_strings[0] for action in parser._actions}
    explicit = vars(parser.parse_args(argv))
    others = sorted(flags[name] for name in explicit if name != "resume")
    if others:
        raise ConfigError(
            f"--resume continues with the run's recorded config; drop {', '.join(others)}"
        )


if __name__ == "__main__":
    main()
