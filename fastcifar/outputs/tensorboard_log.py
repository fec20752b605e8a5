"""An optional TensorBoard log of a run, in RUN_DIR/tensorboard/: the LR range test, the LR and
loss of every step, the per-epoch metrics and the run's plots.

TensorBoard is an extra (`pip install -e '.[tensorboard]'`), imported only when a log is opened. The
run folder's CSV and JSON files stay the record of a run; this log is for browsing it. Its event
files are the one exception to the run folder's atomic writes: they are append-only streams
that TensorBoard reads up to the last complete record, so a crash loses only the unflushed tail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from fastcifar.errors import MissingBackendError

FOLDER_NAME = "tensorboard"  # the log's folder inside a run folder

# TensorBoard's steps are integers, so the loss-against-LR view steps through LR x 1e6: integer
# and increasing like the sweep, and readable as micro-LR (step 400,000 = LR 0.4). LRs under 1e-6
# apart would share a step; a sweep from the default start, 1e-4, never comes that close.
LR_STEP_SCALE = 1e6


def import_summary_writer() -> type:
    """torch's SummaryWriter; MissingBackendError when TensorBoard cannot load (called before a
    run starts when --tensorboard is asked for, not after its LR range test)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise MissingBackendError(
            f"TensorBoard is not installed or cannot load ({error}): "
            "pip install -e '.[tensorboard]'"
        ) from error
    return SummaryWriter


class TensorBoardLog:
    """Scalars and images for TensorBoard in `folder` (RUN_DIR / FOLDER_NAME for a run); use as
    `with TensorBoardLog(folder) as log:` so that the log is flushed and closed."""

    def __init__(self, folder: Path, flush_seconds: float = 120.0) -> None:
        self.folder = Path(folder)
        self._writer = import_summary_writer()(log_dir=str(self.folder), flush_secs=flush_seconds)

    def range_test(
        self, lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float]
    ) -> None:
        """The LR range test against its step, and its loss against the LR (see LR_STEP_SCALE)."""
        for step, (lr, loss, smooth) in enumerate(zip(lrs, losses, smoothed, strict=True)):
            self._writer.add_scalar("range_test/lr", lr, step)
            self._writer.add_scalar("range_test/loss", loss, step)
            self._writer.add_scalar("range_test/smoothed_loss", smooth, step)
            lr_step = round(lr * LR_STEP_SCALE)
            self._writer.add_scalar("range_test/loss_vs_lr", loss, lr_step)
            self._writer.add_scalar("range_test/smoothed_loss_vs_lr", smooth, lr_step)

    def steps(self, first_step: int, lrs: Sequence[float], losses: Sequence[float]) -> None:
        """One epoch's per-step LR and loss at global steps first_step, first_step + 1, ...

        The caller reads the losses back from the device once per epoch, so logging them never
        forces a host-device sync per step.
        """
        for step, (lr, loss) in enumerate(zip(lrs, losses, strict=True), start=first_step):
            self._writer.add_scalar("step/lr", lr, step)
            self._writer.add_scalar("step/loss", loss, step)

    def epoch(self, epoch: int, row: Mapping[str, float | None]) -> None:
        """Each value of a metrics row as "epoch/<key>" at step `epoch`, but the row's own epoch
        number; a None (not measured) is skipped."""
        for key, value in row.items():
            if key != "epoch" and value is not None:
                self._writer.add_scalar(f"epoch/{key}", float(value), epoch)

    def images(self, paths: Mapping[str, Path]) -> None:
        """The run's PNG plots, each as the image "plots/<name>"."""
        for name, path in paths.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._writer.add_image(f"plots/{name}", pixels, dataformats="HWC")

    def flush(self) -> None:
        """Make what was logged visible to a running TensorBoard now."""
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
