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
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcifar.cli import Parser, add_saved_run_arguments, count, run_main
from fastcifar.records.config import TrainConfig
from fastcifar.system.caller import python_entry
from fastcifar.system.command_module import callable_module

if TYPE_CHECKING:
    from fastcifar.runs.inference import ClassReport


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
    parser.add_argument(
        "--tta-translate",
        action="store_true",
        help="with --tta: also the flip pairs of the image shifted 1 pixel up-left and down-right",
    )
    return parser


def format_report(report: ClassReport, title: str = "test accuracy") -> str:
    """The printed report: accuracy, per-class accuracy ('n/a' for a class without test
    images) and the confusion matrix."""
    matrix, names = report.confusion, list(report.class_names)
    lines = [
        f"{title}: {100 * report.accuracy:.2f}% ({np.trace(matrix)}/{matrix.sum()})",
        "",
        "per-class accuracy:",
    ]
    for name, share in report.per_class.items():
        lines.append(f"  {name:<12}" + (f"{100 * share:6.2f}%" if share is not None
                                        else "    n/a (no test image)"))  # fmt: skip
    lines += [
        "",
        "confusion matrix (rows: true, columns: predicted):",
        " " * 12 + "".join(f"{name[:6]:>7}" for name in names),
    ]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<12}" + "".join(f"{value:>7}" for value in row))
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, data: Any = None) -> None:
    """The command; `data`: the data set of a run trained on data of one's own."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.records.run_folder import EVALUATION, strict_json
        from fastcifar.records.summary import tta_name
        from fastcifar.runs.inference import evaluate as evaluate_run
        from fastcifar.system.files import atomic_write
        from fastcifar.system.progress import say

        result = evaluate_run(
            args.run_dir,
            tta=args.tta,
            tta_translate=args.tta_translate,
            test_subset=args.test_subset,
            batch_size=args.batch_size,
            device=args.device,
            data=data,
            data_dir=args.data_dir,
            allow_incomplete=args.allow_incomplete,
        )
        if result.note:
            say(f"note: {result.note}")
        tta_title = f"{tta_name(args.tta_translate)} accuracy"
        for title, scores in (("test accuracy", result.plain), (tta_title, result.tta)):
            if scores is not None:
                print(format_report(scores, title))
        written = atomic_write(Path(args.run_dir) / EVALUATION, strict_json(result.to_dict()))
        say(f"wrote {written}")

    run_main(run)


@python_entry
def evaluate(run: Any, **options: Any) -> Any:
    """fastcifar.runs.inference.evaluate: a trained run on a test split; a RunEvaluation.
    Its messages name settings as Python writes them (the command calls inference itself)."""
    from fastcifar.runs.inference import evaluate as evaluate_run

    return evaluate_run(run, **options)


callable_module(__name__, evaluate, "fastcifar.runs.inference:evaluate")


if __name__ == "__main__":
    main()
