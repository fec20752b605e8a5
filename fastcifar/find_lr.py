"""`python -m fastcifar.find_lr`: the LR range test on its own; prints LRMIN and LRMAX and writes
lr_range_test.png (both bounds marked) and lr_range_test.json (the whole curve) to the run folder.

It uses the same model, loader, precision, compilation and optimizer as `fastcifar.train` with
the same flags, and the same default length (see --range-test-steps).
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.find_lr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULTS.epochs,
        help="length of the training run the test is for; sets the default test length "
        "(default: %(default)s)",
    )
    for name, default in (
        ("start", DEFAULTS.range_test_start_lr),
        ("end", DEFAULTS.range_test_end_lr),
    ):
        parser.add_argument(
            f"--{name}-lr",
            dest=f"range_test_{name}_lr",
            type=positive_float,
            default=default,
            help="(default: %(default)s)",
        )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.distributed import teardown
        from fastcifar.experiment import start_ranks, warm_up
        from fastcifar.progress import say
        from fastcifar.report import base_summary
        from fastcifar.session import RunOptions, claim_folder, prepare
        from fastcifar.signals import StopSignals
        from fastcifar.train import config_from_args
        from fastcifar.trainer import find_bounds

        config = config_from_args(args)
        device, dist = start_ranks(config)
        try:
            folder = claim_folder(RunOptions(out=args.out), dist)
            experiment = prepare(config, device, dist)
            folder.create()
            folder.write_json("config.json", experiment.config.to_dict())
            if experiment.compiled:
                warm_up(experiment)
            with StopSignals() as stop:
                bounds = find_bounds(experiment, folder, stop)
            summary = base_summary("complete", experiment.config.to_dict())
            summary.update(
                kind="range_test",
                lr_min=bounds.lr_min,
                lr_max=bounds.lr_max,
                lr_source=bounds.source,
            )
            folder.write_json("summary.json", summary)
        finally:
            teardown()
        say(f"LRMIN {bounds.lr_min:.4g}  ({bounds.source['lr_min']})")
        say(f"LRMAX {bounds.lr_max:.4g}  ({bounds.source['lr_max']})")
        say(f"plot: {folder / 'lr_range_test.png'}  curve: {folder / 'lr_range_test.json'}")

    run_main(run)


if __name__ == "__main__":
    main()
