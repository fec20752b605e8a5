"""`python -m fastcifar.find_lr`: the LR range test on its own; prints LRMIN and LRMAX and writes
lr_range_test.png (the valley floor, where the loss blew up if it did, and both bounds marked)
and lr_range_test.json (the whole curve) to the run folder.

It uses the same model, loader, precision, compilation and optimizer as `fastcifar.train` with
the same flags, and the same default length (see --range-test-steps). From Python,
`fastcifar.find_lr(...)` is this module called as a function (see `RangeTestCommand`).
"""

from __future__ import annotations

import argparse
from typing import Any

from fastcifar.cli import Parser, add_fields, given, run_main
from fastcifar.records.config import RunOptions, TrainConfig
from fastcifar.system.command_module import callable_module


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m fastcifar.find_lr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_fields(parser, TrainConfig, find_lr=True)
    add_fields(parser, RunOptions, only=("out",))
    return parser


def main(argv: list[str] | None = None, *, data: Any = None, model: Any = None) -> None:
    """The command; `data` and `model` as fastcifar.fit takes them (for embedding and tests)."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar import api

        # Not api.find_lr: a message here names the flags, not the Python keywords.
        api.range_test_of(
            api.make_request(given(args, TrainConfig), data, model, **given(args, RunOptions))
        )

    run_main(run)


def find_lr(config: Any = None, *, data: Any = None, model: Any = None, **values: Any) -> Any:
    """fastcifar.api.find_lr: the range test with fit's settings; returns a RangeTest."""
    from fastcifar import api

    return api.find_lr(config, data=data, model=model, **values)


callable_module(__name__, find_lr, "fastcifar.api:find_lr")

if __name__ == "__main__":
    main()
