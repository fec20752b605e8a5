"""`python -m fastcifar.explain RUN_DIR`: a Grad-CAM grid of the run's misclassified test images
(true → predicted, heat = evidence for the predicted class), written to RUN_DIR/gradcam.png.

Needs the optional extra: pip install -e '.[gradcam]'. Works on CPU and GPU; Grad-CAM runs on the
plain model (never a compiled one), in fp32, over the test images the run was evaluated on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastcifar.cli import Parser, add_saved_run_arguments, count, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.explain", description=__doc__)
    add_saved_run_arguments(parser, "explain")
    parser.add_argument(
        "--count",
        type=count,
        default=None,
        help="mistakes shown (default: as many as a run's own gradcam.png shows)",
    )
    parser.add_argument("--out", default=None, help="PNG file (default: RUN_DIR/gradcam.png)")
    return parser


def main(argv: list[str] | None = None, *, data: Any = None) -> None:
    """The command; `data`: the data set of a run trained on data of one's own."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.data.dataset import Dataset
        from fastcifar.engine.evaluation import evaluate_split
        from fastcifar.outputs.gradcam import SHOWN, explain_mistakes, import_grad_cam
        from fastcifar.runs.saved_run import load_saved_run, test_split_of
        from fastcifar.system.device import pick_device
        from fastcifar.system.progress import say

        import_grad_cam()  # a missing extra fails before any work
        device = pick_device(args.device)
        saved = load_saved_run(Path(args.run_dir), device, allow_incomplete=args.allow_incomplete)
        test = test_split_of(saved, args.data_dir, None, data).split
        evaluation = evaluate_split(saved.model, test, device, normalisation=saved.normalisation)
        path = Path(args.out) if args.out else Path(args.run_dir) / "gradcam.png"
        shown = Dataset(test, test, saved.class_names, saved.normalisation)
        count = args.count or SHOWN
        explain_mistakes(saved.model, shown, evaluation, path, count)
        wrong = int((evaluation.labels != evaluation.headline().predictions).sum())
        say(f"Grad-CAM of {min(count, wrong)} of {wrong:,} mistakes: {path}")

    run_main(run)


if __name__ == "__main__":
    main()
