"""The run folder: what a run writes (config, metrics, summary, weights, plots) and reads back."""

from __future__ import annotations

import csv
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcifar.config import TrainConfig
from fastcifar.model import ResNet9, build_model

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "lr",
    "epoch_seconds",
    "images_per_second",
    "eval_seconds",
)


def make_run_folder(out: str | None) -> Path:
    folder = Path(out) if out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def append_metrics(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({key: row[key] for key in METRIC_COLUMNS})


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "numpy": np.__version__,
    }
    for package in ("fastcifar", "ffcv", "nvidia-dali-cuda130"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def save_weights(model: ResNet9, folder: Path) -> Path:
    path = folder / "model.pt"
    torch.save(model.state_dict(), path)
    return path


def load_run(folder: str | Path, device: torch.device) -> tuple[ResNet9, dict[str, Any]]:
    """The trained model (weights loaded with weights_only=True) and the run's summary."""
    folder = Path(folder)
    summary_path, weights_path = folder / "summary.json", folder / "model.pt"
    for path in (summary_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {folder} is not a finished run folder of fastcifar.train"
            )
    summary = json.loads(summary_path.read_text())
    config = TrainConfig.from_dict(summary["config"])
    model = build_model(device, config.logit_scale, config.channels_last)
    model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
    return model.eval(), summary
