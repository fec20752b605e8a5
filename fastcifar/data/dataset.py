"""What a run trains on: two CIFAR-shaped splits (uint8 32x32 RGB images, integer labels), the
class names and the normalisation statistics. CIFAR-10 comes from `data.source`; a data set of
one's own comes from arrays or tensors (`as_dataset`), with any number of classes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastcifar.data.normalisation import CIFAR10, Normalisation
from fastcifar.errors import ConfigError, DataError
from fastcifar.system.caller import named

IMAGE_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class CifarSplit:
    """One split: uint8 images (N, 32, 32, 3) in HWC order and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int | None, name: str = "subset") -> CifarSplit:
        """The first `count` examples (all of them when `count` is None); more than the split
        holds is a one-line error naming the setting (`name`)."""
        if count is None:
            return self
        if count > len(self):
            raise ConfigError(f"{name} ({count:,}) exceeds the {len(self):,} images of the split")
        return CifarSplit(self.images[:count], self.labels[:count])


@dataclass(frozen=True)
class Dataset:
    train: CifarSplit
    test: CifarSplit
    class_names: tuple[str, ...]
    normalisation: Normalisation = CIFAR10
    folder: Path | None = None  # the folder of a data set's files it was read from
    fingerprint: str = field(default="", compare=False)  # SHA-256 of arrays or image folders
    source: str | None = None  # the data set (data/spec.py) it was read as; None: arrays

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subsets(self, train: int | None, test: int | None) -> Dataset:
        """The first `train` and `test` images (None: all), named as the settings are."""
        return replace(
            self,
            train=self.train.subset(train, named("train_subset")),
            test=self.test.subset(test, named("test_subset")),
        )

    def describe(self) -> dict[str, Any]:
        """What config.json records of the data: enough to refuse a resume on other data."""
        source = (
            {"source": self.source, "folder": str(self.folder)}
            if self.source is not None
            else {"source": "arrays"}
        )
        if self.fingerprint:  # arrays, or a folder of images: no checked archive behind them
            source["sha256"] = self.fingerprint
        return {
            **source,
            "train_images": len(self.train),
            "test_images": len(self.test),
            "class_names": list(self.class_names),
            "normalisation": self.normalisation.to_dict(),
        }


def as_dataset(data: Any) -> Dataset:
    """A Dataset from what a user has at hand:
      * a Dataset (as is);
      * (train_images, train_labels, test_images, test_labels), or ((x, y), (x, y));
      * a dict with "train" and "test" (each (images, labels)) and optionally "class_names".
    Images are (N, 32, 32, 3) or (N, 3, 32, 32), uint8 or floats in [0, 1], as NumPy arrays or
    torch tensors; labels are integers 0..K-1. Normalisation comes from the training split."""
    if isinstance(data, Dataset):
        return data
    names: Sequence[str] | None = None
    if isinstance(data, dict):
        unknown = set(data) - {"train", "test", "class_names"}
        if unknown or not {"train", "test"} <= set(data):
            raise DataError("data as a dict needs 'train' and 'test' (and may have 'class_names')")
        (train_x, train_y), (test_x, test_y), names = (
            data["train"],
            data["test"],
            data.get("class_names"),
        )
    elif isinstance(data, tuple | list) and len(data) == 4:
        train_x, train_y, test_x, test_y = data
    elif isinstance(data, tuple | list) and len(data) == 2:
        (train_x, train_y), (test_x, test_y) = data
    else:
        raise DataError(
            "data must be a fastcifar Dataset, (train_images, train_labels, test_images, "
            "test_labels), ((x, y), (x, y)) or a dict with 'train' and 'test'"
        )
    return from_arrays(train_x, train_y, test_x, test_y, class_names=names)


