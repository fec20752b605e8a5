"""The records of complete runs of the recipe, written alike for a CPU and a GPU: each run's
files (config.json, summary.json, metrics.csv, lr_range_test.json and its plots, never weights)
copied under one folder, a table of them (recipe.md) and the per-epoch test accuracy of every
run in one plot (test_accuracy.png).

    python -m benchmarks.recipe_records RUN_DIR... --out benchmarks/results/cpu-recipe-CPU-DATE

A multi-run folder stands for its runs. `benchmarks/run_gpu.sh` writes the same for the runs
of its `seeds` and `sweep` stages, so CPU and GPU rows sit side by side.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fastcifar.records.config import RECIPE, TrainConfig
from fastcifar.records.config_record import RunKind, Status
from fastcifar.records.summary import Summary, read_summary
from fastcifar.runs.aggregation import run_folders_of

RECORD_FILES = ("config.json", "summary.json", "metrics.csv", "lr_range_test.json",
                "evaluation.json")  # fmt: skip
# Settings that say where or how fast, not what was trained: left out of the command shown.
NOT_THE_RECIPE = {"data_dir", "beton_dir", "plots", "checkpoint_every", "checkpoint_seconds"}
# Which settings change what is trained (not how it is evaluated, reported or run).
RECIPE_SETTINGS = {f.name: f.metadata.get("group") == RECIPE for f in fields(TrainConfig)}


def complete_runs(folders: list[Path]) -> dict[str, Path]:
    """The complete single runs among `folders` by name: a run folder's own name; a multi-run's
    runs as MULTI-seed-K (MULTI-lr-X-seed-K in a sweep)."""
    runs: dict[str, Path] = {}
    for folder in folders:
        summary = read_summary(folder)
        if summary.kind == RunKind.MULTI:
            for run in run_folders_of(folder):
                if _complete(read_summary(run)):
                    runs["-".join((folder.name, *run.relative_to(folder).parts))] = run
        elif summary.kind == RunKind.RUN and _complete(summary):
            runs[folder.name] = folder
    return runs


def _complete(summary: Summary) -> bool:
    return summary.status == Status.COMPLETE


def _differences(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a recorded config that differ from what its recipe sets."""
    recipe = config.get("recipe", "assignment")
    defaults = TrainConfig.from_dict({"recipe": recipe}).to_dict()
    # A setting added after the run was recorded had its plain default then (say, an
    # initialisation a recipe has taken up since): said, so that the command stays the run's.
    before = TrainConfig().to_dict()
    return {name: config.get(name, before[name]) for name in defaults
            if name not in NOT_THE_RECIPE
            and config.get(name, before[name]) != defaults[name]}  # fmt: skip


def command_of(config: dict[str, Any]) -> str:
    """The train command of a recorded config: its --recipe, then every setting that differs
    from what that recipe sets (fastcifar.records.recipes)."""
    recipe = config.get("recipe", "assignment")
    flags = [] if recipe == "assignment" else [f"--recipe {recipe}"]
    for name, value in _differences(config).items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:  # None: switched off where the recipe has it on
            flags.append(f"--no-{name.replace('_', '-')}")
        else:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            flags.append(f"{flag} {shown}")
    return " ".join(["python -m fastcifar.train", *flags])


def variant_of(config: dict[str, Any]) -> list[str]:
    """The training settings in which a run departs from its recipe (an ablation's switched-off
    feature, say), other than its length and seed; [] for the preset as it is."""
    return [name for name in _differences(config)
            if RECIPE_SETTINGS.get(name) and name not in ("epochs", "seed", "seeds")]  # fmt: skip


_IMAGE_GFLOP: dict[tuple[str, int, int], float] = {}


