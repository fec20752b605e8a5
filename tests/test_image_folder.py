"""A folder of one's own images as a data set (`--dataset folder --data-dir PATH`,
`fit(data="PATH")`): read, cached, recorded, resumed and refused like CIFAR; and the
augmentation settings (`--no-flip`, `--crop-padding`, `--cutout`) it comes with."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastcifar
from fastcifar.data import image_folder
from fastcifar.data.image_folder import load_image_folder
from fastcifar.engine import step as engine
from fastcifar.errors import DataSourceError, ImageInputError
from fastcifar.records.config import TrainConfig
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, TWO_EPOCHS, WIDTH, exit_code, signal_after

CLASSES = ("cat", "dog", "frog")
# Two epochs of 3 steps (48 training images in batches of 16), 24 test images, LRMAX given.
SETTINGS = ["--epochs", "2", "--batch-size", "16", "--lr-max", "0.05", "--no-plots",
            "--device", "cpu", *NARROW]  # fmt: skip


def write_folder(root: Path, train: int = 16, test: int = 8) -> Path:
    """train/<class>/ and test/<class>/ of 32x32 PNGs, each class its own mean colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 120, (32, 32, 3)) + 60 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:03d}.png")
    (root / "train" / "README.txt").write_text("not an image: passed over")
    return root


def folder_argv(root: Path, out: Path, *more: str) -> list[str]:
    return ["--dataset", "folder", "--data-dir", str(root), *SETTINGS, *more, "--out", str(out)]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "shapes")


@pytest.fixture(scope="module")
def whole(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder-run") / "run"
    train_main(folder_argv(images, out))
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def test_the_layout_is_read_with_sorted_class_names_and_the_images_as_they_are(images):
    data = load_image_folder(images)
    assert data.class_names == CLASSES and data.source == "folder"
    assert len(data.train) == 48 and len(data.test) == 24
    assert np.bincount(data.train.labels).tolist() == [16, 16, 16]
    first = np.asarray(Image.open(images / "train" / "dog" / "000.png"))
    assert np.array_equal(data.train.images[16], first)  # labels follow the sorted names
    assert data.describe()["sha256"] == data.fingerprint and len(data.fingerprint) == 64


def test_a_folder_trains_from_the_command_line_and_records_its_images(whole, images):
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["status"] == "complete"
    record = json.loads((whole / "config.json").read_text())
    assert record["config"]["dataset"] == "folder"
    assert record["config"]["data_dir"] == str(images.resolve())
    assert record["data"]["source"] == "folder"
    assert record["data"]["class_names"] == list(CLASSES)
    assert record["data"]["sha256"] == load_image_folder(images).fingerprint


def test_python_reads_a_folder_path_as_the_command_does(whole, images, tmp_path):
    out = tmp_path / "python"
    result = fastcifar.fit(data=str(images), epochs=2, batch_size=16, lr_max=0.05, plots=False,
                           device="cpu", width=WIDTH, out=str(out))  # fmt: skip
    assert result.folder == out
    python, command = weights(out), weights(whole)
    assert all(torch.equal(python[key], command[key]) for key in command)
    scores = fastcifar.evaluate(out)  # the run names its data: nothing to pass again
    assert scores.test_examples == 24


def test_a_stopped_folder_run_resumes_bit_identical(whole, images, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = engine.training_step
    signal_after(monkeypatch, 4, signal.SIGTERM)  # inside epoch 2
    assert exit_code(folder_argv(images, out)) == 143
    monkeypatch.setattr(engine, "training_step", original)
    assert exit_code(["--resume", str(out)]) == 0
    resumed, uninterrupted = weights(out), weights(whole)
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)


def test_images_changed_under_a_stopped_run_refuse_its_resume(tmp_path, monkeypatch, capsys):
    root = write_folder(tmp_path / "images")
    out = tmp_path / "run"
    original = engine.training_step
    signal_after(monkeypatch, 2, signal.SIGTERM)
    assert exit_code(folder_argv(root, out)) == 143
    monkeypatch.setattr(engine, "training_step", original)
    Image.new("RGB", (32, 32), "white").save(root / "train" / "cat" / "000.png")
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert exit_code(["--resume", str(out)]) == 2
    error = capsys.readouterr().err
    assert "other images" in error and "SHA-256" in error and error.count("\n") == 1
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (lambda path: Image.new("RGB", (33, 32)).save(path), "is 33x32"),
        (lambda path: path.write_bytes(b"not a png at all"), "not an image file"),
    ],
)
def test_a_wrong_image_is_one_line_naming_the_file(spoil, words, tmp_path, capsys):
    root = write_folder(tmp_path / "images", train=2, test=1)
    bad = root / "train" / "dog" / "001.png"
    spoil(bad)
    assert exit_code(folder_argv(root, tmp_path / "run")) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and words in error and error.count("\n") == 1
    with pytest.raises(ImageInputError, match=r"001\.png"):
        load_image_folder(root)


