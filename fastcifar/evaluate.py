"""`python -m fastcifar.evaluate RUN_DIR`: test accuracy, per-class accuracy and the confusion
matrix of a trained run (written to RUN_DIR/evaluation.json as well).

It evaluates the test images the run itself was evaluated on (its --test-subset, if it had
one); --test-subset N or all chooses others. Only a complete run is evaluated unless
--allow-incomplete (then the last checkpoint's weights). The evaluation runs in fp32: a run
trained (and evaluated) under bf16 may differ in the last digit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from fastcifar.cli import Parser, add_saved_run_arguments, count, run_main
from fastcifar.config import TrainConfig


def test_subset(text: str) -> int | str:
    return "all" if text.strip().lower() == "all" else count(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.evaluate", description=__doc__)
    add_saved_run_arguments(parser, "evaluate")
    parser.add_argument(
        "--batch-size",
        type=count,
        default=TrainConfig.eval_batch_size,
        help="(default: %(default)s, as in training)",
    )
    parser.add_argument(
        "--test-subset",
        type=test_subset,
        default=None,
        metavar="N|all",
        help="the first N test images, or all of them (default: those the run was evaluated on)",
    )
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    return parser


def format_report(matrix: np.ndarray, class_names: list[str], title: str = "test accuracy") -> str:
    accuracy = np.trace(matrix) / matrix.sum()
    lines = [
        f"{title}: {100 * accuracy:.2f}% ({np.trace(matrix)}/{matrix.sum()})",
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


def main(argv: list[str] | None = None, *, data: Any = None) -> None:
    """The command; `data`: the data set of a run trained on data of one's own."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.atomic_file import atomic_write
        from fastcifar.device import pick_device
        from fastcifar.evaluation import evaluate_split
        from fastcifar.plots import confusion_matrix
        from fastcifar.progress import say
        from fastcifar.run_folder import strict_json
        from fastcifar.saved_run import load_saved_run, test_split_of

        device = pick_device(args.device)
        saved = load_saved_run(Path(args.run_dir), device, allow_incomplete=args.allow_incomplete)
        test, which = test_split_of(saved, args.data_dir, args.test_subset, data)
        say(f"evaluating {which} on {device} (fp32)")
        result = evaluate_split(
            saved.model, test, device, args.batch_size, args.tta, saved.normalisation
        )
        names = list(saved.class_names)
        report = {"run": str(Path(args.run_dir).resolve()), "test_examples": len(test)}
        for key, scores in (("", result.plain), ("_tta", result.tta)):
            if scores is None:
                continue
            matrix = confusion_matrix(result.labels.numpy(), scores.predictions.numpy(), len(names))
            print(format_report(matrix, names, "flip TTA accuracy" if key else "test accuracy"))
            per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
            report |= {
                f"test_accuracy{key}": scores.accuracy,
                f"test_loss{key}": scores.loss,
                f"per_class_accuracy{key}": dict(zip(names, per_class.tolist(), strict=True)),
                f"confusion_matrix{key}": matrix.tolist(),
            }
        written = atomic_write(Path(args.run_dir) / "evaluation.json", strict_json(report))
        say(f"wrote {written}")

    run_main(run)


if __name__ == "__main__":
    main()
