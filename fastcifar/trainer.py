"""A whole training run: find the LR bounds, warm up, train under One Cycle, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fastcifar import plots
from fastcifar.config import TrainConfig
from fastcifar.device import device_name, synchronize
from fastcifar.engine import Evaluation, evaluate, train_epoch
from fastcifar.experiment import Experiment, build_experiment, run_range_test, warm_up
from fastcifar.lr_range_test import RangeTestResult
from fastcifar.run_folder import (
    append_metrics,
    make_run_folder,
    save_weights,
    versions,
    write_json,
)
from fastcifar.schedule import one_cycle_lrs, one_cycle_schedule


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the recipe described by `config`; returns (and writes) the run's summary."""
    folder = make_run_folder(config.out)
    experiment = build_experiment(config)
    write_json(folder / "config.json", config.to_dict())
    lr_min, lr_max, lr_source = _learning_rates(experiment, folder)
    warmup_seconds = warm_up(experiment) if _needs_warm_up(experiment) else 0.0
    steps_per_epoch = len(experiment.train_loader)
    scheduler = one_cycle_schedule(
        experiment.optimizer,
        lr_min=lr_min,
        lr_max=lr_max,
        total_steps=config.epochs * steps_per_epoch,
        peak_fraction=config.peak_fraction,
        cycle_momentum=config.cycle_momentum,
        base_momentum=config.base_momentum,
        max_momentum=config.max_momentum,
    )
    schedule = one_cycle_lrs(
        lr_min=lr_min,
        lr_max=lr_max,
        peak_fraction=config.peak_fraction,
        total_steps=config.epochs * steps_per_epoch,
    )
    history, final = _train_epochs(experiment, scheduler, schedule, folder / "metrics.csv")
    save_weights(experiment.model, folder)
    summary = _summary(experiment, history, final, lr_min, lr_max, lr_source, warmup_seconds)
    write_json(folder / "summary.json", summary)
    if config.plots:
        _plot_run(experiment, folder, history, final, schedule, steps_per_epoch)
    print(
        f"test accuracy {100 * final.accuracy:.2f}% in {summary['total_train_seconds']:.1f} s "
        f"of training; run folder: {folder}"
    )
    return summary


def _needs_warm_up(experiment: Experiment) -> bool:
    # Eager CPU runs have nothing to compile; warming up would only cost a few seconds.
    return experiment.compiled or experiment.device.type == "cuda"


def _learning_rates(experiment: Experiment, folder: Path) -> tuple[float, float, dict]:
    config = experiment.config
    if config.lr_max is not None:
        lr_min = (
            config.lr_min if config.lr_min is not None else config.lr_max / config.lr_min_divisor
        )
        how_min = (
            "given (--lr-min)"
            if config.lr_min is not None
            else (f"LRMAX / {config.lr_min_divisor:g}")
        )
        return lr_min, config.lr_max, {"lr_max": "given (--lr-max)", "lr_min": how_min}
    start = time.perf_counter()
    result = run_range_test(experiment)
    seconds = time.perf_counter() - start
    save_range_test(result, folder, config.plots)
    print(
        f"LR range test ({seconds:.1f} s): LRMIN {result.lr_min:.4g} ({result.lr_min_method}), "
        f"LRMAX {result.lr_max:.4g} ({result.lr_max_method})"
    )
    return (
        result.lr_min,
        result.lr_max,
        {
            "lr_max": result.lr_max_method,
            "lr_min": result.lr_min_method,
            "range_test_seconds": seconds,
            "range_test_stop": result.stop_reason,
        },
    )


def save_range_test(result: RangeTestResult, folder: Path, plot: bool = True) -> None:
    write_json(folder / "lr_range_test.json", result.to_dict())
    if plot:
        plots.plot_range_test(result, folder / "lr_range_test.png")


def _train_epochs(experiment: Experiment, scheduler, schedule, metrics_path: Path):
    config, device = experiment.config, experiment.device
    context = experiment.step_context(scheduler)
    steps_per_epoch = len(experiment.train_loader)
    history: list[dict] = []
    bar = tqdm(range(1, config.epochs + 1), desc="epochs", unit="epoch")
    show_batches = device.type == "cpu"
    final: Evaluation | None = None
    for epoch in bar:
        start = time.perf_counter()
        totals = train_epoch(context, experiment.train_loader, progress=show_batches)
        synchronize(device)
        train_seconds = time.perf_counter() - start
        final = evaluate(
            experiment.runner, experiment.test_loader, experiment.precision, progress=show_batches
        )
        row = {
            "epoch": epoch,
            "train_loss": totals.loss,
            "train_accuracy": totals.accuracy,
            "test_loss": final.loss,
            "test_accuracy": final.accuracy,
            "lr": schedule[epoch * steps_per_epoch - 1],
            "epoch_seconds": train_seconds,
            "images_per_second": totals.examples / train_seconds,
            "eval_seconds": time.perf_counter() - start - train_seconds,
        }
        append_metrics(metrics_path, row)
        history.append(row)
        bar.set_postfix(
            loss=f"{totals.loss:.3f}",
            test_acc=f"{100 * final.accuracy:.2f}%",
            s_per_epoch=f"{train_seconds:.2f}",
        )
    return history, final


def _summary(experiment, history, final, lr_min, lr_max, lr_source, warmup_seconds) -> dict:
    epoch_seconds = [row["epoch_seconds"] for row in history]
    total = sum(epoch_seconds)
    examples_per_epoch = len(experiment.train_loader) * experiment.config.batch_size
    return {
        "config": experiment.config.to_dict(),
        "final_test_accuracy": final.accuracy,
        "final_test_loss": final.loss,
        "total_train_seconds": total,
        "epoch_seconds": epoch_seconds,
        "eval_seconds": [row["eval_seconds"] for row in history],
        "warmup_compile_seconds": warmup_seconds,
        "images_per_second": examples_per_epoch * len(history) / total,
        "lr_min": lr_min,
        "lr_max": lr_max,
        "lr_source": lr_source,
        "compiled": experiment.compiled,
        "precision": str(experiment.precision.dtype or torch.float32),
        "train_examples_per_epoch": examples_per_epoch,  # drop_last: whole batches only
        "test_examples": len(final.labels),
        "class_names": list(experiment.data.class_names),
        "device_name": device_name(experiment.device),
        "versions": versions(),
    }


def _plot_run(experiment, folder, history, final, schedule, steps_per_epoch) -> None:
    labels, predictions = final.labels.numpy(), final.predictions.numpy()
    names = experiment.data.class_names
    plots.plot_schedule(schedule, steps_per_epoch, folder / "lr_schedule.png")
    plots.plot_curves(history, folder / "curves.png")
    plots.plot_mistakes(
        experiment.data.test.images, labels, predictions, names, folder / "misclassified.png"
    )
    plots.plot_confusion(
        plots.confusion_matrix(labels, predictions), names, folder / "confusion_matrix.png"
    )
