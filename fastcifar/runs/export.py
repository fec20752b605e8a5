"""A trained run taken out of fastcifar: the network with its normalisation and logit scale
inside, as an ONNX file (torch's exporter, checked in onnxruntime) or a TorchScript file
(checked by loading it back), each compared with the PyTorch model on the run's test images.

The exported model takes uint8 images N x 32 x 32 x 3 (height, width, RGB: how CIFAR and
`predict` hold them; the batch axis is dynamic) and returns class probabilities (softmax of the
logits), N x classes, in fp32. The check's figures (top-1 agreement, the largest probability
difference) are printed and written next to the file as FILE.check.json.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcifar.data.normalisation import Normalisation
from fastcifar.engine.model import ModelChoice
from fastcifar.errors import ConfigError, MissingBackendError, UserError, first_line
from fastcifar.records.run_folder import EXPORTS
from fastcifar.runs.inference import check_switches, checked_test_options
from fastcifar.runs.saved_run import SavedRun, load_saved_run, test_split_of
from fastcifar.system.caller import named
from fastcifar.system.device import pick_device
from fastcifar.system.files import atomic_write

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
CHECK_BATCH = 500
OPSET = 18  # torch's exporter's own default in 2.14; onnxruntime 1.2x runs it


class Deployable(nn.Module):
    """uint8 (N, 32, 32, 3) images -> class probabilities (N, classes), fp32."""

    def __init__(self, model: nn.Module, normalisation: Normalisation) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(normalisation.mean).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(normalisation.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = (pixels.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
        return torch.softmax(self.model(images).float(), dim=1)


@dataclass(frozen=True)
class ExportCheck:
    """How the exported file agrees with the PyTorch model on the run's test images."""

    path: str
    format: str
    runtime: str  # what ran the file: onnxruntime X, or torch.jit
    images: int
    top1_agreement: float  # fraction of images whose top class is the same
    max_probability_difference: float
    seconds: float  # export and check

    def line(self) -> str:
        return (
            f"exported {self.path} ({self.format}, uint8 N x 32 x 32 x 3 -> probabilities); "
            f"checked in {self.runtime} on {self.images:,} test images: top-1 agreement "
            f"{100 * self.top1_agreement:.2f}%, largest probability difference "
            f"{self.max_probability_difference:.2e}"
        )


def export_run(
    run: str | Path | SavedRun,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    device: str | None = None,
    model: ModelChoice = None,
    allow_incomplete: bool = False,
    data_dir: str | None = None,
    test_subset: int | str | None = None,
    data: Any = None,
) -> ExportCheck:
    """Export the run's model (an EMA run's averaged weights: those of model.pt) to `out`
    (default: RUN/model.onnx or RUN/model.torchscript.pt) and check it on the run's test images
    (`data` again for a run trained on data of one's own); see the module docstring."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    _check_out(out)
    check_switches(allow_incomplete=allow_incomplete)
    test_subset = checked_test_options(test_subset, data_dir)
    started = time.perf_counter()
    saved = run if isinstance(run, SavedRun) else load_saved_run(
        run, pick_device(device), model=model, allow_incomplete=allow_incomplete
    )  # fmt: skip
    deployable = Deployable(saved.model, saved.normalisation).cpu().eval()
    test = test_split_of(saved, data_dir, test_subset, data).split
    pixels = torch.from_numpy(np.ascontiguousarray(test.images))
    target = Path(out) if out is not None else saved.folder / EXPORTS[format]
    # Written and checked under a name of its own, then moved in: a stopped or failed export
    # leaves the earlier one and its check as they were.
    unchecked = target.with_name(f".unchecked-{os.getpid()}-{target.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        unchecked.touch()  # an OSError here, where torch's writers raise their C++ RuntimeError
        export = _export_onnx if format == "onnx" else _export_torchscript
        runtime, run_file = export(deployable, pixels[:2], unchecked)
        check = _compare(deployable, run_file, pixels, target, format, runtime, started)
        atomic_write(Path(f"{target}.check.json"), json.dumps(asdict(check), indent=2) + "\n")
        os.replace(unchecked, target)
    except OSError as error:  # where `out` cannot be written: named as given, not our temporary
        ours = {str(unchecked), str(target), *map(str, target.parents)}
        if error.errno == errno.ENOSPC or error.filename not in ours:
            raise
        raise ConfigError(
            f"{named('out')} {target}: cannot write it ({error.strerror}): choose another"
        ) from None
    finally:
        unchecked.unlink(missing_ok=True)
    return check


def _check_out(out: str | Path | None) -> None:
    """`out` may be a new file or an earlier export (its FILE.check.json beside it), which is
    replaced; anything else there is the user's, and is never written over."""
    if out is None:
        return
    if not isinstance(out, str | os.PathLike):
        raise ConfigError(f"{named('out')} must be a file's path, got {out!r}")
    target = Path(out)
    if target.is_dir():
        raise ConfigError(f"{target} is a folder: {named('out')} names the file to write")
    above = next(folder for folder in target.absolute().parents if folder.exists())
    if not above.is_dir():
        raise ConfigError(f"{named('out')} {target}: {above} is a file, not a folder")
    if target.exists() and not Path(f"{target}.check.json").is_file():
        raise ConfigError(
            f"{target} exists and is no export of fastcifar (no {target.name}.check.json beside "
            f"it): choose another {named('out')}, or move it away"
        )


