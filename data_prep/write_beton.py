"""Write CIFAR-10 as FFCV .beton files (raw RGB, lossless) for `--loader ffcv`.

    python data_prep/write_beton.py [--data-dir D] [--out-dir O] [--force]

Reads CIFAR-10 through fastcifar's data source (downloading it if needed), writes
cifar10_train.beton and cifar10_test.beton atomically (by default into fastcifar's cache, where
--loader ffcv looks for them; the data folder is only read), checks every record of each against the
source, and skips files that already hold their split unless --force. Ctrl-C (SIGINT) and SIGTERM
stop it at once with exit status 130 or 143, leaving no partial file, worker process or shared
memory behind. The logic lives in fastcifar.data.loaders.beton.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fastcifar.cli import Parser, run_main


class Signalled(KeyboardInterrupt):
    """A stop signal, raised in the main thread like Ctrl-C so that the write cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_status = 128 + signum  # what a shell reports for a process the signal ended


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-bin/ "
        "(default: $FASTCIFAR_DATA, else the cache; downloaded there if missing)",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the betons go (default: a cache folder named by the data's checksums, "
        "where --loader ffcv finds them)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rewrite betons that are already complete"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, data: object = None) -> None:
    """The command; `data`: a fastcifar Dataset to write instead of CIFAR-10 (tests)."""
    args = parse_args(argv)
    # Imported here so that a missing FFCV is reported as one line by run_main, before any work.
    import fastcifar.data.loaders.beton  # noqa: F401
    from fastcifar.system.signals import HANDLED

    with signals_raise(HANDLED):
        try:
            write_betons(args, data)
        except Signalled as stop:
            print(
                "interrupted before every beton was written (no partial file is left): "
                "run again to finish",
                file=sys.stderr,
            )
            sys.exit(stop.exit_status)


def write_betons(args: argparse.Namespace, data: object = None) -> None:
    from fastcifar.data.loaders.beton import ensure_beton
    from fastcifar.data.source import beton_cache_folder, load_cifar10
    from fastcifar.data.spec import CIFAR10

    data = data or load_cifar10(args.data_dir)
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else beton_cache_folder()
    for name, split in (("train", data.train), ("test", data.test)):
        path = out_dir / CIFAR10.beton_names[name]
        start = time.perf_counter()
        if ensure_beton(split, path, force=args.force):
            seconds = time.perf_counter() - start
            size_mb = path.stat().st_size / 1e6
            print(
                f"wrote {path} ({size_mb:.0f} MB, {seconds:.1f} s): "
                f"all {len(split):,} records verified"
            )
        else:
            print(
                f"kept {path}: already complete, all {len(split):,} records verified "
                "(--force rewrites it)"
            )


@contextlib.contextmanager
def signals_raise(signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    """Within the block each of `signals` raises Signalled, so that cleanup code runs: SIGTERM's
    default would end the process on the spot, leaving FFCV's workers and files behind."""

    def interrupt(signum: int, frame: object) -> None:
        raise Signalled(signum)

    previous = {each: signal.signal(each, interrupt) for each in signals}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


if __name__ == "__main__":
    run_main(main)
