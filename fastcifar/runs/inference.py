"""What a trained run answers, as typed results: its evaluation on a test split
(`fastcifar.evaluate`; `python -m fastcifar.evaluate` prints it) and the top classes of images
(`fastcifar.predict`; `python -m fastcifar.predict` prints them)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcifar.data.dataset import Dataset, batch_of_images
from fastcifar.data.images import RESIZE_MODES, image_paths, read_image
from fastcifar.engine.evaluation import Scores, evaluate_split
from fastcifar.engine.model import ModelChoice
from fastcifar.errors import ConfigError, ImageInputError
from fastcifar.outputs.plots import confusion_matrix
from fastcifar.records.summary import tta_name
from fastcifar.records.values import is_integer, plain
from fastcifar.runs.saved_run import SavedRun, load_saved_run, test_split_of
from fastcifar.system.caller import named
from fastcifar.system.device import pick_device
from fastcifar.system.progress import progress, say

BATCH = 256  # images per forward pass of predict
# Below this recorded accuracy a model is a smoke run, and its confident answers mean little.
TRUSTWORTHY_ACCURACY = 0.5


@dataclass(frozen=True)
class ClassReport:
    """One way of evaluating (plain or flip TTA): accuracy (a fraction in [0, 1]), loss, and
    the confusion matrix (rows: true class, columns: predicted)."""

    accuracy: float
    loss: float
    confusion: np.ndarray
    class_names: tuple[str, ...]

    @classmethod
    def of(cls, scores: Scores, labels: torch.Tensor, names: tuple[str, ...]) -> ClassReport:
        matrix = confusion_matrix(labels.numpy(), scores.predictions.numpy(), len(names))
        return cls(scores.accuracy, scores.loss, matrix, names)

    @property
    def per_class(self) -> dict[str, float | None]:
        """Each class's accuracy; None for a class without test images (not 0%)."""
        shown = self.confusion.sum(1)
        correct = np.diag(self.confusion) / np.maximum(shown, 1)
        return {
            name: (value if count else None)
            for name, value, count in zip(self.class_names, correct.tolist(), shown, strict=True)
        }


@dataclass(frozen=True)
class RunEvaluation:
    """What `evaluate` returns; `to_dict()` is evaluation.json."""

    run: Path
    which: str  # the test images, in words
    test_examples: int
    plain: ClassReport
    tta: ClassReport | None
    note: str | None  # why the figure may differ from the run's own (its precision)
    tta_kind: str | None = None  # "flip TTA" or "flip + translate TTA" (tta_name); None without
    other_images: bool = False  # not the images the run was trained on (another SHA-256)

    @property
    def accuracy(self) -> float:
        return self.plain.accuracy

    @property
    def tta_accuracy(self) -> float | None:
        return self.tta.accuracy if self.tta else None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "run": str(self.run),
            "test_examples": self.test_examples,
            "other_images": self.other_images,
            "tta": self.tta_kind,
            "note": self.note,
        }
        for key, scores in (("", self.plain), ("_tta", self.tta)):
            if scores is not None:
                report |= {
                    f"test_accuracy{key}": scores.accuracy,
                    f"test_loss{key}": scores.loss,
                    f"per_class_accuracy{key}": scores.per_class,
                    f"confusion_matrix{key}": scores.confusion.tolist(),
                }
        return report


def evaluate(
    run: str | Path | SavedRun,
    *,
    tta: bool = False,
    test_subset: int | str | None = None,
    batch_size: int = 1000,
    device: str | None = None,
    data: Dataset | Any = None,
    data_dir: str | None = None,
    model: ModelChoice = None,
    allow_incomplete: bool = False,
    tta_translate: bool = False,
) -> RunEvaluation:
    """A trained run on a test split, in fp32: the images the run was evaluated on unless
    `test_subset` says N or "all"; `data` (and `model`) again for a run trained on data (or a
    model) of one's own."""
    check_switches(tta=tta, tta_translate=tta_translate, allow_incomplete=allow_incomplete)
    if tta_translate and not tta:
        raise ConfigError(
            f"{named('tta_translate')} adds shifted copies to the flip TTA: it needs "
            f"{named('tta')} too"
        )
    _check_count("batch_size", batch_size)
    test_subset = checked_test_options(test_subset, data_dir)
    saved = _saved(run, device, model, allow_incomplete)
    if tta and saved.config.flip == "none":
        raise ConfigError(
            f"{saved.folder} trained without flips (flip none): flip TTA would average its test "
            f"images with mirror images it never saw; evaluate without {named('tta')}"
        )
    images = test_split_of(saved, data_dir, test_subset, data)
    test, which = images.split, images.which
    on = next(saved.model.parameters()).device
    say(f"evaluating {which} on {on} (fp32)")
    result = evaluate_split(
        saved.model, test, on, batch_size, tta, saved.normalisation, tta_translate
    )
    names = tuple(saved.class_names)
    return RunEvaluation(
        saved.folder.resolve(),
        which,
        len(test),
        ClassReport.of(result.plain, result.labels, names),
        ClassReport.of(result.tta, result.labels, names) if result.tta else None,
        _precision_note(saved),
        tta_name(tta_translate) if tta else None,
        images.other,
    )


