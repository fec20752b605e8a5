"""Reading a trained run back: its model, config and summary, each checked, each failure one
line that names the file. Weights are loaded with `weights_only=True`: a file that tries to
run code is refused, never executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastcifar.data.normalisation import CIFAR10, Normalisation, to_batch
from fastcifar.engine.model import ModelChoice, build_model, load_weights, model_factory
from fastcifar.errors import CheckpointError, ConfigError, DataError, RunFolderError
from fastcifar.records.checkpoint import load_weights_file
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_record import ConfigRecord, RunKind, Status, read_config
from fastcifar.records.run_folder import CHECKPOINT, RunFolder, resume_command
from fastcifar.records.summary import Summary, read_summary
from fastcifar.system.caller import in_python, named, setting, switch


@dataclass(frozen=True)
class SavedRun:
    """A run folder read back: the model (eval mode), its config and summary, checked."""

    folder: Path
    model: nn.Module
    config: TrainConfig
    summary: Summary
    record: ConfigRecord | None
    class_names: tuple[str, ...]
    normalisation: Normalisation

    def predict_proba(self, images: Any) -> torch.Tensor:
        """Class probabilities, (N, classes), of uint8 (N, 32, 32, 3) images (or the forms
        as_dataset takes), or of one image without its batch axis (then N = 1)."""
        from fastcifar.data.dataset import batch_of_images

        pixels = batch_of_images(images)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(to_batch(pixels, device, self.normalisation))
        return torch.softmax(logits.float(), dim=1).cpu()


def _what_to_do(folder: Path, status: Status) -> str:
    """The ways on from an unfinished run: a diverged one is not resumed (it would diverge
    again), and only weights it holds can be read as they are."""
    ways = [] if status == Status.DIVERGED else [f"resume it with {resume_command(folder)}"]
    if any((folder / name).is_file() for name in ("model.pt", CHECKPOINT)):
        ways.append(f"pass {switch('allow_incomplete')}")
    if not ways:
        return "it cannot be resumed (it would diverge again): train again with a lower LRMAX"
    return ", or ".join(ways)


def load_saved_run(
    folder: str | os.PathLike,
    device: torch.device,
    *,
    model: ModelChoice = None,
    allow_incomplete: bool = False,
) -> SavedRun:
    """The trained model (in eval mode) of a complete run (or, when asked, of an unfinished
    one: then the weights of its last checkpoint), with its records."""
    if not isinstance(folder, str | os.PathLike):
        raise ConfigError(f"a run is named by its folder's path, got {folder!r}")
    folder = Path(folder)
    summary = read_summary(folder)
    if summary.kind == RunKind.MULTI:
        raise RunFolderError(
            f"{folder} holds several runs (seeds or an LR sweep): pass one of its run folders"
        )
    if summary.kind != RunKind.RUN:
        raise RunFolderError(f"{folder} holds an LR range test, not a trained model")
    if summary.status != Status.COMPLETE and not allow_incomplete:
        # The reason a stop recorded ends with its own resume hint: said once, below.
        reason = (summary.reason or "").split(": resume with ")[0]
        raise RunFolderError(
            f"{folder} is not a complete run (status: {summary.status.value}"
            f"{': ' + reason if reason else ''}); {_what_to_do(folder, summary.status)}"
        )
    if not (folder / "config.json").is_file():  # its data's statistics and class names are there
        raise RunFolderError(
            f"{folder / 'config.json'} is missing or not a file: the run's record is incomplete; "
            "restore it from a copy of the run"
        )
    record = read_config(folder)
    config = summary.config_of_run
    names = tuple(summary.class_names or ())
    if len(names) < 2:
        raise RunFolderError(f"{folder / 'summary.json'}: class_names must list the classes")
    if record is not None and record.custom_model and model is None:
        raise ConfigError(
            f"{folder} trained a model of one's own ({record.model}): load it from Python with "
            "fastcifar.load_run(folder, model=...)"
        )
    factory = model_factory(model, len(names), config.logit_scale, config.model, config.width)
    network = build_model(device, config.logit_scale, config.channels_last, factory=factory)
    state, source = _weights(folder)
    misfit = load_weights(network, state)
    if misfit is not None:
        raise CheckpointError(
            f"{source} does not fit the {record.model if record else 'ResNet9'} ({misfit})"
        )
    _check_finite(network, source)
    normalisation = CIFAR10
    if record is not None and record.data:
        try:
            normalisation = Normalisation.from_dict(record.data["normalisation"])
        except ValueError as error:  # config_record checked its shape, not its values
            raise RunFolderError(f"{folder / 'config.json'}: data.normalisation {error}") from None
    return SavedRun(folder, network.eval(), config, summary, record, names, normalisation)


def _weights(folder: Path) -> tuple[dict[str, Any], Path]:
    path = folder / "model.pt"
    if path.exists():
        state = load_weights_file(path, "model weights")
        if not isinstance(state, dict) or not all(
            isinstance(t, torch.Tensor) for t in state.values()
        ):
            raise CheckpointError(f"{path} does not hold a state dict")
        return state, path
    run = RunFolder(folder, writes=False)
    checkpoint = run.checkpoint()
    if checkpoint is not None:
        return checkpoint.model, run.checkpoint_path
    raise RunFolderError(f"{folder} holds neither model.pt nor {CHECKPOINT}")


def _check_finite(model: nn.Module, source: Path) -> None:
    bad = sum(
        int((~torch.isfinite(t)).sum())
        for t in model.state_dict().values()
        if t.is_floating_point()
    )
    if bad:
        total = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
        raise CheckpointError(
            f"{source} holds {bad:,} non-finite values of {total:,}: the run diverged; "
            "these weights cannot predict anything"
        )


@dataclass(frozen=True)
class TestImages:
    """The test images to look at a saved run with: `which` says them in words; `other`: not
    the images the run was trained on (their SHA-256 differs from its record)."""

    split: Any  # a CifarSplit
    which: str
    other: bool


def test_split_of(
    saved: SavedRun, data_dir: str | None, subset: int | str | None, data: Any = None
) -> TestImages:
    """Those the run was evaluated on, unless `subset` says N or "all"; `data`: the data set
    of a run trained on data of one's own."""
    from fastcifar.data.catalogue import load_dataset
    from fastcifar.data.dataset import as_dataset

    if data is not None:
        dataset = as_dataset(data)
    elif saved.record is not None and saved.record.own_data:
        again = (
            "pass that data again as data="
            if in_python()
            else "look at it from Python, with that data (fastcifar.evaluate or fastcifar.export, "
            "data=...)"
        )
        raise DataError(f"{saved.folder} was trained on data of one's own: {again}")
    else:
        dataset = load_dataset(saved.config.dataset, data_dir or saved.config.data_dir)
    _check_fits_the_run(saved, dataset)
    own = saved.config.test_subset
    if subset == "all" or (subset is None and own is None):
        count, which = None, f"all {len(dataset.test):,} test images"
    elif subset is None:
        every = setting("test_subset", "all", "'all'")
        count = own
        which = f"the {own:,} test images the run was evaluated on ({every} for all of them)"
    else:
        count, which = int(subset), f"the first {int(subset):,} test images"
    recorded = (saved.record.data or {}).get("sha256") if saved.record is not None else None
    other = bool(recorded and dataset.fingerprint and dataset.fingerprint != recorded)
    if other:
        which += " (not the images the run was trained on: their SHA-256 differs from its record)"
    return TestImages(dataset.test.subset(count, named("test_subset")), which, other)


def _check_fits_the_run(saved: SavedRun, dataset: Any) -> None:
    """Test labels the run's model can name: a label past its last class is no accuracy."""
    classes = len(saved.class_names)
    if len(dataset.test) and int(dataset.test.labels.max()) >= classes:
        raise DataError(
            f"the test labels go up to {int(dataset.test.labels.max())}, and {saved.folder} "
            f"classifies {classes} classes (0 to {classes - 1}): give it data of its own classes"
        )
