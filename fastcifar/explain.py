"""`python -m fastcifar.explain RUN_DIR`: a Grad-CAM grid of the run's misclassified test images
(true → predicted, heat = evidence for the predicted class), written to RUN_DIR/gradcam.png.

Needs the optional extra: pip install '.[gradcam]'. Works on CPU and GPU; Grad-CAM runs on the
plain model (never a compiled one), in fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastcifar.cli import Parser, add_data_arguments, positive_int, run_main

SHOWN = 24  # mistakes in the grid


def explain_mistakes(model, data, evaluation, path: Path, count: int = SHOWN) -> Path:
    """Grad-CAM of the first `count` misclassified test images of `evaluation`."""
    import numpy as np

    from fastcifar.gradcam import gradcam_heatmaps, plot_gradcam_grid
    from fastcifar.predict import to_batch

    labels = evaluation.labels.numpy()
    predictions = evaluation.headline().predictions.numpy()
    wrong = np.flatnonzero(labels != predictions)
    shown = wrong[:count]
    images = data.test.images[shown]
    device = next(model.parameters()).device
    heatmaps = np.zeros((0, *images.shape[1:3]), dtype=np.float32)
    if len(shown):
        batch = to_batch(list(images), device)
        heatmaps = gradcam_heatmaps(model, batch, predictions[shown].tolist())
    return plot_gradcam_grid(
        images,
        heatmaps,
        labels[shown],
        predictions[shown],
        list(data.class_names),
        path,
        total_wrong=len(wrong),
        total=len(labels),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.explain", description=__doc__)
    parser.add_argument("run_dir", help="run folder written by fastcifar.train")
    add_data_arguments(parser)
    parser.add_argument(
        "--count", type=positive_int, default=SHOWN, help="mistakes shown (default: %(default)s)"
    )
    parser.add_argument("--out", default=None, help="PNG file (default: RUN_DIR/gradcam.png)")
    parser.add_argument(
        "--allow-incomplete", action="store_true", help="use an unfinished run's last checkpoint"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.data_source import load_cifar10
        from fastcifar.device import pick_device
        from fastcifar.evaluation import evaluate_split
        from fastcifar.gradcam import import_grad_cam
        from fastcifar.progress import say
        from fastcifar.saved_run import load_run

        import_grad_cam()  # a missing extra fails before any work
        device = pick_device(args.device)
        model, summary = load_run(args.run_dir, device, allow_incomplete=args.allow_incomplete)
        data = load_cifar10(args.data_dir or summary["config"]["data_dir"])
        evaluation = evaluate_split(model, data.test, device)
        path = Path(args.out) if args.out else Path(args.run_dir) / "gradcam.png"
        explain_mistakes(model, data, evaluation, path, args.count)
        wrong = int((evaluation.labels != evaluation.headline().predictions).sum())
        say(f"Grad-CAM of {min(args.count, wrong)} of {wrong:,} mistakes: {path}")

    run_main(run)


if __name__ == "__main__":
    main()
