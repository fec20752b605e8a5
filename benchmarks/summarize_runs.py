"""`python -m benchmarks.summarize_runs RUN_DIR...`: mean ± std test accuracy and median time over
repeated training runs, read from each run folder's summary.json (written by fastcifar.train).

`--save-dir DIR` also writes `<device>-<date>-training.json` there, for `benchmarks.publish`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.hardware import slug

# Written next to summary.json by run_gpu.sh: the whole command's wall time (start-up, LR range
# test, compilation, training and evaluation), which summary.json cannot know.
WALL_SECONDS_FILE = "wall_seconds.txt"


@dataclass(frozen=True)
class RunRecord:
    name: str  # the run folder's name
    seed: int | None
    accuracy: float  # final test accuracy, 0..1
    train_seconds: float  # the timed training epochs, evaluation excluded
    train_and_eval_seconds: float
    wall_seconds: float | None
    device_name: str


@dataclass(frozen=True)
class RunsSummary:
    runs: int
    accuracy_mean: float
    accuracy_std: float  # sample standard deviation; 0 for a single run
    median_train_seconds: float
    median_train_and_eval_seconds: float
    median_wall_seconds: float | None
    device_name: str


def read_run(folder: Path) -> RunRecord:
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: did `python -m fastcifar.train` finish there?")
    summary = json.loads(path.read_text())
    wall = folder / WALL_SECONDS_FILE
    try:
        train = float(summary["total_train_seconds"])
        accuracy = float(summary["final_test_accuracy"])
    except KeyError as missing:
        raise ValueError(f"{path} has no {missing} entry: not a fastcifar.train summary") from None
    return RunRecord(
        name=folder.name,
        seed=summary.get("config", {}).get("seed"),
        accuracy=accuracy,
        train_seconds=train,
        train_and_eval_seconds=train + sum(summary.get("eval_seconds", [])),
        wall_seconds=float(wall.read_text()) if wall.is_file() else None,
        device_name=summary.get("device_name", "unknown device"),
    )


def summarize(records: list[RunRecord]) -> RunsSummary:
    if not records:
        raise ValueError("no runs to summarise")
    accuracies = [r.accuracy for r in records]
    walls = [r.wall_seconds for r in records if r.wall_seconds is not None]
    return RunsSummary(
        runs=len(records),
        accuracy_mean=statistics.fmean(accuracies),
        accuracy_std=statistics.stdev(accuracies) if len(records) > 1 else 0.0,
        median_train_seconds=statistics.median(r.train_seconds for r in records),
        median_train_and_eval_seconds=statistics.median(r.train_and_eval_seconds for r in records),
        median_wall_seconds=statistics.median(walls) if walls else None,
        device_name=records[0].device_name,
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def format_summary(records: list[RunRecord], summary: RunsSummary) -> str:
    """Markdown: one row per run, then the mean ± std / median line."""
    lines = [
        f"Training runs on {summary.device_name}",
        "",
        "| Run | Seed | Test accuracy | Train s | Train + eval s | Wall s (whole command) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r.name} | {r.seed if r.seed is not None else 'n/a'} | {100 * r.accuracy:.2f}% "
            f"| {r.train_seconds:.1f} | {r.train_and_eval_seconds:.1f} "
            f"| {_seconds(r.wall_seconds)} |"
        )
    lines.append(
        f"| **{summary.runs} runs** | | **{100 * summary.accuracy_mean:.2f}% ± "
        f"{100 * summary.accuracy_std:.2f}%** | median {summary.median_train_seconds:.1f} "
        f"| median {summary.median_train_and_eval_seconds:.1f} "
        f"| median {_seconds(summary.median_wall_seconds)} |"
    )
    return "\n".join(lines)


def save_summary(
    records: list[RunRecord], summary: RunsSummary, folder: Path, command: str
) -> Path:
    """`<device-slug>-<date>-training.json` in `folder`."""
    date = datetime.date.today().isoformat()
    payload = {
        "kind": "training",
        "meta": {"name": summary.device_name, "date": date, "command": command},
        "summary": asdict(summary),
        "runs": [asdict(r) for r in records],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug(summary.device_name)}-{date}-training.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.summarize_runs", description=__doc__
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding summary.json")
    parser.add_argument("--save-dir", type=Path, help="also write the summary JSON here")
    parser.add_argument("--command", default="", help="the command that made the runs, recorded")
    args = parser.parse_args(argv)
    try:
        records = [read_run(folder) for folder in args.runs]
    except (FileNotFoundError, ValueError) as error:
        print(f"summarize_runs: {error}", file=sys.stderr)
        return 1
    summary = summarize(records)
    print(format_summary(records, summary))
    if args.save_dir:
        print(f"saved {save_summary(records, summary, args.save_dir, args.command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
