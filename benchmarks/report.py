"""Turn measured epochs into the table: extrapolated epoch time, img/s, TFLOP/s, share of the
device's peak, speed-up against the 24 s/epoch baseline and against the in-run reference.

Every figure is derived from a measured median; nothing is filled in from elsewhere.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.hardware import peak_tflops, slug
from benchmarks.settings import FULL_EPOCH_IMAGES, REFERENCE, BenchConfig

# The seed solution's reported epoch time: the number this project promises to beat.
BASELINE_EPOCH_SECONDS = 24.0
# ResNet-9 forward: 0.76 GFLOP per 32x32 image (multiply-add = 2 FLOP); a training step costs
# about 3x the forward (forward + input gradients + weight gradients).
FORWARD_FLOP_PER_IMAGE = 0.76e9
TRAIN_FLOP_PER_IMAGE = 3 * FORWARD_FLOP_PER_IMAGE


@dataclass(frozen=True)
class EpochRow:
    label: str
    is_reference: bool
    precision: str
    epoch_seconds: float  # median measured epoch, scaled to FULL_EPOCH_IMAGES
    images_per_second: float
    warmup_seconds: float  # all warm-up epochs as measured (compilation included), not scaled
    recompiled_frames: int

    @property
    def tflops(self) -> float:
        return self.images_per_second * TRAIN_FLOP_PER_IMAGE / 1e12

    @property
    def baseline_speedup(self) -> float:
        return BASELINE_EPOCH_SECONDS / self.epoch_seconds


def epoch_row(result: dict[str, Any]) -> EpochRow:
    """The table row of one `EpochResult.to_dict()`."""
    median = statistics.median(result["epoch_seconds"])
    images_per_second = result["images_per_epoch"] / median
    fields = {key: result["config"][key] for key in ("loader", "amp", "compile_mode")}
    config = BenchConfig(**fields, channels_last=result["config"]["channels_last"])
    return EpochRow(
        label=config.describe(result["precision"]),
        is_reference=result["config"]["loader"] == REFERENCE,
        precision=result["precision"],
        epoch_seconds=FULL_EPOCH_IMAGES / images_per_second,
        images_per_second=images_per_second,
        warmup_seconds=sum(result["warmup_seconds"]),
        recompiled_frames=result["recompiled_frames"],
    )


def baseline_phrase(speedup: float) -> str:
    """ "3.1× faster than the 24 s/epoch baseline", or "slower" with the inverse factor."""
    if speedup >= 1:
        return f"{speedup:.2f}× faster than the 24 s/epoch baseline"
    return f"{1 / speedup:.2f}× slower than the 24 s/epoch baseline"


def reference_seconds(rows: list[EpochRow]) -> float | None:
    return next((row.epoch_seconds for row in rows if row.is_reference), None)


def percent_of_peak(row: EpochRow, hardware: str) -> str:
    peak = peak_tflops(hardware, row.precision)
    return "n/a" if peak is None else f"{100 * row.tflops / peak:.1f}%"


def epoch_table(rows: list[EpochRow], hardware: str) -> str:
    """Markdown table, fastest first."""
    reference = reference_seconds(rows)
    lines = [
        "| Configuration | Epoch s | img/s | TFLOP/s | % of peak | vs 24 s/epoch baseline "
        "| vs in-run reference | Warm-up s (incl. compile) | Recompiles |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: r.epoch_seconds):
        ratio = "n/a" if reference is None else f"{reference / row.epoch_seconds:.2f}×"
        lines.append(
            f"| {row.label} | {row.epoch_seconds:.2f} | {row.images_per_second:,.0f} "
            f"| {row.tflops:.3f} | {percent_of_peak(row, hardware)} "
            f"| {baseline_phrase(row.baseline_speedup)} | {ratio} "
            f"| {row.warmup_seconds:.1f} | {row.recompiled_frames} |"
        )
    return "\n".join(lines)


def loader_speeds(results: list[dict[str, Any]]) -> dict[str, float]:
    """Loader name -> images/s of its median epoch."""
    return {
        r["loader"]: r["images_per_epoch"] / statistics.median(r["epoch_seconds"]) for r in results
    }


def loader_table(results: list[dict[str, Any]]) -> str:
    """Loader-only throughput, fastest first, with the ratio to the reference DataLoader."""
    speeds = loader_speeds(results)
    reference = speeds.get(REFERENCE)
    lines = ["| Loader | img/s | vs reference DataLoader |", "|---|---:|---:|"]
    for name, speed in sorted(speeds.items(), key=lambda item: -item[1]):
        ratio = "n/a" if reference is None else f"{speed / reference:.1f}×"
        lines.append(f"| {name} | {speed:,.0f} | {ratio} |")
    return "\n".join(lines)


def headline(rows: list[EpochRow]) -> str:
    """One sentence on the fastest configuration."""
    fastest = min(rows, key=lambda r: r.epoch_seconds)
    reference = reference_seconds(rows)
    against_reference = (
        ""
        if reference is None
        else f", {reference / fastest.epoch_seconds:.2f}× the in-run reference"
    )
    return (
        f"Fastest: {fastest.label}: {fastest.epoch_seconds:.2f} s/epoch, "
        f"{baseline_phrase(fastest.baseline_speedup)}{against_reference}."
    )


def target_lines(report: dict[str, Any], rows: list[EpochRow]) -> list[str]:
    """The issue's speed targets for this kind of device, each marked met or not met."""
    checks = []  # (target, measured value, threshold, value as text)
    reference = reference_seconds(rows)
    if report["meta"]["device"].startswith("cuda") and rows:
        fastest = min(rows, key=lambda r: r.epoch_seconds)
        speed = fastest.images_per_second
        checks.append(("H100/H200: fastest ≥ 200,000 img/s", speed, 2e5, f"{speed:,.0f} img/s"))
        if reference is not None:
            ratio = reference / fastest.epoch_seconds
            checks.append(
                ("H100/H200: fastest ≥ 20× the in-run reference", ratio, 20, f"{ratio:.1f}×")
            )
    speeds = loader_speeds(report["loaders"])
    if report["meta"]["device"] == "cpu" and {"torch", REFERENCE} <= speeds.keys():
        ratio = speeds["torch"] / speeds[REFERENCE]
        checks.append(
            ("CPU: torch loader ≥ 10× the reference DataLoader", ratio, 10, f"{ratio:.1f}×")
        )
    return [
        f"- Target {name}: {text} ({'met' if value >= threshold else 'not met'})"
        for name, value, threshold, text in checks
    ]


