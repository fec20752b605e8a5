"""PNG plots that explain a run: LR range test, LR schedule, curves, mistakes, confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from fastcifar.engine.lr_range_test import RangeTestResult
from fastcifar.records.metrics_row import MetricsRow
from fastcifar.system.files import atomic_save

GRID_COLUMNS = 6


def save_figure(figure: Figure, path: Path) -> Path:
    """Through the run folder's one atomic writer: a crash never leaves half a PNG."""
    figure.tight_layout()
    atomic_save(path, lambda buffer: figure.savefig(buffer, format="png", dpi=110))
    plt.close(figure)
    return path


def plot_range_test(result: RangeTestResult, path: Path) -> Path:
    """The sweep, its smoothed curve, the valley floor that LRMAX is read from, where the loss
    blew up (if it did), and both bounds."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    axes.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed (bias-corrected)")
    floor = result.floor
    axes.plot(
        result.lrs[floor],
        result.smoothed[floor],
        "v",
        color="C1",
        ms=9,
        label=f"valley floor at LR {result.lrs[floor]:.3g}",
    )
    if result.blow_up_lr is not None:
        axes.axvline(
            result.blow_up_lr, color="0.4", ls=":", label=f"blew up at LR {result.blow_up_lr:.3g}"
        )
    axes.axvline(result.lr_max, color="C3", ls="--", label=f"LRMAX {result.lr_max:.3g}")
    axes.axvline(result.lr_min, color="C2", ls="--", label=f"LRMIN {result.lr_min:.3g}")
    axes.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="training loss",
        title=f"LR range test ({result.stop_reason})",
    )
    smoothed = np.asarray(result.smoothed, dtype=float)
    smoothed = smoothed[np.isfinite(smoothed)]
    raw = np.asarray(result.losses, dtype=float)
    lowest = min(smoothed.min(), raw[np.isfinite(raw)].min())  # the raw loss dips below: shown
    axes.set_ylim(lowest * 0.95, min(smoothed.max(), 4 * smoothed.min()) * 1.1)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def plot_schedule(
    steps: Sequence[int], lrs: Sequence[float], steps_per_epoch: int, path: Path
) -> Path:
    figure, axes = plt.subplots(figsize=(7, 3.5))
    epochs = np.asarray(steps) / steps_per_epoch
    axes.plot(epochs, lrs, color="C0")
    axes.set(xlabel="epoch", ylabel="learning rate", title="One Cycle schedule (per batch)")
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_curves(
    history: list[MetricsRow],
    path: Path,
    step_losses: Sequence[float] = (),
    steps_per_epoch: int = 1,
    test_label: str = "test",
) -> Path:
    """Loss and accuracy per epoch, and the training loss of every step (a short run shows its
    course, not one or two dots). The test curves show the epochs that were evaluated
    (--eval-every); the loss axis is logarithmic, so that a wild first epoch (a test loss of
    17, say) leaves the later ones readable."""
    epochs = [row.epoch for row in history]
    tested = [row for row in history if row.evaluated]
    tested_epochs = [row.epoch for row in tested]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    if len(step_losses):
        at = (np.arange(len(step_losses)) + 1) / steps_per_epoch
        loss_axes.plot(at, step_losses, color="C0", lw=0.8, alpha=0.35, label="train, per step")
    loss_axes.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    loss_axes.plot(tested_epochs, [r.test_loss for r in tested], "o-", label=test_label)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy (log scale)", title="loss", yscale="log")
    loss_axes.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    loss_axes.yaxis.set_minor_formatter(FuncFormatter(_plain_minor))
    accuracy_axes.plot(epochs, [100 * r.train_accuracy for r in history], "o-", label="train")
    accuracy_axes.plot(tested_epochs, [100 * r.test_accuracy for r in tested], "o-",
                       label=test_label)  # fmt: skip
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    return save_figure(figure, path)


def _plain_number(value: float, _position: object = None) -> str:
    """A log axis's tick as people write it (2.4, 0.5), not 2.4×10⁰."""
    return f"{value:g}"


def _plain_minor(value: float, _position: object = None) -> str:
    """Minor ticks labelled at 2 and 5 of each decade only, so that a wide axis stays legible."""
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return _plain_number(value) if leading in (2, 5) else ""