def test_a_layout_that_is_not_one_is_refused(tmp_path, capsys):
    root = write_folder(tmp_path / "images", train=2, test=1)
    (root / "test" / "horse").mkdir()
    Image.new("RGB", (32, 32)).save(root / "test" / "horse" / "0.png")
    with pytest.raises(DataSourceError, match=r"test/horse is a class that train/ does not"):
        load_image_folder(root)
    with pytest.raises(DataSourceError, match=r"holding train/<class>/ and test/<class>/"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(DataSourceError) as refused:  # data= a path: no flag was given
        fastcifar.fit(data=str(tmp_path / "nowhere"), out=str(tmp_path / "never"))
    assert "--" not in str(refused.value) and not (tmp_path / "never").exists()
    assert exit_code([*SETTINGS, "--dataset", "folder", "--out", str(tmp_path / "run")]) == 2
    assert "--dataset folder reads the folder --data-dir names" in capsys.readouterr().err


def test_a_second_read_comes_from_the_cache_and_a_spoiled_cache_is_decoded_again(
    tmp_path, monkeypatch
):
    root = write_folder(tmp_path / "images", train=3, test=2)
    first = load_image_folder(root, cache=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("*.npz")

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(image_folder, "read_image", no_decoding)
    again = load_image_folder(root, cache=tmp_path / "cache")
    assert again.fingerprint == first.fingerprint
    assert np.array_equal(again.train.images, first.train.images)
    monkeypatch.undo()
    with np.load(cached) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["train_images"][0, 0, 0, 0] ^= 1  # the arrays no longer hash to their SHA-256
    np.savez(cached, **arrays)
    assert load_image_folder(root, cache=tmp_path / "cache").fingerprint == first.fingerprint


def test_no_flip_is_flip_none_and_refuses_flip_tta(tmp_path, capsys):
    from fastcifar.cli import given
    from fastcifar.train import build_parser

    args = build_parser().parse_args(["--no-flip", "--crop-padding", "2", "--cutout", "0"])
    config = TrainConfig(**given(args, TrainConfig))
    assert (config.flip, config.crop_padding, config.cutout) == ("none", 2, 0)
    assert exit_code([*SETTINGS, "--no-flip", "--tta", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "a run trained without flips (--flip none) never saw: add --no-tta" in error
    with pytest.raises(fastcifar.errors.ConfigError, match=r"\(flip='none'\).*tta=False"):
        fastcifar.fit(flip="none", tta=True, out=str(tmp_path / "python"))
    with pytest.raises(fastcifar.errors.ConfigError, match="cutout must be an integer from 0"):
        TrainConfig(cutout=33)
    out = tmp_path / "no-flip"
    assert exit_code([*TWO_EPOCHS, "--no-flip", "--out", str(out)], synthetic_cifar(64, 32)) == 0
    assert json.loads((out / "config.json").read_text())["config"]["flip"] == "none"
    with pytest.raises(fastcifar.errors.ConfigError, match="trained without flips"):
        fastcifar.evaluate(out, tta=True, data=synthetic_cifar(64, 32))


def test_the_layer_table_of_a_run_has_its_classes(whole, capsys):
    from fastcifar.summary import main as summary_main

    summary_main([str(whole)])
    table = capsys.readouterr().out
    fc = next(line for line in table.splitlines() if line.startswith("FC"))
    # The ResNet-9 has 1602 w^2 + 177 w + 10 parameters (tests/test_model.py), its FC 8 w x 10 + 10.
    three_classes = 1602 * WIDTH**2 + 177 * WIDTH + 10 - (8 * WIDTH * 10 + 10) + 8 * WIDTH * 3 + 3
    assert fc.split()[1] == "3" and f"{three_classes:,}" in table
