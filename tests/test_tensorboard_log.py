"""The TensorBoard log, read back with TensorBoard's own reader: every scalar at its step with its
value, the plots as images, and a one-line error when TensorBoard is missing."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastcifar.errors import MissingBackendError
from fastcifar.outputs.tensorboard_log import TensorBoardLog

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="pip install .[tensorboard]"
)

METRICS_ROW = {
    "epoch": 3,
    "train_loss": 0.75,
    "train_accuracy": 0.7421875,
    "test_loss": 0.8125,
    "test_accuracy": 0.7109,
    "lr": 0.4,
    "epoch_seconds": 12.5,
    "images_per_second": 4000.0,
    "eval_seconds": 1.25,
}


def read_back(folder: Path):
    from tensorboard.backend.event_processing import event_accumulator

    everything = {event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}  # 0 keeps all
    reader = event_accumulator.EventAccumulator(str(folder), size_guidance=everything)
    reader.Reload()
    return reader


def scalars(reader, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def as_stored(values) -> list[float]:
    return [float(np.float32(value)) for value in values]  # TensorBoard keeps float32


@needs_tensorboard
def test_the_range_test_is_logged_per_step_and_against_the_lr(tmp_path):
    lrs, losses, smoothed = [1e-4, 1e-3, 1e-2, 0.4], [2.3, 2.25, 1.9, 2.8], [2.3, 2.27, 2.1, 2.3]
    with TensorBoardLog(tmp_path) as log:
        log.range_test(lrs, losses, smoothed)
    reader = read_back(tmp_path)
    steps = [0, 1, 2, 3]
    assert scalars(reader, "range_test/lr") == list(zip(steps, as_stored(lrs), strict=True))
    assert scalars(reader, "range_test/loss") == list(zip(steps, as_stored(losses), strict=True))
    assert scalars(reader, "range_test/smoothed_loss") == list(
        zip(steps, as_stored(smoothed), strict=True)
    )
    micro_lrs = [100, 1_000, 10_000, 400_000]
    assert scalars(reader, "range_test/loss_vs_lr") == list(
        zip(micro_lrs, as_stored(losses), strict=True)
    )
    assert scalars(reader, "range_test/smoothed_loss_vs_lr") == list(
        zip(micro_lrs, as_stored(smoothed), strict=True)
    )


@needs_tensorboard
def test_each_epochs_steps_continue_the_global_step(tmp_path):
    with TensorBoardLog(tmp_path) as log:
        log.steps(0, lrs=[0.01, 0.02], losses=[2.5, 2.25])
        log.steps(2, lrs=[0.03, 0.04], losses=[2.0, 1.75])
    reader = read_back(tmp_path)
    assert scalars(reader, "step/lr") == list(
        zip([0, 1, 2, 3], as_stored([0.01, 0.02, 0.03, 0.04]), strict=True)
    )
    assert scalars(reader, "step/loss") == [(0, 2.5), (1, 2.25), (2, 2.0), (3, 1.75)]


@needs_tensorboard
def test_an_epoch_logs_every_numeric_metric_and_skips_the_missing_ones(tmp_path):
    row = METRICS_ROW | {"learning_rate_ratio": 2, "grad_norm": None}
    with TensorBoardLog(tmp_path) as log:
        log.epoch(3, row)
    reader = read_back(tmp_path)
    expected = {key: value for key, value in row.items() if key != "epoch" and value is not None}
    assert set(reader.Tags()["scalars"]) == {f"epoch/{key}" for key in expected}
    for key, value in expected.items():
        assert scalars(reader, f"epoch/{key}") == [(3, float(np.float32(value)))]


@needs_tensorboard
def test_the_plots_are_logged_as_images(tmp_path):
    pixels = {
        "curves": np.full((20, 30, 3), (255, 0, 0), dtype=np.uint8),
        "confusion_matrix": np.full((10, 12, 4), 200, dtype=np.uint8),  # RGBA, as matplotlib saves
    }
    paths = {}
    for name, array in pixels.items():
        paths[name] = tmp_path / "plots" / f"{name}.png"
        paths[name].parent.mkdir(exist_ok=True)
        Image.fromarray(array).save(paths[name])
    with TensorBoardLog(tmp_path / "tensorboard") as log:
        log.images(paths)
    reader = read_back(tmp_path / "tensorboard")
    assert set(reader.Tags()["images"]) == {"plots/curves", "plots/confusion_matrix"}
    for name, array in pixels.items():
        [event] = reader.Images(f"plots/{name}")
        stored = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(stored, array[..., :3])


def test_a_missing_tensorboard_names_the_extra_to_install(tmp_path, monkeypatch):
    prefixes = ("tensorboard", "torch.utils.tensorboard")
    loaded = [name for name in sys.modules if name.startswith(prefixes)]
    for name in {*prefixes, *loaded}:
        monkeypatch.setitem(sys.modules, name, None)  # None makes `import` fail
    with pytest.raises(MissingBackendError, match=r"pip install -e '\.\[tensorboard\]'"):
        TensorBoardLog(tmp_path)
