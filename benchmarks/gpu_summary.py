"""The table and the results file that end benchmarks/run_gpu.sh, from what its stages left in
the working folder: how each stage ended, the CUDA tests (which ran, which skipped, which
failed), the multi-seed run (mean ± std, 95% t-interval, flip TTA, per-run rows), the LR sweep,
the suite's rows and the first conv's table, with the provenance of every number (commit, GPU,
driver, versions).
"""

from __future__ import annotations

import datetime
import json
import statistics
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from benchmarks.report import epoch_row
from fastcifar.outputs.statistics import Aggregate, aggregate
from fastcifar.records.provenance import describe_commit

RECIPE_EPOCHS = 24
FIRST_CONV_FILE = "first-conv.md"  # the first-conv stage's table, in work/first-conv/
PEER_FILE = "results.md"  # the peer stage's table, in work/peer/ (benchmarks/peer.py writes it)


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stages_rows(stages: list[dict[str, Any]]) -> list[str]:
    cells = []
    for stage in stages:
        note = f" ({stage['note']})" if stage["note"] else ""
        took = f" in {stage['seconds']:.0f} s" if stage["status"] != "skipped" else ""
        cells.append(f"{stage['name']}: {stage['status']}{took}{note}")
    return [f"| Stages | {'; '.join(cells)} |"] if cells else []


def preflight_rows(meta: dict[str, Any]) -> list[str]:
    """Whether torch.compile worked (else the stages ran eagerly) and which packages lacked."""
    if "compile" not in meta:
        return []
    compiled = meta["compile"]
    how = "works" if compiled == "works" else f"{compiled}: every stage ran eagerly (--no-compile)"
    missing = meta.get("missing_packages") or []
    found = f"missing {', '.join(missing)}" if missing else "every stage's found"
    return [f"| Preflight | torch.compile {how}; Python packages: {found} |"]


def test_outcomes(junit: Path) -> dict[str, list[str]] | None:
    """Each CUDA test's name under passed, skipped or failed (from pytest's JUnit XML)."""
    if not junit.is_file():
        return None
    outcomes: dict[str, list[str]] = {"passed": [], "skipped": [], "failed": []}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "?")
        if case.find("skipped") is not None:
            outcomes["skipped"].append(name)
        elif case.find("failure") is not None or case.find("error") is not None:
            outcomes["failed"].append(name)
        else:
            outcomes["passed"].append(name)
    return outcomes


def tests_rows(outcomes: dict[str, list[str]] | None, stage: dict[str, Any] | None) -> list[str]:
    if stage is None:
        return []
    if outcomes is None:
        return [f"| CUDA tests (`pytest -m cuda`) | {stage['status']}: no test report |"]
    cells = [f"{key} {len(names)}: {', '.join(names)}" for key, names in outcomes.items() if names]
    verdict = "FAILED" if outcomes["failed"] or stage["status"] != "passed" else "passed"
    return [f"| CUDA tests (`pytest -m cuda`) | {verdict}; {'; '.join(cells) or 'none ran'} |"]


def groups_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A multi-run's groups; a single run (SEEDS=1 makes one) as one group of one run."""
    if "groups" in summary:
        return summary["groups"]
    plain, tta = summary.get("final_test_accuracy"), summary.get("final_test_accuracy_tta")
    times = ("total_train_seconds", "wall_seconds")
    return [
        {
            "lr_max": summary.get("lr_max"),
            "accuracy": aggregate([plain]).to_dict() if plain is not None else None,
            "accuracy_tta": aggregate([tta]).to_dict() if tta is not None else None,
            "runs": [{key: summary.get(key) for key in times}],
        }
    ]


def seeds_rows(summary: dict[str, Any] | None) -> list[str]:
    if summary is None or summary.get("status") != "complete":
        return ["| Accuracy over seeds | not run or not complete |"] if summary else []
    (group,) = groups_of(summary)
    if not group["accuracy"]:
        return ["| Accuracy over seeds | no run completed |"]
    plain = Aggregate(**group["accuracy"])
    found = summary.get("range_test") or {}
    lr = f"LRMAX {found['lr_max']:.4g} found by the range test" if found else "LRMAX given"
    rows = [f"| Test accuracy, {plain.count} seeds ({lr}) | {plain.describe()} |"]
    if group.get("accuracy_tta"):
        rows.append(f"| … with flip TTA | {Aggregate(**group['accuracy_tta']).describe()} |")
    seconds = [run["total_train_seconds"] for run in group["runs"]]
    walls = [run.get("wall_seconds") for run in group["runs"]]
    wall = f"; wall per run median {statistics.median(walls):.2f} s" if None not in walls else ""
    rows.append(
        f"| Training time per run (epochs only) | median {statistics.median(seconds):.2f} s "
        f"(min {min(seconds):.2f}, max {max(seconds):.2f}){wall} |"
    )
    return rows


