"""`python -m fastcifar.find_lr`: the LR range test on its own; prints LRMIN and LRMAX and writes
lr_range_test.png (both bounds marked) and lr_range_test.json (the whole curve) to the run folder.

It uses the same model, loader, precision and optimizer as `fastcifar.train` with the same flags.
"""

from __future__ import annotations

import argparse

from fastcifar.cli import Parser, add_common_arguments, positive_float, run_main
from fastcifar.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.find_lr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--start-lr",
        dest="range_test_start_lr",
        type=positive_float,
        default=TrainConfig.range_test_start_lr,
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--end-lr",
        dest="range_test_end_lr",
        type=positive_float,
        default=TrainConfig.range_test_end_lr,
        help="(default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        import time

        from fastcifar.experiment import build_experiment, run_range_test
        from fastcifar.run_folder import make_run_folder
        from fastcifar.train import config_from_args
        from fastcifar.trainer import save_range_test

        config = config_from_args(args)
        folder = make_run_folder(config.out)
        experiment = build_experiment(config)
        start = time.perf_counter()
        result = run_range_test(experiment)
        save_range_test(result, folder)
        print(
            f"range test: {len(result.lrs)} steps in {time.perf_counter() - start:.1f} s, "
            f"{result.stop_reason}"
        )
        print(f"LRMIN {result.lr_min:.4g}  ({result.lr_min_method})")
        print(f"LRMAX {result.lr_max:.4g}  ({result.lr_max_method})")
        print(f"plot: {folder / 'lr_range_test.png'}  curve: {folder / 'lr_range_test.json'}")

    run_main(run)


if __name__ == "__main__":
    main()
