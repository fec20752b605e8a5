"""`python -m fastcifar.export RUN_DIR --format onnx|torchscript [--out FILE]`: the trained
network of a run, with its normalisation inside, as an ONNX or TorchScript file that takes
uint8 images N x 32 x 32 x 3 and returns class probabilities; checked against the PyTorch model
on the run's test images (onnxruntime for ONNX), the figures printed and written to
FILE.check.json. From Python, `fastcifar.export(run, format=...)` is this module called as a
function (as find_lr)."""

from __future__ import annotations

import argparse
from typing import Any

from fastcifar.cli import Parser, add_saved_run_arguments, run_main
from fastcifar.system.caller import python_entry
from fastcifar.system.command_module import callable_module

FORMAT_NAMES = ("onnx", "torchscript")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.export", description=__doc__)
    add_saved_run_arguments(parser, "export")
    parser.add_argument("--format", choices=FORMAT_NAMES, default="onnx", help="(default: onnx)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="where to write it (default: RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.runs.export import export_run

        check = export_run(
            args.run_dir,
            format=args.format,
            out=args.out,
            device=args.device,
            allow_incomplete=args.allow_incomplete,
            data_dir=args.data_dir,
        )
        print(check.line(), flush=True)

    run_main(run)


@python_entry
def export(run: Any, **options: Any) -> Any:
    """fastcifar.runs.export.export_run: the run's model as ONNX or TorchScript, checked; an
    ExportCheck (path, top-1 agreement, largest probability difference)."""
    from fastcifar.runs.export import export_run

    return export_run(run, **options)


callable_module(__name__, export, "fastcifar.runs.export:export_run")


if __name__ == "__main__":
    main()
