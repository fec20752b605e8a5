"""FFCV `.beton` files for CIFAR splits: write them atomically, and check that one holds a split.

A beton stores each image raw (lossless RGB, 3,072 bytes) and its label as an int field. It is
written under a temporary name in the target folder, read back and compared with the source,
and only then renamed into place: a file at the final name is always a complete, verified one,
and an interrupted write leaves at most a hidden `.<name>.*.partial` file that nothing reads.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import torch

from fastcifar.data_source import CifarSplit
from fastcifar.loaders import MissingBackendError

# Importing FFCV sets torch's thread count to 1 (ffcv.pipeline.compiler calls
# torch.set_num_threads(1) at import time); undo that for everything else in the process.
_torch_threads = torch.get_num_threads()
try:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.reader import Reader
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, HeaderType
    from ffcv.writer import DatasetWriter
except (ImportError, OSError) as error:  # OSError: ffcv's C extension misses libturbojpeg/opencv
    raise MissingBackendError(
        f"FFCV is not importable ({error}): pip install .[ffcv] "
        "(after apt-get install libopencv-dev libturbojpeg0-dev)"
    ) from error
finally:
    torch.set_num_threads(_torch_threads)

IMAGE_SHAPE = (32, 32, 3)
RAW_MODE = 1  # ffcv.fields.rgb_image.IMAGE_MODES["raw"]
# Images compared against the source when verifying; labels are always compared in full
# because the beton's metadata holds them directly.
VERIFY_SAMPLE = 256


class BetonError(ValueError):
    """A beton that is incomplete or does not hold the expected split; the message says which."""


class _Examples:
    """The split as FFCV's writer wants it: an indexable of (HWC uint8 image, int label)."""

    def __init__(self, split: CifarSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.split.images[index], int(self.split.labels[index])


def check_split(split: CifarSplit) -> None:
    """Refuse what FFCV's writer would choke on: its worker processes die silently and the
    writer then waits forever, so bad input must fail here, before any process starts."""
    images, labels = split.images, split.labels
    if len(split) == 0:
        raise ValueError("cannot write a beton for an empty split")
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"images must be uint8 (N, 32, 32, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({len(images)},)")


def write_beton(split: CifarSplit, path: str | os.PathLike, *, workers: int = -1) -> Path:
    """Write `split` to `path` (raw RGB + int label) via a verified temporary file; shows FFCV's
    progress bar. `workers` < 1 uses every core. Returns the final path."""
    check_split(split)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _reserve_partial(path)
    try:
        fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
        DatasetWriter(str(partial), fields, num_workers=workers).from_indexed_dataset(
            _Examples(split)
        )
        verify_beton(partial, split)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())  # the rename must never land before the data does
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def ensure_beton(
    split: CifarSplit, path: str | os.PathLike, *, force: bool = False, workers: int = -1
) -> bool:
    """Write `split` to `path` unless a complete beton of it is already there (or `force`).
    Returns True when it wrote the file."""
    if not force and beton_holds(path, split):
        return False
    write_beton(split, path, workers=workers)
    return True


def beton_holds(path: str | os.PathLike, split: CifarSplit) -> bool:
    """True when `path` is a complete beton holding exactly `split`."""
    try:
        verify_beton(path, split)
    except BetonError:
        return False
    return True


def verify_beton(path: str | os.PathLike, split: CifarSplit, sample: int = VERIFY_SAMPLE) -> None:
    """Raise BetonError unless `path` is a complete beton of `split`: same count, same field
    layout, every label equal, and a fixed sample of images (first, last, random) byte-equal."""
    path = Path(path)
    header = _read_header(path)
    if header["num_samples"] != len(split):
        raise BetonError(
            f"{path} holds {header['num_samples']} examples, this split has {len(split)}: "
            "it was written for other data; delete it or rewrite it with --force"
        )
    reader = Reader(str(path))
    if len(reader.metadata) != len(split):
        raise BetonError(f"{path} is truncated: rewrite it")
    if reader.field_names != ["image", "label"]:
        raise BetonError(f"{path} has fields {reader.field_names}, expected ['image', 'label']")
    image_meta, labels = reader.metadata["f0"], reader.metadata["f1"]
    raw_32 = (
        (image_meta["mode"] == RAW_MODE)
        & (image_meta["height"] == 32)
        & (image_meta["width"] == 32)
    )
    if not raw_32.all():
        raise BetonError(f"{path} holds images that are not raw 32x32 RGB: rewrite it")
    if not np.array_equal(labels, split.labels):
        raise BetonError(f"{path} holds other labels than this split: rewrite it with --force")
    indices = _sample_indices(len(split), sample)
    stored = read_images(path, image_meta["data_ptr"][indices])
    if not np.array_equal(stored, split.images[indices]):
        raise BetonError(f"{path} holds other images than this split: rewrite it with --force")


def read_images(path: Path, pointers: np.ndarray) -> np.ndarray:
    """Raw images at the given file offsets (FFCV's `data_ptr` is an absolute offset)."""
    size = int(np.prod(IMAGE_SHAPE))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if len(pointers) and int(pointers.max()) + size > len(data):
        raise BetonError(f"{path} is truncated: rewrite it")
    return np.stack([data[p : p + size] for p in pointers.astype(np.int64)]).reshape(
        -1, *IMAGE_SHAPE
    )


def _reserve_partial(path: Path) -> Path:
    """A fresh hidden name next to `path`, created with the umask's permissions (mkstemp would
    leave the final file readable by its owner only)."""
    while True:
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return partial


def _read_header(path: Path) -> np.void:
    if not path.is_file() or path.stat().st_size < HeaderType.itemsize:
        raise BetonError(f"{path} is missing or too short to be a beton")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    # FFCV writes the allocation table last, then the header pointing at it: a zero pointer
    # means the write never finished, a table that does not end the file means truncation.
    table_bytes = path.stat().st_size - int(header["alloc_table_ptr"])
    complete = header["alloc_table_ptr"] > 0 and table_bytes % ALLOC_TABLE_TYPE.itemsize == 0
    if header["version"] != CURRENT_VERSION or not complete or table_bytes <= 0:
        raise BetonError(f"{path} is not a complete FFCV {CURRENT_VERSION} beton: rewrite it")
    return header


def _sample_indices(count: int, sample: int) -> np.ndarray:
    chosen = np.random.default_rng(0).choice(count, size=min(count, sample), replace=False)
    return np.unique(np.concatenate([[0, count - 1], chosen]))
