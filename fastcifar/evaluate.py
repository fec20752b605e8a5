"""`python -m fastcifar.evaluate RUN_DIR`: test accuracy, per-class accuracy and the confusion
matrix of a trained run (written to RUN_DIR/evaluation.json as well)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastcifar.cli import Parser, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.evaluate", description=__doc__)
    parser.add_argument("run_dir", help="run folder written by fastcifar.train")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: as trained)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: auto)")
    parser.add_argument("--batch-size", type=int, default=1000, help="(default: %(default)s)")
    return parser


def format_report(matrix: np.ndarray, class_names: list[str]) -> str:
    accuracy = np.trace(matrix) / matrix.sum()
    lines = [
        f"test accuracy: {100 * accuracy:.2f}% ({np.trace(matrix)}/{matrix.sum()})",
        "",
        "per-class accuracy:",
    ]
    for name, row, correct in zip(class_names, matrix, np.diag(matrix), strict=True):
        lines.append(f"  {name:<12}{100 * correct / max(row.sum(), 1):6.2f}%")
    lines += [
        "",
        "confusion matrix (rows: true, columns: predicted):",
        " " * 12 + "".join(f"{name[:6]:>7}" for name in class_names),
    ]
    for name, row in zip(class_names, matrix, strict=True):
        lines.append(f"{name:<12}" + "".join(f"{value:>7}" for value in row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.data_source import load_cifar10
        from fastcifar.device import Precision, pick_device
        from fastcifar.engine import evaluate
        from fastcifar.loaders import LoaderOptions, make_loader
        from fastcifar.plots import confusion_matrix
        from fastcifar.run_folder import load_run, write_json

        device = pick_device(args.device)
        model, summary = load_run(args.run_dir, device)
        data = load_cifar10(args.data_dir or summary["config"]["data_dir"])
        loader = make_loader("torch", data.test, LoaderOptions(args.batch_size, device))
        result = evaluate(model, loader, Precision.choose(device, amp=False))
        matrix = confusion_matrix(result.labels.numpy(), result.predictions.numpy())
        print(format_report(matrix, list(data.class_names)))
        write_json(
            Path(args.run_dir) / "evaluation.json",
            {
                "test_accuracy": result.accuracy,
                "test_loss": result.loss,
                "per_class_accuracy": dict(
                    zip(data.class_names, (np.diag(matrix) / matrix.sum(1)).tolist(), strict=True)
                ),
                "confusion_matrix": matrix.tolist(),
            },
        )

    run_main(run)


if __name__ == "__main__":
    main()
