"""`python -m fastcifar.predict RUN_DIR IMAGE|FOLDER...`: the top classes of each image, with
probabilities. Images of any size up to 50 megapixels are brought to 32x32 (CIFAR-10's size):
squashed whole, or with --resize crop, their central square; 16-bit, grayscale, palette and
transparent images are converted to 8-bit RGB first. A folder stands for the images in it.

A file that cannot be read is one line, and the others are still predicted; the exit status
is then 1 (2 when no image could be read). --json prints one JSON document instead of lines.
From Python: fastcifar.predict.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fastcifar.cli import Parser, add_saved_run_arguments, count, run_main
from fastcifar.data.images import RESIZE_MODES
from fastcifar.system.caller import python_entry
from fastcifar.system.command_module import callable_module


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.predict", description=__doc__)
    add_saved_run_arguments(parser, "use", data_dir=False)
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, ...) or folders")
    parser.add_argument("--top", type=count, default=3, help="(default: %(default)s)")
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="squash",
        help="to 32x32: the whole image squashed, or its central square (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.runs.inference import predict as predict_images

        result = predict_images(args.run_dir, args.images, top=args.top, resize=args.resize,
                         device=args.device, allow_incomplete=args.allow_incomplete)  # fmt: skip
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            warning = [f"warning: {result.warning}"] if result.warning else []
            for line in [*(f"error: {e}" for e in result.errors), *warning]:
                print(line, file=sys.stderr, flush=True)
            for row in result.predictions:
                ranked = ", ".join(f"{name} {100 * p:.1f}%" for name, p in row.top)
                print(f"{row.image}: {ranked}")
        if result.errors:  # some images predicted, some not: neither success (0) nor refusal (2)
            sys.exit(1)

    run_main(run)


@python_entry
def predict(run: Any, images: Any, **options: Any) -> Any:
    """fastcifar.runs.inference.predict: the top classes of images; a Predictions. Its
    messages name settings as Python writes them (the command calls inference itself)."""
    from fastcifar.runs.inference import predict as predict_images

    return predict_images(run, images, **options)


callable_module(__name__, predict, "fastcifar.runs.inference:predict")


if __name__ == "__main__":
    main()
