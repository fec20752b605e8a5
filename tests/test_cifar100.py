"""--dataset cifar100: the second data set of the spec, downloaded, checksummed and parsed like
CIFAR-10 (its fine labels), from a tiny archive in the official CIFAR-100 binary format served
here (there is no internet in CI), then trained end to end with 100 outputs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch

import fastcifar
from fastcifar.data.source import load_source
from fastcifar.data.spec import CIFAR100, SPECS
from fastcifar.errors import DataSourceError
from tests.runs import WIDTH

FINE = tuple(f"fine{i:02d}" for i in range(100))
COARSE = tuple(f"coarse{i:02d}" for i in range(20))


def records(count: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Official layout: coarse label byte, fine label byte, 1,024 R, G and B bytes."""
    rng = np.random.default_rng(seed)
    fine = np.arange(count) % 100  # every class in every split
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    chw = images.transpose(0, 3, 1, 2).reshape(count, -1)
    labels = np.stack([fine // 5, fine], axis=1).astype(np.uint8)
    return np.concatenate([labels, chw], axis=1).tobytes(), fine, images


def archive_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-100-binary/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def served_cifar100(http_server, monkeypatch):
    """A 200 + 100 image CIFAR-100 archive on the local server; the spec pointed at it."""
    served, base = http_server
    train, train_fine, train_images = records(200, 1)
    test, test_fine, _ = records(100, 2)
    files = {"train.bin": train, "test.bin": test,
             "fine_label_names.txt": ("\n".join(FINE) + "\n").encode(),
             "coarse_label_names.txt": ("\n".join(COARSE) + "\n").encode()}  # fmt: skip
    archive = archive_of(files)
    (served / CIFAR100.archive_name).write_bytes(archive)
    spec = replace(CIFAR100, url=f"{base}/{CIFAR100.archive_name}", train_images=200,
                   test_images=100, archive_sha256=hashlib.sha256(archive).hexdigest())  # fmt: skip
    monkeypatch.setitem(SPECS, "cifar100", spec)
    return spec, train_fine, test_fine, train_images


def test_the_archive_is_downloaded_checked_and_parsed_with_its_fine_labels(
    served_cifar100, tmp_path
):
    spec, train_fine, test_fine, train_images = served_cifar100
    data = load_source(spec, tmp_path / "data")
    assert data.class_names == FINE and data.num_classes == 100 and data.source == "cifar100"
    np.testing.assert_array_equal(data.train.labels, train_fine)  # the fine label, not coarse
    np.testing.assert_array_equal(data.test.labels, test_fine)
    np.testing.assert_array_equal(data.train.images, train_images)
    mean = train_images.reshape(-1, 3).mean(0)  # statistics of its own training split
    np.testing.assert_allclose(data.normalisation.mean, mean, atol=1e-3)
    assert (tmp_path / "data" / "cifar-100-binary" / "train.bin").is_file()


def test_a_wrong_archive_or_a_cut_file_is_refused(served_cifar100, tmp_path):
    spec = served_cifar100[0]
    with pytest.raises(DataSourceError, match="checksum mismatch for the download"):
        load_source(replace(spec, archive_sha256="0" * 64), tmp_path / "a")
    load_source(spec, tmp_path / "b")
    train = tmp_path / "b" / "cifar-100-binary" / "train.bin"
    train.write_bytes(train.read_bytes()[: -spec.record_bytes])  # one record short
    cut = r"train\.bin is truncated or padded \(611,726 bytes; 200 records of 3074 bytes make "
    with pytest.raises(DataSourceError, match=cut):
        load_source(spec, tmp_path / "b")


def test_fit_on_cifar100_trains_a_100_class_model_and_evaluates_it(served_cifar100, tmp_path):
    result = fastcifar.fit(dataset="cifar100", data_dir=str(tmp_path / "data"), epochs=1,
                           batch_size=32, lr_max=0.05, device="cpu", plots=False, width=WIDTH,
                           out=str(tmp_path / "run"))  # fmt: skip
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["dataset"] == "cifar100" and record["data"]["source"] == "cifar100"
    assert result.summary.class_names == list(FINE)
    weights = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert weights["fc.weight"].shape == (100, 8 * WIDTH)
    report = fastcifar.evaluate(tmp_path / "run", device="cpu")  # finds the same data set
    assert report.test_examples == 100 and report.plain.confusion.shape == (100, 100)
