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
    add_common_arguments(parser, evaluates=False)
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULTS.epochs,
        help="length of the training run the test is for; sets the default test length "
        "(default: %(default)s)",
    )
    for name in ("start", "end"):
        default = getattr(DEFAULTS, f"range_test_{name}_lr")
        parser.add_argument(
            f"--{name}-lr",
            dest=f"range_test_{name}_lr",
            type=positive_float,
            default=default,
            metavar="LR",
            help="(default: %(default)s)",
        )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.experiment import warm_up
        from fastcifar.lr_bounds import find_bounds
        from fastcifar.progress import say
        from fastcifar.report import base_summary
        from fastcifar.session import RunOptions, claim_folder, prepare, ranks, recorded_outcome
        from fastcifar.signals import StopSignals
        from fastcifar.train import config_from_args

        config = config_from_args(args)
        options = RunOptions(out=args.out)
        with (
            ranks(config) as (device, dist),
            claim_folder(
                options,
                dist,
                occupied="choose another --out",
                occupied_complete="choose another --out",
            ) as folder,
        ):
            experiment = prepare(config, device, dist)
            folder.create()
            folder.write_json("config.json", experiment.config.to_dict())
            base = {**base_summary("running", experiment.config.to_dict()), "kind": "range_test"}
            folder.write_json("summary.json", base)
            with StopSignals() as stop, recorded_outcome(folder, base):
                warm_up(experiment)
                bounds = find_bounds(experiment, folder, stop)
            result = {"lr_min": bounds.lr_min, "lr_max": bounds.lr_max, "lr_source": bounds.source}
            folder.write_json("summary.json", {**base, "status": "complete", **result})
        say(f"plot: {folder / 'lr_range_test.png'}  curve: {folder / 'lr_range_test.json'}")

    run_main(run)


if __name__ == "__main__":
    main()
