"""PNG plots that explain a run: LR range test, LR schedule, curves, mistakes, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from fastcifar.lr_range_test import RangeTestResult


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_range_test(result: RangeTestResult, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    axes.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed (bias-corrected)")
    axes.axvline(result.lr_max, color="C3", ls="--", label=f"LRMAX {result.lr_max:.3g}")
    axes.axvline(result.lr_min, color="C2", ls="--", label=f"LRMIN {result.lr_min:.3g}")
    axes.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="training loss",
        title=f"LR range test ({result.stop_reason})",
    )
    finite = np.asarray(result.smoothed)
    axes.set_ylim(finite.min() * 0.9, min(finite.max(), 4 * finite.min()) * 1.1)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_schedule(lrs: Sequence[float], steps_per_epoch: int, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 3.5))
    epochs = np.arange(len(lrs)) / steps_per_epoch
    axes.plot(epochs, lrs, color="C0")
    axes.set(xlabel="epoch", ylabel="learning rate", title="One Cycle schedule (per batch)")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_curves(history: list[dict], path: Path) -> Path:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_axes.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axes.plot(epochs, [100 * r["train_accuracy"] for r in history], "o-", label="train")
    accuracy_axes.plot(epochs, [100 * r["test_accuracy"] for r in history], "o-", label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(figure, path)


def plot_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    count: int = 36,
) -> Path:
    """A grid of misclassified test images (uint8 HWC), titled 'true -> predicted'."""
    wrong = np.flatnonzero(labels != predictions)[:count]
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong, strict=False):
        axes.imshow(images[index])
        true_name, predicted_name = class_names[labels[index]], class_names[predictions[index]]
        axes.set_title(f"{true_name}\n→ {predicted_name}", fontsize=7)
    figure.suptitle(f"misclassified test images ({len(wrong)} shown): true → predicted")
    return _save(figure, path)


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
    return _save(figure, path)
