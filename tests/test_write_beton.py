"""The beton writer: atomic, verified, skips complete files unless forced; and its CLI."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from fastcifar.loaders import MissingBackendError
from tests.cifar_files import synthetic_cifar
from tests.loader_helpers import REQUIRE_ENV, build_loader, random_split

try:
    from fastcifar import beton
except MissingBackendError as error:
    if os.environ.get(REQUIRE_ENV):
        raise
    pytest.skip(str(error), allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("write_beton", ROOT / "data_prep/write_beton.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InterruptedWriter(beton.DatasetWriter):
    """Dies where a killed process would: after the data pages, before the header is final."""

    def finalize(self, allocations) -> None:
        raise KeyboardInterrupt


class UnfinishedWriter(beton.DatasetWriter):
    """Leaves the file as a killed process would, without anyone cleaning up."""

    def finalize(self, allocations) -> None:
        pass


def write_with(writer: type, split, path: Path) -> None:
    fields = {"image": beton.RGBImageField(write_mode="raw"), "label": beton.IntField()}
    writer(str(path), fields, num_workers=1).from_indexed_dataset(beton._Examples(split))


def test_written_beton_holds_the_split_and_nothing_else(tmp_path):
    split = random_split(300)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=1)
    beton.verify_beton(path, split, sample=len(split))  # every image, not just a sample
    assert [p.name for p in tmp_path.iterdir()] == ["split.beton"]
    other = random_split(300, seed=1)
    with pytest.raises(beton.BetonError, match="other"):
        beton.verify_beton(path, other)
    with pytest.raises(beton.BetonError, match="holds 300 examples"):
        beton.verify_beton(path, random_split(299))


def test_verification_catches_a_single_changed_image(tmp_path):
    split = random_split(300)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=1)
    changed = split.images.copy()
    changed[-1, 5, 5, 0] ^= 1  # the last image is always in the verified sample
    with pytest.raises(beton.BetonError, match="other images"):
        beton.verify_beton(path, type(split)(changed, split.labels))


def test_an_interrupted_write_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(beton, "DatasetWriter", InterruptedWriter)
    with pytest.raises(KeyboardInterrupt):
        beton.write_beton(random_split(100), tmp_path / "split.beton", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_rewrite_keeps_the_complete_file(tmp_path, monkeypatch):
    split = random_split(100)
    path = beton.write_beton(split, tmp_path / "split.beton", workers=1)
    monkeypatch.setattr(beton, "DatasetWriter", InterruptedWriter)
    with pytest.raises(KeyboardInterrupt):
        beton.ensure_beton(random_split(100, seed=2), path, force=True, workers=1)
    assert beton.beton_holds(path, split)
    assert [p.name for p in tmp_path.iterdir()] == ["split.beton"]


def test_a_file_left_by_a_killed_write_never_passes_as_complete(tmp_path):
    split = random_split(100)
    path = tmp_path / "split.beton"
    write_with(UnfinishedWriter, split, path)
    assert path.stat().st_size > 100 * 3072  # the data is there, only the header is missing
    assert not beton.beton_holds(path, split)
    complete = beton.write_beton(split, tmp_path / "complete.beton", workers=1)
    truncated = tmp_path / "truncated.beton"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    assert not beton.beton_holds(truncated, split)


def test_ensure_beton_skips_a_complete_file_unless_forced(tmp_path):
    split = random_split(100)
    path = tmp_path / "split.beton"
    assert beton.ensure_beton(split, path, workers=1)
    first = path.stat().st_ino
    assert not beton.ensure_beton(split, path, workers=1)
    assert path.stat().st_ino == first
    assert beton.ensure_beton(split, path, force=True, workers=1)
    assert path.stat().st_ino != first and beton.beton_holds(path, split)


def test_ensure_beton_rewrites_a_file_that_holds_other_data(tmp_path):
    path = tmp_path / "split.beton"
    beton.write_beton(random_split(100, seed=3), path, workers=1)
    split = random_split(100)
    assert beton.ensure_beton(split, path, workers=1)
    assert beton.beton_holds(path, split)


def test_bad_input_fails_before_ffcv_starts_its_workers(tmp_path):
    split = random_split(10)
    with pytest.raises(ValueError, match="uint8"):
        beton.write_beton(type(split)(split.images.astype(np.int16), split.labels), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_both_splits_then_keeps_them_then_force_rewrites(tmp_path, monkeypatch, capsys):
    script = load_script()
    data = synthetic_cifar(train=300, test=100)
    monkeypatch.setattr(script, "load_cifar10", lambda data_dir: data)
    out = tmp_path / "out"
    script.main(["--out-dir", str(out)])
    train, test = out / "cifar10_train.beton", out / "cifar10_test.beton"
    assert beton.beton_holds(train, data.train) and beton.beton_holds(test, data.test)
    assert capsys.readouterr().out.count("wrote") == 2
    inodes = train.stat().st_ino, test.stat().st_ino
    script.main(["--out-dir", str(out)])
    assert capsys.readouterr().out.count("kept") == 2
    assert (train.stat().st_ino, test.stat().st_ino) == inodes
    script.main(["--out-dir", str(out), "--force"])
    assert capsys.readouterr().out.count("wrote") == 2
    assert train.stat().st_ino != inodes[0] and beton.beton_holds(train, data.train)


def test_ffcv_loader_writes_a_missing_beton_path_and_refuses_a_wrong_one(tmp_path):
    split = random_split(200)
    path = tmp_path / "split.beton"
    build_loader("ffcv", split, batch_size=50, beton_path=path)
    assert beton.beton_holds(path, split)
    with pytest.raises(beton.BetonError, match="other"):
        build_loader("ffcv", random_split(200, seed=1), batch_size=50, beton_path=path)