def _precision_note(saved: SavedRun) -> str | None:
    trained = saved.summary.precision
    if trained in (None, "fp32"):
        return None
    own = saved.summary.final_test_accuracy
    figure = f" ({100 * own:.2f}%)" if own is not None else ""
    return (
        f"evaluated in fp32; the run trained and evaluated itself in {trained}, so its own "
        f"figure{figure} may differ by an image or two"
    )


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, the most probable first (probabilities in [0, 1])."""

    image: str  # its path, or its index in the batch given
    top: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        return self.top[0][0]


@dataclass(frozen=True)
class Predictions:
    """What `predict` returns: a prediction per readable image, a line per unreadable file,
    and a warning when the run is too weak to trust."""

    run: Path
    predictions: list[Prediction]
    errors: list[str]
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {"image": p.image, "top": [{"class": c, "probability": v} for c, v in p.top]}
            for p in self.predictions
        ]
        return {"run": str(self.run), "warning": self.warning, "predictions": rows,
                "errors": self.errors}  # fmt: skip


def predict(
    run: str | Path | SavedRun,
    images: Any,
    *,
    top: int = 3,
    resize: str = "squash",
    device: str | None = None,
    model: ModelChoice = None,
    allow_incomplete: bool = False,
) -> Predictions:
    """The `top` classes of each image: `images` image files or folders (a path or a list of
    them; unreadable files are listed in `.errors`, the others predicted), or an array of
    images (N, 32, 32, 3) or one image, as `SavedRun.predict_proba` takes them."""
    check_switches(allow_incomplete=allow_incomplete)
    _check_count("top", top)
    if resize not in RESIZE_MODES:
        modes = ", ".join(RESIZE_MODES)
        raise ConfigError(f"{named('resize')} must be one of {modes}, got {resize!r}")
    names, pixels, errors = _read(images, resize)
    saved = _saved(run, device, model, allow_incomplete)
    count = min(top, len(saved.class_names))
    predictions: list[Prediction] = []
    starts = range(0, len(pixels), BATCH)
    for start in progress(starts, "predict", unit="batch", nested=True, total=len(starts)):
        probabilities = saved.predict_proba(pixels[start : start + BATCH])
        for name, row in zip(names[start : start + BATCH], probabilities, strict=True):
            values, indices = row.topk(count)
            ranked = tuple((saved.class_names[i], float(p)) for p, i in zip(values, indices,
                                                                          strict=True))  # fmt: skip
            predictions.append(Prediction(name, ranked))
    warning = _untrustworthy(saved.summary.final_test_accuracy, saved.folder)
    return Predictions(saved.folder.resolve(), predictions, errors, warning)


def checked_test_options(test_subset: Any, data_dir: Any) -> int | str | None:
    """evaluate's and export's test images, checked as their flags are: a count or "all" (in
    any case, as the flag takes it), and a folder's path."""
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise ConfigError(f"{named('data_dir')} must be a folder's path, got {data_dir!r}")
    test_subset = plain(test_subset)
    if isinstance(test_subset, str) and test_subset.lower() == "all":
        return "all"
    if test_subset is not None:
        _check_count("test_subset", test_subset, "or 'all'")
    return test_subset


def check_switches(**switches: Any) -> None:
    """The on/off settings of evaluate and predict, true or false as their flags are."""
    for name, value in switches.items():
        if not isinstance(plain(value), bool):  # NumPy's bool_ is one too
            raise ConfigError(f"{named(name)} must be True or False, got {value!r}")


def _check_count(name: str, value: Any, also: str = "") -> None:
    """A count of evaluate or predict, a positive integer as its flag takes it."""
    if not is_integer(plain(value)) or value < 1:
        raise ConfigError(f"{named(name)} must be a positive integer{f' {also}' if also else ''}, "
                          f"got {value!r}")  # fmt: skip


def _read(images: Any, resize: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, uint8 images, unreadable files) of what `predict` was given; every file is
    tried before any model work, and none readable is one error."""
    if not _are_paths(images):
        pixels = batch_of_images(images)
        return [str(i) for i in range(len(pixels))], pixels, []
    paths = image_paths([images] if isinstance(images, str | Path) else list(images))
    read, names, errors = [], [], []
    for path in paths:
        try:
            read.append(read_image(path, resize))
            names.append(str(path))
        except ImageInputError as error:
            errors.append(str(error))
    if not read:
        more = f" (and {len(errors) - 1} more unreadable)" if len(errors) > 1 else ""
        raise ImageInputError(errors[0] + more)
    return names, np.stack(read), errors


def _are_paths(images: Any) -> bool:
    if isinstance(images, str | Path):
        return True
    if not isinstance(images, Sequence) or not images:
        return False
    paths = [isinstance(item, str | Path) for item in images]
    if any(paths) and not all(paths):
        raise ImageInputError(
            "images is a list of file or folder paths, or of images (arrays): not both; "
            "predict them in two calls"
        )
    return all(paths)


def _saved(
    run: str | Path | SavedRun, device: str | None, model: ModelChoice, allow_incomplete: bool
) -> SavedRun:
    if isinstance(run, SavedRun):
        return run
    return load_saved_run(run, pick_device(device), model=model, allow_incomplete=allow_incomplete)


def _untrustworthy(accuracy: float | None, folder: Path) -> str | None:
    if accuracy is None or accuracy >= TRUSTWORTHY_ACCURACY:
        return None
    return (
        f"{folder} reached only {100 * accuracy:.1f}% test accuracy (a smoke run?): its "
        "probabilities say little"
    )