def plot_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    count: int = 36,
) -> Path:
    """A grid of misclassified test images (uint8 HWC), titled 'true -> predicted'."""
    all_wrong = np.flatnonzero(labels != predictions)
    wrong = all_wrong[:count]
    counts = mistakes_shown(len(wrong), len(all_wrong), len(labels))
    title = f"misclassified test images: {counts}; true → predicted"
    figure = image_grid(images[wrong], labels[wrong], predictions[wrong], class_names, title)
    return save_figure(figure, path)


def image_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    title: str,
    overlays: np.ndarray | None = None,
    overlay_opacity: float = 0.5,
) -> Figure:
    """Images (uint8 HWC), six to a row, each titled 'true → predicted' and optionally under
    its overlay (a heat map in 0..1). A bare Figure: no pyplot state outlives it."""
    rows = max(1, -(-len(images) // GRID_COLUMNS))
    figure = Figure(figsize=(GRID_COLUMNS * 1.6, rows * 1.8 + 0.6))
    grid = figure.subplots(rows, GRID_COLUMNS, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for index, axes in enumerate(grid.flat[: len(images)]):
        axes.imshow(images[index])
        if overlays is not None:
            axes.imshow(overlays[index], cmap="jet", alpha=overlay_opacity, vmin=0.0, vmax=1.0)
        true_name, predicted_name = class_names[labels[index]], class_names[predictions[index]]
        axes.set_title(f"{true_name}\n→ {predicted_name}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def mistakes_shown(shown: int, wrong: int, total: int) -> str:
    """ "24 shown of 612 wrong (of 10,000)": a grid of mistakes says how many it leaves out."""
    return f"{shown} shown of {wrong:,} wrong (of {total:,})"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(
        classes, classes
    )


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    threshold = matrix.max() / 2
    for (row, column), value in np.ndenumerate(matrix):
        color = "white" if value > threshold else "black"
        axes.text(column, row, str(value), ha="center", va="center", fontsize=7, color=color)
    axes.set(xlabel="predicted", ylabel="true", title="confusion matrix (test set)")
    figure.colorbar(image)
    return save_figure(figure, path)


def plot_seed_accuracies(
    names: Sequence[str],
    accuracies: Sequence[float],
    path: Path,
    tta: Sequence[float] | None = None,
    tta_label: str = "flip TTA",
) -> Path:
    """Each seed's final test accuracy (and TTA accuracy, when measured), with the mean and ±
    one standard deviation of each."""
    figure, axes = plt.subplots(figsize=(max(5, 0.6 * len(accuracies) + 2), 3.8))
    series = [("plain", accuracies, "C0", "C3")]
    if tta is not None:
        series.append((tta_label, tta, "C2", "C1"))
    for label, accuracy, dots, band in series:
        values = 100 * np.asarray(accuracy, dtype=float)
        axes.plot(range(len(values)), values, "o", color=dots, label=label)
        mean = values.mean()
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        axes.axhline(mean, color=band, label=f"{label}: mean {mean:.2f}% ± {spread:.2f}%")
        axes.axhspan(mean - spread, mean + spread, color=band, alpha=0.15)
    axes.set_xticks(range(len(accuracies)), names, rotation=45, ha="right")
    axes.set(ylabel="test accuracy (%)", title=f"{len(accuracies)} seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def plot_lr_sweep(
    lr_maxes: Sequence[float],
    accuracies: Sequence[Sequence[float]],
    found_lr_max: float | None,
    path: Path,
) -> Path:
    """Accuracy against LRMAX (each seed a dot, the mean a line), the range test's LRMAX marked."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    means = [100 * float(np.mean(values)) for values in accuracies]
    for lr_max, values in zip(lr_maxes, accuracies, strict=True):
        axes.plot([lr_max] * len(values), 100 * np.asarray(values), "o", color="C0", alpha=0.5)
    axes.plot(lr_maxes, means, "-", color="C0", label="mean over seeds")
    if found_lr_max is not None:
        axes.axvline(
            found_lr_max, color="C3", ls="--", label=f"range test LRMAX {found_lr_max:.3g}"
        )
    axes.set(xscale="log", xlabel="LRMAX", ylabel="final test accuracy (%)", title="LR sweep")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)