def sweep_rows(summary: dict[str, Any] | None) -> list[str]:
    if summary is None or summary.get("status") != "complete":
        return ["| LR sweep | not run or not complete |"] if summary else []
    found = (summary.get("range_test") or {}).get("lr_max")
    cells = []
    for group in summary["groups"]:
        if not group["accuracy"]:
            cells.append(f"{group['lr_max']:g}: diverged")
            continue
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
    smoke = "" if suite["sizes"]["full"] else " (smoke mode: not a measurement)"
    return [
        f"| Fastest suite row{smoke}: {fastest.label} | {fastest.epoch_seconds:.3f} s/epoch, "
        f"{fastest.images_per_second:,.0f} img/s; × {RECIPE_EPOCHS} epochs = "
        f"{RECIPE_EPOCHS * fastest.epoch_seconds:.2f} s{ratio} |"
    ]


def per_run_rows(parent: Path) -> list[dict[str, Any]]:
    """Every run of a multi-run folder: its seed, LRMAX, accuracy and times."""
    rows = []
    for path in sorted(parent.glob("**/seed-*/summary.json")):
        summary = json.loads(path.read_text())
        keys = (
            "status",
            "final_test_accuracy",
            "final_test_accuracy_tta",
            "lr_min",
            "lr_max",
            "total_train_seconds",
            "total_eval_seconds",
            "warm_up_seconds",
            "wall_seconds",
        )
        rows.append(
            {
                "run": str(path.parent.relative_to(parent)),
                "seed": summary["config"]["seed"],
                **{key: summary.get(key) for key in keys},
            }
        )
    return rows


def provenance() -> dict[str, Any]:
    import torch

    from fastcifar.records.provenance import source_commit, versions
    from fastcifar.system.device import device_name

    device = "cpu"
    if torch.cuda.is_available():
        device = device_name(torch.device("cuda"))
    return {"source": source_commit(), "device": device, "versions": versions()}


def collect(work: Path, stages: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[str, dict]:
    """(summary.md, results.json's content) of everything in `work`."""
    seeds, sweep = (
        read_json(work / "seeds" / "summary.json"),
        read_json(work / "sweep" / "summary.json"),
    )
    suites = sorted((work / "suite").glob("*.json")) if (work / "suite").is_dir() else []
    suite = read_json(suites[-1]) if suites else None
    outcomes = test_outcomes(work / "cuda-tests.xml")
    by_name = {stage["name"]: stage for stage in stages}
    origin = provenance()
    device = (seeds or {}).get("device_name") or origin["device"]
    commit = describe_commit(origin["source"])
    lines = [
        f"GPU check on {device} (commit {commit}, torch {origin['versions']['torch']}, "
        f"CUDA {origin['versions']['cuda']}, driver {origin['versions']['gpu_driver']})",
        "",
        "| What | Result |",
        "|---|---|",
    ]
    lines += preflight_rows(meta) + stages_rows(stages) + seeds_rows(seeds)
    lines += sweep_rows(sweep) + suite_rows(suite)
    lines += tests_rows(outcomes, by_name.get("tests"))
    table = "\n".join(lines) + "\n"
    first_conv = work / "first-conv" / FIRST_CONV_FILE
    first_conv_table = first_conv.read_text() if first_conv.is_file() else None
    peer = work / "peer" / PEER_FILE
    peer_table = peer.read_text() if peer.is_file() else None
    # Filed on its own (publish --import), so it stays out of the training record's table.
    markdown = table + (
        f"\nThe first convolution (benchmarks/first_conv.py):\n\n{first_conv_table}"
        if first_conv_table
        else ""
    )
    if peer_table:
        markdown += f"\nTime to 94% beside the peer (benchmarks/peer.py):\n\n{peer_table}"
    date = datetime.date.today().isoformat()
    payload = {
        "meta": {**meta, "date": date, **origin},
        "stages": stages,
        "seeds": seeds,
        "seed_runs": per_run_rows(work / "seeds") if seeds else [],
        "sweep": sweep,
        "sweep_runs": per_run_rows(work / "sweep") if sweep else [],
        "suite": suite,
        "tests": outcomes,
        "first_conv": first_conv_table,
        "peer": peer_table,
        "training": {
            "kind": "training",
            "markdown": table,
            "meta": {"name": device, "date": date, "command": meta["command"]},
        },
    }
    return markdown, payload