def sizes_note(sizes: dict[str, Any]) -> str:
    """Says how the epoch column was obtained, and flags smoke-mode numbers as meaningless."""
    measured = (
        f"median of {sizes['timed_epochs']} timed epoch(s) of {sizes['train_images']:,} images "
        f"(batch {sizes['batch_size']}) after {sizes['warmup_epochs']} warm-up epoch(s)"
    )
    if not sizes["full"]:
        return (
            f"SMOKE MODE: tiny sizes that only prove the code runs; not a measurement ({measured})."
        )
    if sizes["reduced"]:
        return (
            f"Reduced sizes: epoch s is extrapolated to 50,000 images (97 steps of 512) from the "
            f"{measured}; warm-up s is as measured, not extrapolated."
        )
    return f"Full size: 50,000 images, 97 steps of 512 per epoch; {measured}."


def contention_note(meta: dict[str, Any]) -> str:
    loads = [load for load in (meta.get("load_start"), meta.get("load_end")) if load is not None]
    if loads and meta.get("cores") and max(loads) > meta["cores"]:
        return " (above the core count: other processes competed for the CPU during the run)"
    return ""


def amp_note(meta: dict[str, Any]) -> str:
    if meta.get("native_bf16") is False:
        return f"{meta['amp']}; the AMP rows would repeat the fp32 ones and are left out"
    return meta["amp"]


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report (metadata, both tables, headline) as markdown."""
    meta = report["meta"]
    rows = [epoch_row(result) for result in report["epochs"]]
    parts = [
        f"## {meta['hardware']}",
        "",
        f"- Date: {meta['date']}; torch {meta['torch']}; commit {meta['commit']}",
        f"- Command: `{meta['command']}`",
        f"- Load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']}"
        + contention_note(meta),
        f"- Reference pipeline: torchvision per-sample transforms, torch DataLoader with "
        f"{meta['reference_workers']} worker processes (one per core, at most 8)",
        f"- {sizes_note(report['sizes'])}",
    ]
    if "amp" in meta:  # older result files do not say
        parts.append(f"- Mixed precision (AMP rows): {amp_note(meta)}")
        parts.append(
            "- World size 1: the suite times one process; no machine with several GPUs has "
            "measured torchrun yet"
        )
    parts += target_lines(report, rows)
    if rows:
        parts += ["", headline(rows), "", "### Training epoch", "", epoch_table(rows, meta["name"])]
    if report["loaders"]:
        parts += [
            "",
            "### Loader only (augmentation + transfer)",
            "",
            loader_table(report["loaders"]),
        ]
    return "\n".join(parts) + "\n"


def merge_reports(into: dict[str, Any] | None, other: dict[str, Any]) -> dict[str, Any]:
    """One report of two processes' (pytest-xdist workers of one smoke session): `into`'s
    metadata and sizes, both reports' rows."""
    if into is None:
        return other
    merged = {**into, "epochs": into["epochs"] + other["epochs"]}
    merged["loaders"] = into["loaders"] + other["loaders"]
    return merged


def save_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write `<device-slug>-<date>.json` and `.md` into `folder`; a same-day rerun replaces them."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(report['meta']['name'])}-{report['meta']['date']}"
    json_path, markdown_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.write_text(render_markdown(report))
    return json_path, markdown_path
