"""A data set of one's own image files in torchvision's `ImageFolder` layout (`--dataset folder
--data-dir PATH`, `fit(data="PATH")`):

    PATH/train/<class>/<image>   PATH/test/<class>/<image>

Class names are the names of train/'s subfolders, sorted; test/ may lack a class but not add
one. Images are read by the reader `predict` uses (8-bit RGB; 16-bit, grayscale, palette and
transparent images converted) and must be 32x32: a training set is not resized behind its
owner's back, so an image of another size is refused, naming the file. Files whose suffix is
not an image's (README.txt, .DS_Store) are passed over; a file with an image's suffix that does
not decode is refused, naming it.

The decoded arrays are cached (fastcifar's cache folder, keyed by the files' names, sizes and
modification times), with their SHA-256 inside: a second run reads the cache instead of
decoding, and a cache whose arrays no longer hash to its SHA-256 is decoded afresh. The SHA-256
is what a run records of the data (config.json) and what a resume checks.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np

from fastcifar.data.dataset import CifarSplit, Dataset, fingerprint_of
from fastcifar.data.images import IMAGE_SUFFIXES, read_image
from fastcifar.data.normalisation import Normalisation
from fastcifar.data.source import cache_dir
from fastcifar.errors import DataSourceError, ImageInputError
from fastcifar.system.progress import say

SOURCE = "folder"
SPLITS = ("train", "test")


def load_image_folder(root: str | os.PathLike, cache: Path | None = None) -> Dataset:
    """The data set in `root` (the layout above), from the cache folder `cache` when it holds
    this listing's arrays (default: fastcifar's cache), else decoded and cached there."""
    folder = Path(root).expanduser()
    listing = {split: _split_files(folder, split) for split in SPLITS}
    class_names = tuple(sorted(listing["train"]))
    _check_classes(folder, class_names, listing)
    cache_file = (cache or cache_dir() / "folders") / f"{_listing_key(folder, listing)}.npz"
    arrays = _read_cache(cache_file)
    if arrays is None:
        count = sum(len(files) for split in listing.values() for files in split.values())
        say(f"reading {count:,} images of {len(class_names)} classes from {folder} (decoded "
            "once: the next run reads them from the cache)")  # fmt: skip
        arrays = _decode(folder, class_names, listing)
        _write_cache(cache_file, arrays)
    train = CifarSplit(arrays["train_images"], arrays["train_labels"])
    return Dataset(
        train=train,
        test=CifarSplit(arrays["test_images"], arrays["test_labels"]),
        class_names=class_names,
        normalisation=Normalisation.of_images(train.images),
        folder=folder.resolve(),
        fingerprint=str(arrays["sha256"]),
        source=SOURCE,
    )


def _split_files(folder: Path, split: str) -> dict[str, list[Path]]:
    """{class name: its image files, sorted} of one split."""
    where = folder / split
    if not where.is_dir():
        raise DataSourceError(
            f"{where} is not a folder: a data set of image files is a folder holding "
            "train/<class>/ and test/<class>/ folders of 32x32 images"
        )
    classes = {}
    for entry in sorted(where.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            classes[entry.name] = sorted(
                path for path in entry.iterdir()
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            )  # fmt: skip
    empty = [name for name, files in classes.items() if not files]
    if not classes or empty:
        what = f"{where / empty[0]} holds no image files" if empty else f"{where} holds no classes"
        raise DataSourceError(f"{what} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes


def _check_classes(
    folder: Path, class_names: tuple[str, ...], listing: dict[str, dict[str, list[Path]]]
) -> None:
    if len(class_names) < 2:
        raise DataSourceError(
            f"{folder / 'train'} holds one class folder ({class_names[0]}): a classifier needs "
            "at least 2"
        )
    unknown = sorted(set(listing["test"]) - set(class_names))
    if unknown:
        raise DataSourceError(
            f"{folder / 'test' / unknown[0]} is a class that train/ does not have: a model cannot "
            "learn a class it is never shown"
        )


# How files become pixels; a change of it (v2: photos turned upright by their EXIF orientation)
# makes every cached decode stale.
DECODER = "v2-exif-upright"


def _listing_key(folder: Path, listing: dict[str, dict[str, list[Path]]]) -> str:
    """What the decoded arrays depend on: the decoder, and every file's place, size and
    modification time."""
    digest = hashlib.sha256(f"{DECODER}\0{folder.resolve()}".encode())
    for split in SPLITS:
        for name, files in listing[split].items():
            for path in files:
                stat = path.stat()
                digest.update(
                    f"{split}/{name}/{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
    return digest.hexdigest()[:24]


def _decode(
    folder: Path, class_names: tuple[str, ...], listing: dict[str, dict[str, list[Path]]]
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        images, labels = [], []
        for label, name in enumerate(class_names):
            for path in listing[split].get(name, []):
                images.append(_read_32x32(path))
                labels.append(label)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    arrays["sha256"] = np.asarray(_fingerprint(arrays))
    return arrays


def _read_32x32(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
    except Exception:  # Pillow raises many kinds: read_image below words them
        size = None
    if size is not None and size != (32, 32):
        raise ImageInputError(
            f"{path} is {size[0]}x{size[1]}: a folder data set's images must be 32x32 (resize "
            "them first; fastcifar does not resize training images)"
        )
    return read_image(path)  # refuses, naming the file, what does not decode


def _fingerprint(arrays: dict[str, np.ndarray]) -> str:
    return fingerprint_of(
        CifarSplit(arrays["train_images"], arrays["train_labels"]),
        CifarSplit(arrays["test_images"], arrays["test_labels"]),
    )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, if the file is whole and its arrays still hash to its SHA-256."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError):
        return None
    names = {f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")} | {"sha256"}
    if set(arrays) != names or _fingerprint(arrays) != str(arrays["sha256"]):
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written under a name of its own, then renamed: a cache file is whole or absent. A cache
    that cannot be written (read-only, full) costs the next run a decode, nothing more."""
    partial = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, **arrays)
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)
