"""`python -m benchmarks.gpu_summary OUT_DIR`: the one table that ends benchmarks/run_gpu.sh.

It reads what the stages left in OUT_DIR: the CUDA tests' outcome, the multi-seed run (mean ±
std, 95% t-interval, flip TTA), the LR sweep and the suite's report. It prints one markdown
table, writes it to OUT_DIR/summary.md, and saves OUT_DIR/results/<device>-<date>-training.json
for `python -m benchmarks.publish` (copy it into benchmarks/results/ first).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.hardware import slug
from benchmarks.report import epoch_row
from fastcifar.statistics import Aggregate

RECIPE_EPOCHS = 24


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def device_of(parent: Path) -> str | None:
    for summary in sorted(parent.glob("**/summary.json")):
        name = json.loads(summary.read_text()).get("device_name")
        if name:
            return name
    return None


def tests_row(out: Path) -> list[str]:
    status = out / "cuda-tests.status"
    if not status.is_file():
        return []
    code = int(status.read_text().strip() or 1)
    log = (out / "cuda-tests.log").read_text() if (out / "cuda-tests.log").is_file() else ""
    last = next((line.strip("= ") for line in reversed(log.splitlines()) if " in " in line), "")
    return [f"| CUDA tests (`pytest -m cuda`) | {'passed' if code == 0 else 'FAILED'}: {last} |"]


def seeds_rows(summary: dict[str, Any] | None) -> list[str]:
    if summary is None or summary.get("status") != "complete":
        return ["| Accuracy over seeds | not run or not complete |"] if summary else []
    (group,) = summary["groups"]
    plain = Aggregate(**group["accuracy"])
    found = summary.get("range_test") or {}
    lr = f"LRMAX {found['lr_max']:.4g} found by the range test" if found else "LRMAX given"
    rows = [f"| Test accuracy, {plain.count} seeds ({lr}) | {plain.describe()} |"]
    if group.get("accuracy_tta"):
        rows.append(f"| … with flip TTA | {Aggregate(**group['accuracy_tta']).describe()} |")
    seconds = [run["total_train_seconds"] for run in group["runs"]]
    rows.append(
        f"| Training time per run (epochs only) | median {statistics.median(seconds):.2f} s "
        f"(min {min(seconds):.2f}, max {max(seconds):.2f}) |"
    )
    return rows


def sweep_rows(summary: dict[str, Any] | None) -> list[str]:
    if summary is None or summary.get("status") != "complete":
        return ["| LR sweep | not run or not complete |"] if summary else []
    found = (summary.get("range_test") or {}).get("lr_max")
    cells = []
    for group in summary["groups"]:
        accuracy = Aggregate(**group["accuracy"])
        cells.append(f"{group['lr_max']:g}: {100 * accuracy.mean:.2f}% ± {100 * accuracy.std:.2f}")
    marked = f" (range test LRMAX {found:.4g})" if found else ""
    return [f"| LR sweep, mean ± std per LRMAX{marked} | {'; '.join(cells)} |"]


def suite_rows(suite: dict[str, Any] | None) -> list[str]:
    if suite is None or not suite.get("epochs"):
        return []
    rows = [epoch_row(result) for result in suite["epochs"]]
    fastest = min(rows, key=lambda row: row.epoch_seconds)
    reference = next((row.epoch_seconds for row in rows if row.is_reference), None)
    ratio = f", {reference / fastest.epoch_seconds:.1f}× the in-run reference" if reference else ""
    return [
        f"| Fastest suite row: {fastest.label} | {fastest.epoch_seconds:.3f} s/epoch, "
        f"{fastest.images_per_second:,.0f} img/s; × {RECIPE_EPOCHS} epochs = "
        f"{RECIPE_EPOCHS * fastest.epoch_seconds:.2f} s{ratio} |"
    ]


def render(out: Path) -> tuple[str, str]:
    """(markdown, device name) of everything the stages left in `out`."""
    seeds, sweep = (
        read_json(out / "seeds" / "summary.json"),
        read_json(out / "sweep" / "summary.json"),
    )
    suites = sorted((out / "suite").glob("*.json")) if (out / "suite").is_dir() else []
    suite = read_json(suites[-1]) if suites else None
    device = device_of(out) or (suite or {}).get("meta", {}).get("name") or "unknown device"
    lines = [f"GPU check on {device}", "", "| What | Result |", "|---|---|"]
    lines += tests_row(out) + seeds_rows(seeds) + sweep_rows(sweep) + suite_rows(suite)
    return "\n".join(lines) + "\n", device


def save(markdown: str, device: str, folder: Path, command: str) -> Path:
    date = datetime.date.today().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug(device)}-{date}-training.json"
    payload = {
        "kind": "training",
        "meta": {"name": device, "date": date, "command": command},
        "markdown": markdown,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_summary", description=__doc__)
    parser.add_argument("out", type=Path, help="the OUT_DIR of benchmarks/run_gpu.sh")
    parser.add_argument("--command", default="benchmarks/run_gpu.sh", help="recorded with it")
    args = parser.parse_args(argv)
    markdown, device = render(args.out)
    print(markdown)
    (args.out / "summary.md").write_text(markdown)
    print(f"saved {save(markdown, device, args.out / 'results', args.command)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
