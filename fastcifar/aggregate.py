"""`python -m fastcifar.aggregate RUN_DIR...`: the aggregate of runs trained apart (one process
per GPU, several machines, several days): mean ± std, a 95% confidence interval and per-seed
rows for each LRMAX, exactly as `--seeds N` writes it for runs trained together.

A folder of several runs stands for its runs. With --out the aggregate is written there as a
multi-run folder's summary.json (and its plots); without, it is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastcifar.cli import Parser, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.aggregate", description=__doc__)
    parser.add_argument(
        "runs", nargs="+", help="run folders (of fastcifar.train), or folders of several runs"
    )
    parser.add_argument(
        "--out", default=None, help="a new folder for the aggregate summary.json and plots"
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.runs.aggregation import aggregate_folders

        aggregate_folders([Path(run) for run in args.runs], args.out, args.plots)

    run_main(run)


if __name__ == "__main__":
    main()