def from_arrays(
    train_images: Any,
    train_labels: Any,
    test_images: Any,
    test_labels: Any,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """A Dataset of one's own; see `as_dataset` for the forms it takes."""
    train = split_from_arrays(train_images, train_labels, "train")
    test = split_from_arrays(test_images, test_labels, "test")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    _check_classes(train, test, classes)
    if class_names is None:
        class_names = [str(index) for index in range(classes)]
    elif isinstance(class_names, str | bytes | set | frozenset) or not hasattr(
        class_names, "__iter__"
    ):  # a set's order changes from one process to the next: names need one
        raise DataError(f"class_names must be a list of names, got {class_names!r}"[:200])
    else:
        class_names = list(class_names)  # a tuple, a NumPy array, dict keys: names in order
    if len(class_names) != classes:  # more names than labels: classes never trained
        raise DataError(
            f"labels go up to {classes - 1} but {len(class_names)} class name(s) were given: "
            "one name per class"
        )
    class_names = tuple(str(name) for name in class_names)
    twice = sorted(name for name, count in Counter(class_names).items() if count > 1)
    if twice:  # predict could not tell those classes apart
        raise DataError(f"class_names names {', '.join(map(repr, twice))} more than once")
    return Dataset(
        train,
        test,
        class_names,
        Normalisation.of_images(train.images),
        folder=None,
        fingerprint=fingerprint_of(train, test),
    )


def _check_classes(train: CifarSplit, test: CifarSplit, classes: int) -> None:
    """A classifier's data: two classes at least, and none that only the test split has."""
    if len(np.unique(train.labels)) < 2:
        raise DataError(
            f"every training label is {int(train.labels[0])}: one class leaves nothing to "
            "classify (at least 2 classes)"
        )
    unseen = np.setdiff1d(np.unique(test.labels), np.unique(train.labels))
    if len(unseen):
        shown = ", ".join(str(int(label)) for label in unseen[:5])
        more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
        raise DataError(
            f"test label(s) {shown}{more} never occur in the training split: a model cannot "
            "learn a class it is never shown"
        )
    _check_every_class_trained(np.unique(train.labels), classes)


def _check_every_class_trained(present: np.ndarray, classes: int) -> None:
    """Labels 0..K-1, each with training images: a label of 10**6 among 0 and 1 would build a
    classifier of a million classes, labels counted from 1 one of a class never shown."""
    if len(present) == classes:
        return
    # The smallest labels missing lie below len(present) + 5: no need to list 0..K-1.
    absent = np.setdiff1d(np.arange(min(classes, len(present) + 5)), present)[:5]
    shown = ", ".join(str(int(label)) for label in absent)
    hint = " (labels counted from 1? subtract 1)" if present[0] == 1 else ""
    lacking = classes - len(present)
    have = "class has" if lacking == 1 else "classes have"
    raise DataError(
        f"labels go up to {classes - 1}, so there are {classes:,} classes, and {lacking:,} "
        f"{have} no training image ({shown}{', ...' if lacking > len(absent) else ''}): labels "
        f"must be 0 to K-1, each with training images{hint}"
    )


def split_from_arrays(images: Any, labels: Any, name: str = "train") -> CifarSplit:
    """One split from images and labels in the forms `as_dataset` takes."""
    split = CifarSplit(_images(images, f"{name} images"), _labels(labels, name))
    if len(split.images) != len(split.labels):
        raise DataError(f"{name}: {len(split.images):,} images but {len(split.labels):,} labels")
    if len(split) == 0:
        raise DataError(f"{name}: the split is empty")
    return split


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, anywhere
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def batch_of_images(values: Any) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images from a batch in the forms `as_dataset` takes, or from one
    image, (32, 32, 3) or (3, 32, 32), given without its batch axis."""
    images = _as_numpy(values)
    if images.shape in (IMAGE_SHAPE, (3, 32, 32)):
        images = images[None]
    return _images(images, "images", " (or one image, (32, 32, 3))")


def _images(values: Any, what: str, also: str = "") -> np.ndarray:
    images = _as_numpy(values)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[3] != 3:
        images = images.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{what} must be (N, 32, 32, 3) or (N, 3, 32, 32){also}, got {tuple(images.shape)}"
        )
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise DataError(f"{what} of floats must lie in [0, 1]")
        return np.ascontiguousarray(np.round(images * 255).astype(np.uint8))
    raise DataError(f"{what} must be uint8 or floats in [0, 1], got {images.dtype}")


def _labels(values: Any, name: str) -> np.ndarray:
    labels = _as_numpy(values)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{name} labels must be a 1-D array of integers, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{name} labels must be 0 or more, got {int(labels.min())}")
    return labels.astype(np.int64)


def fingerprint_of(train: CifarSplit, test: CifarSplit) -> str:
    """SHA-256 of both splits' images and labels: what a run records of data it did not read
    from a checked archive."""
    digest = hashlib.sha256()
    for array in (train.images, train.labels, test.images, test.labels):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