def _export_onnx(deployable: nn.Module, example: torch.Tensor, target: Path) -> tuple[str, Any]:
    onnxruntime = import_onnx()
    batch = torch.export.Dim("batch", min=1)
    try:  # the exporter prints its passes on stdout: kept off the command's output
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                deployable,
                (example,),
                dynamo=True,
                input_names=["pixels"],
                output_names=["probabilities"],
                dynamic_shapes={"pixels": {0: batch}},
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as error:  # a model of one's own that torch.export cannot trace
        raise UserError(
            f"this model cannot be exported to ONNX ({type(error).__name__}: "
            f"{first_line(error)[:300]})"
        ) from None
    program.save(str(target))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])

    def run_file(pixels: torch.Tensor) -> np.ndarray:
        return session.run(None, {"pixels": pixels.numpy()})[0]

    return f"onnxruntime {onnxruntime.__version__}", run_file


def _export_torchscript(
    deployable: nn.Module, example: torch.Tensor, target: Path
) -> tuple[str, Any]:
    # torch marks TorchScript deprecated in favour of torch.export; it still runs in C++
    # (libtorch) without Python, which is what this format is asked for.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    try:
        traced = torch.jit.trace(deployable, (example,), check_trace=False)
    except Exception as error:
        raise UserError(
            f"this model cannot be traced to TorchScript ({type(error).__name__}: "
            f"{first_line(error)[:300]})"
        ) from None
    torch.jit.save(traced, str(target))
    loaded = torch.jit.load(str(target), map_location="cpu")

    def run_file(pixels: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(pixels).numpy()

    return f"torch.jit {torch.__version__}", run_file


def _compare(
    deployable: nn.Module,
    run_file: Any,
    pixels: torch.Tensor,
    target: Path,
    format: str,
    runtime: str,
    started: float,
) -> ExportCheck:
    agree, worst = 0, 0.0
    for start in range(0, len(pixels), CHECK_BATCH):
        batch = pixels[start : start + CHECK_BATCH]
        with torch.no_grad():
            ours = deployable(batch).numpy()
        theirs = np.asarray(run_file(batch))
        agree += int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum())
        worst = max(worst, float(np.abs(ours - theirs).max()))
    seconds = time.perf_counter() - started
    return ExportCheck(str(target), format, runtime, len(pixels), agree / len(pixels), worst,
                       seconds)  # fmt: skip


def import_onnx() -> Any:
    """onnxruntime, with onnx and onnxscript (torch's exporter needs them); one line on how to
    install them where they are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise MissingBackendError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({error.name} is missing): "
            "pip install -e '.[export]'"
        ) from None
    return onnxruntime
