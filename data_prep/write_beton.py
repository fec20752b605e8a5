"""Write CIFAR-10 as FFCV .beton files (raw RGB, lossless) for `--loader ffcv`.

    python data_prep/write_beton.py [--data-dir D] [--out-dir O] [--force]

Reads CIFAR-10 through fastcifar's data source (downloading it if needed), writes
cifar10_train.beton and cifar10_test.beton atomically, verifies them against the source, and
skips files that already hold their split unless --force. The logic lives in fastcifar.beton.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastcifar.cli import Parser, run_main
from fastcifar.data_source import default_data_dir, load_cifar10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-bin/ (default: $FASTCIFAR_DATA, else "
        "~/.cache/fastcifar; downloaded there if missing)",
    )
    parser.add_argument(
        "--out-dir", default=None, help="where the betons go (default: the data folder)"
    )
    parser.add_argument(
        "--force", action="store_true", help="rewrite betons that are already complete"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Imported here so that a missing FFCV is reported as one line by run_main.
    from fastcifar.beton import ensure_beton
    from fastcifar.loaders import BETON_NAMES

    data = load_cifar10(args.data_dir)
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else default_data_dir(args.data_dir)
    for name, split in (("train", data.train), ("test", data.test)):
        path = out_dir / BETON_NAMES[name]
        start = time.perf_counter()
        if ensure_beton(split, path, force=args.force):
            seconds = time.perf_counter() - start
            size_mb = path.stat().st_size / 1e6
            print(
                f"wrote {path} ({len(split)} images, {size_mb:.0f} MB, {seconds:.1f} s, verified)"
            )
        else:
            print(f"kept {path}: already complete and verified (--force rewrites it)")


if __name__ == "__main__":
    run_main(main)
