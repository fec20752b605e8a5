"""What a run tells its user: the per-epoch line, the time estimate, the summary, the plots."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np
import torch

from fastcifar import __version__, plots
from fastcifar.device import device_name
from fastcifar.engine import EpochTotals
from fastcifar.evaluation import Evaluation
from fastcifar.run_folder import SUMMARY_SCHEMA, RunFolder
from fastcifar.schedule import schedule_points

# An evaluation image costs this share of a training image. In FLOPs it is a third (a step is a
# forward plus input and weight gradients); measured on the 2-core AVX2 EPYC (fp32, evaluation
# batches of 1000) it was 0.30 against training batches of 128 and 0.6 against batches of 256.
FORWARD_SHARE_OF_STEP = 0.45


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "numpy": np.__version__,
        "fastcifar": __version__,
    }
    for package in ("ffcv", "nvidia-dali-cuda130", "grad-cam", "tensorboard"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(row: dict[str, Any], epochs: int, seconds_left: float | None) -> str:
    tta = f" (TTA {100 * row['test_accuracy_tta']:.2f}%)" if row.get("test_accuracy_tta") else ""
    left = f"  ~{duration(seconds_left)} left" if seconds_left else ""
    return (
        f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  "
        f"train loss {row['train_loss']:.3f} acc {100 * row['train_accuracy']:.2f}%  "
        f"test loss {row['test_loss']:.3f} acc {100 * row['test_accuracy']:.2f}%{tta}  "
        f"lr {row['lr']:.4g}  {row['epoch_seconds']:.1f} s ({row['images_per_second']:,.0f} img/s)"
        f" + eval {row['eval_seconds']:.1f} s{left}"
    )


def estimate_line(
    seconds_per_step: float, steps: int, epochs: int, eval_images: int, batch: int, on_cpu: bool
) -> str:
    """The run's expected duration from the range test's speed (a step of the same batch)."""
    train = seconds_per_step * steps
    evaluation = seconds_per_step * FORWARD_SHARE_OF_STEP * eval_images / batch * epochs
    line = (
        f"estimated time: ~{duration(train + evaluation)} ({duration(train)} training, "
        f"{duration(evaluation)} evaluation) at the range test's {seconds_per_step:.3g} s/step"
    )
    if on_cpu and train + evaluation > 600:
        line += "; for a quick try on a CPU see README (--train-subset, --test-subset)"
    return line


def metrics_row(
    epoch: int, totals: EpochTotals, evaluation: Evaluation, lr: float, eval_seconds: float
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": totals.loss,
        "train_accuracy": totals.accuracy,
        "test_loss": evaluation.plain.loss,
        "test_accuracy": evaluation.plain.accuracy,
        "test_loss_tta": evaluation.tta.loss if evaluation.tta else None,
        "test_accuracy_tta": evaluation.tta.accuracy if evaluation.tta else None,
        "lr": lr,
        "epoch_seconds": totals.seconds,
        "images_per_second": totals.examples / max(totals.seconds, 1e-9),
        "eval_seconds": eval_seconds,
    }


def final_line(summary: dict[str, Any], folder: RunFolder) -> str:
    tta = summary.get("final_test_accuracy_tta")
    accuracy = f"test accuracy {100 * summary['final_test_accuracy']:.2f}%"
    if tta is not None:
        accuracy += f" (flip TTA {100 * tta:.2f}%)"
    extras = [f"compile {duration(summary['compile_seconds'])}"]
    if "range_test_seconds" in summary["lr_source"]:
        extras.append(f"range test {duration(summary['lr_source']['range_test_seconds'])}")
    if summary.get("resumed"):
        extras.append("resumed")
    return (
        f"{accuracy} | training {duration(summary['total_train_seconds'])}, evaluation "
        f"{duration(summary['total_eval_seconds'])}, wall {duration(summary['wall_seconds'])} "
        f"({', '.join(extras)}) | run folder: {folder.path}"
    )


def base_summary(status: str, config: dict[str, Any], reason: str | None = None) -> dict:
    return {
        "schema": SUMMARY_SCHEMA,
        "kind": "run",
        "status": status,
        "reason": reason,
        "config": config,
    }


def plot_run(folder: RunFolder, history, evaluation, data, steps_per_epoch, shape) -> None:
    """Every plot of a finished run: schedule, curves, mistakes, confusion matrix."""
    labels, predictions = evaluation.labels.numpy(), evaluation.headline().predictions.numpy()
    names = data.class_names
    steps, lrs = schedule_points(**shape)
    plots.plot_schedule(steps, lrs, steps_per_epoch, folder / "lr_schedule.png")
    plots.plot_curves(history, folder / "curves.png")
    plots.plot_mistakes(data.test.images, labels, predictions, names, folder / "misclassified.png")
    matrix = plots.confusion_matrix(labels, predictions)
    plots.plot_confusion(matrix, names, folder / "confusion_matrix.png")


def run_summary(
    experiment, state, evaluation: Evaluation, compile_seconds: float
) -> dict[str, Any]:
    """summary.json of a complete run (wall_seconds is set when it is written)."""
    config, history, dist = experiment.config, state.history, experiment.dist
    epoch_seconds = [row["epoch_seconds"] for row in history]
    eval_seconds = [row["eval_seconds"] for row in history]
    examples = len(experiment.train_loader) * config.batch_size
    return {
        **base_summary("complete", config.to_dict()),
        "final_test_accuracy": evaluation.plain.accuracy,
        "final_test_loss": evaluation.plain.loss,
        "final_test_accuracy_tta": evaluation.tta.accuracy if evaluation.tta else None,
        "final_test_loss_tta": evaluation.tta.loss if evaluation.tta else None,
        "headline": "flip TTA" if evaluation.tta else "plain",
        "headline_accuracy": evaluation.headline().accuracy,
        "epochs_completed": state.epoch,
        "total_train_seconds": sum(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "eval_seconds": eval_seconds,
        "total_eval_seconds": sum(eval_seconds),
        "compile_seconds": compile_seconds,
        "wall_seconds": None,
        "images_per_second": examples * len(history) / max(sum(epoch_seconds), 1e-9),
        "lr_min": state.lr_min,
        "lr_max": state.lr_max,
        "lr_source": state.lr_source,
        "compiled": experiment.compiled,
        "compile_mode": experiment.compile_mode,
        "precision": experiment.precision.name,
        "precision_reason": experiment.precision.reason,
        "train_examples_per_epoch": examples,  # drop_last: whole batches only
        "test_examples": len(evaluation.labels),
        "class_names": list(experiment.data.class_names),
        "device_name": device_name(experiment.device),
        "world_size": dist.world_size,
        "backend": dist.backend,
        "rank_devices": dist.gather_objects(device_name(experiment.device)),
        "versions": versions(),
    }
