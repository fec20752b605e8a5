"""Builds tiny CIFAR-10 folders and archives in the official binary format, for tests."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from fastcifar.data.dataset import CifarSplit, Dataset, from_arrays
from fastcifar.data.spec import CIFAR10, DataSpec

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def real_cifar_dir() -> Path | None:
    """$FASTCIFAR_DATA, when it holds the real CIFAR-10 (cifar-10-batches-bin/)."""
    folder = os.environ.get("FASTCIFAR_DATA")
    if folder and (Path(folder) / "cifar-10-batches-bin").is_dir():
        return Path(folder)
    return None


def random_split(count: int, seed: int) -> CifarSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return CifarSplit(images, rng.integers(0, 10, count).astype(np.int64))


def encode_records(split: CifarSplit) -> bytes:
    """Official record layout: 1 label byte, then 1,024 R, 1,024 G, 1,024 B bytes."""
    chw = split.images.transpose(0, 3, 1, 2).reshape(len(split), -1)
    return np.concatenate([split.labels.astype(np.uint8)[:, None], chw], axis=1).tobytes()


def tiny_files(per_batch: int = 4, seed: int = 0) -> dict[str, bytes]:
    files = {
        name: encode_records(random_split(per_batch, seed + index))
        for index, name in enumerate(CIFAR10.train_files + CIFAR10.test_files)
    }
    files[CIFAR10.names_file] = ("\n".join(CLASS_NAMES) + "\n\n").encode()
    return files


def spec_for(files: dict[str, bytes], archive: bytes = b"", url: str = CIFAR10.url) -> DataSpec:
    """CIFAR-10's spec with these files' and this archive's digests (and `url`)."""
    digests = tuple((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
    sha = hashlib.sha256(archive).hexdigest()
    return replace(CIFAR10, url=url, archive_sha256=sha, file_sha256=digests)


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / CIFAR10.folder_name
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def make_archive(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """A .tar.gz with the files under cifar-10-batches-bin/, plus `extra` members at raw names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {f"{CIFAR10.folder_name}/{name}": data for name, data in files.items()}
        for name, data in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def synthetic_cifar(train: int = 256, test: int = 100, seed: int = 0, classes: int = 10) -> Dataset:
    """Random images whose class is readable from the mean brightness, so a model can learn it:
    data of one's own in CIFAR-10's shape (its normalisation from its own training split). The
    training split shows every class (its first images are one of each): a test class that
    training never shows is refused, as it must be."""

    def split(count: int, offset: int) -> CifarSplit:
        rng = np.random.default_rng(seed + offset)
        labels = rng.integers(0, classes, count).astype(np.int64)
        if offset == 1:
            labels[: min(classes, count)] = np.arange(min(classes, count))
        base = (labels * (250 // classes))[:, None, None, None]
        noise = rng.integers(0, 30, (count, 32, 32, 3))
        return CifarSplit((base + noise).clip(0, 255).astype(np.uint8), labels)

    first, second = split(train, 1), split(test, 2)
    names = CLASS_NAMES if classes == 10 else None
    return from_arrays(first.images, first.labels, second.images, second.labels, names)