def training_pflop(summary: Summary) -> float | None:
    """PFLOP of the run's training steps, counted by torch's FLOP counter on the network it
    trained (a forward's FLOPs x 3 per image: forward, input and weight gradients); evaluation
    left out."""
    from fastcifar.engine.model import network_class, step_gflop

    classes = len(summary.class_names or ()) or 10
    network = summary.config.get("model", "resnet9")
    width = summary.config.get("width", 64)  # runs recorded before the setting: 64
    if summary.train_examples_per_epoch is None or summary.epochs_completed is None:
        return None
    key = (network, classes, width)
    if key not in _IMAGE_GFLOP:
        import torch

        model = network_class(network)(classes, width=width)
        _IMAGE_GFLOP[key] = step_gflop(model, 1, torch.device("cpu")) or 0.0
    images = summary.train_examples_per_epoch * summary.epochs_completed
    return _IMAGE_GFLOP[key] * images / 1e6 or None


def row_of(folder: Path, name: str) -> dict[str, Any]:
    """One complete run as the table shows it."""
    summary = read_summary(folder)
    # The config says it: a resumed run's bounds read back from lr_range_test.json record no
    # range-test seconds, and a plan's runs had theirs found once, before the first.
    found = summary.config.get("lr_max") is None
    return {
        "run": name,
        "recipe": summary.config.get("recipe", "assignment"),
        "epochs": summary.epochs_completed,
        "pflop": training_pflop(summary),
        "accuracy": summary.final_test_accuracy,
        "accuracy_tta": summary.final_test_accuracy_tta,
        "tta_kind": summary.headline if summary.final_test_accuracy_tta is not None else None,
        "lr_min": summary.lr_min,
        "lr_max": summary.lr_max,
        "bounds": "found by the range test" if found else "given",
        "train_seconds": summary.total_train_seconds,
        "eval_seconds": summary.total_eval_seconds,
        "wall_seconds": summary.wall_seconds,
        "device": summary.device_name,
        "precision": summary.precision,
        "torch": (summary.versions or {}).get("torch"),
        "commit": (summary.provenance or {}).get("commit"),
        "command": command_of(summary.config),
        "variant": variant_of(summary.config),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| Run | Epochs | Test accuracy | TTA | LRMIN / LRMAX | Training PFLOP | Training | Wall "
        "| Device | Precision | torch | Command |\n"
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        tta = (
            f"{100 * row['accuracy_tta']:.2f}% ({row['tta_kind']})"
            if row["accuracy_tta"] is not None
            else "-"
        )
        bounds = f"{row['lr_min']:.4g} / {row['lr_max']:.4g} ({row['bounds']})"
        pflop = f"{row['pflop']:.3g}" if row["pflop"] else "-"
        lines.append(
            f"| {row['run']} | {row['epochs']} | {100 * row['accuracy']:.2f}% | {tta} | {bounds} "
            f"| {pflop} | {_hours(row['train_seconds'])} | {_hours(row['wall_seconds'])} "
            f"| {row['device']} | {row['precision']} | {row['torch']} | `{row['command']}` |"
        )
    return "\n".join(lines) + "\n"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def plot_test_accuracy(runs: dict[str, Path], path: Path) -> Path:
    """The test accuracy after each evaluated epoch of every run, in one plot."""
    from matplotlib.ticker import MaxNLocator

    from fastcifar.outputs.plots import plt, save_figure

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, folder in runs.items():
        with open(folder / "metrics.csv") as handle:
            rows = [r for r in csv.DictReader(handle) if r["test_accuracy"]]
        epochs = [int(r["epoch"]) for r in rows]
        accuracy = [100 * float(r["test_accuracy"]) for r in rows]
        axes.plot(epochs, accuracy, "o-", ms=3, label=name)
    axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


# (row key, the preset's marker, a variant's, legend)
MARKERS = (("accuracy", "o", "x", "plain"), ("accuracy_tta", "^", "+", "with TTA"))


def plot_accuracy_by_compute(rows: list[dict[str, Any]], path: Path) -> Path:
    """Final test accuracy (plain, and with the run's TTA) against epochs and against training
    PFLOP, one colour per recipe: each preset as it is, mean ± std over its seeds at each
    length, joined across lengths (epochs-to-accuracy); its variants (the ablation's runs) as
    faint crosses (x plain, + with TTA)."""
    from fastcifar.outputs.plots import plt, save_figure

    figure, panels = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    recipes = sorted({row["recipe"] for row in rows})
    for axes, key, label in zip(panels, ("epochs", "pflop"), ("epochs", "training PFLOP"),
                                strict=True):  # fmt: skip
        for index, recipe in enumerate(recipes):
            mine = [row for row in rows if row["recipe"] == recipe and row[key]]
            colour = f"C{index}"
            for accuracy, marker, cross, what in MARKERS:
                preset = _by_length([r for r in mine if not r["variant"]], key, accuracy)
                if preset:
                    x, mean, std = zip(*preset, strict=True)
                    axes.errorbar(x, mean, yerr=std, fmt=f"{marker}-", color=colour, ms=5,
                                  capsize=3, label=f"{recipe}: {what}")  # fmt: skip
                varied = [(r[key], 100 * r[accuracy]) for r in mine
                          if r["variant"] and r[accuracy] is not None]  # fmt: skip
                if varied:
                    axes.plot(*zip(*varied, strict=True), cross, color=colour, alpha=0.45, ms=6,
                              label=f"{recipe}: variants, {what}")  # fmt: skip
        axes.axhline(94.0, color="grey", lw=0.8, ls="--")
        axes.set(xlabel=label)
        axes.grid(alpha=0.3)
    panels[0].set(ylabel="final test accuracy (%)")
    panels[1].legend(fontsize=7)
    figure.suptitle("accuracy against training length and compute: each preset's mean ± std "
                    "over seeds (94%: dashed)", fontsize=10)  # fmt: skip
    return save_figure(figure, path)


def _by_length(rows: list[dict[str, Any]], key: str, accuracy: str) -> list[tuple]:
    """(length, mean %, std %) of `accuracy` over the rows of each length, in order."""
    import numpy as np

    lengths: dict[float, list[float]] = {}
    for row in rows:
        if row[accuracy] is not None:
            lengths.setdefault(row[key], []).append(100 * row[accuracy])
    return [(length, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for length, v in sorted(lengths.items())]  # fmt: skip


def write_records(folders: list[Path], out: Path) -> list[dict[str, Any]]:
    """The records of the complete runs among `folders` under `out` (see the docstring); the
    table's rows."""
    names = complete_runs(folders)
    out.mkdir(parents=True, exist_ok=True)
    for name, run in names.items():
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        for file in [*(run / n for n in RECORD_FILES), *sorted(run.glob("*.png")),
                     *_plan_range_test(run)]:  # fmt: skip
            if file.is_file():
                shutil.copy2(file, target / file.name)
    rows = [row_of(run, name) for name, run in names.items()]
    if rows:
        (out / "recipe.md").write_text(table(rows))
        plot_test_accuracy(names, out / "test_accuracy.png")
        plot_accuracy_by_compute(rows, out / "accuracy_by_compute.png")
    return rows


def _plan_range_test(run: Path) -> list[Path]:
    """The range test of the plan a run belongs to (it is in the plan's folder, not the run's):
    seeds/seed-K or sweep/lr-X/seed-K."""
    if (run / "lr_range_test.json").is_file():
        return []
    for plan in run.parents[:2]:
        if (plan / "lr_range_test.json").is_file():
            return [plan / "lr_range_test.json", plan / "lr_range_test.png"]
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_records",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or multi-run folders)")
    parser.add_argument("--out", type=Path, required=True, help="the records' folder")
    args = parser.parse_args(argv)
    rows = write_records(args.runs, args.out)
    if not rows:
        print("no complete run among them: nothing recorded", file=sys.stderr)
        sys.exit(2)
    print((args.out / "recipe.md").read_text(), end="")


if __name__ == "__main__":
    main()
