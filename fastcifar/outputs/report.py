"""What a run tells its user: the per-epoch line, the time estimate, the final line, and the
`Reporter` that keeps TensorBoard, the plots and Grad-CAM up to date at each step, epoch and
end of a run (only where the folder is written: rank 0)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from fastcifar.data.dataset import Dataset
from fastcifar.engine.evaluation import Evaluation
from fastcifar.engine.lr_range_test import RangeTestResult
from fastcifar.engine.schedule import LrBounds
from fastcifar.engine.step import EpochAccumulator, EpochTotals
from fastcifar.errors import RunFolderError
from fastcifar.records.config import TrainConfig
from fastcifar.records.metrics_row import MetricsRow
from fastcifar.records.run_folder import RunFolder
from fastcifar.records.summary import Summary, sources
from fastcifar.system.distributed import Distributed

# An evaluation image costs this share of a training image. In FLOPs it is a third (a step is a
# forward plus input and weight gradients); measured on the 2-core AVX2 EPYC (fp32, evaluation
# batches of 1000) it was 0.30 against training batches of 128 and 0.6 against batches of 256.
FORWARD_SHARE_OF_STEP = 0.45
# TensorBoard gets the steps of an epoch in progress this often (one host read each time).
LIVE_SECONDS = 30.0
RANGE_TEST_FILE = "lr_range_test.json"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(
    row: MetricsRow, epochs: int, seconds_left: float | None, averaged: bool = False
) -> str:
    """One epoch in a line; `averaged`: the test figures are the weight average's (--ema)."""
    left = f"  ~{duration(seconds_left)} left" if seconds_left else ""
    speed = f"{row.epoch_seconds:.1f} s ({row.images_per_second:,.0f} img/s)"
    if not row.evaluated:  # not an epoch of --eval-every
        test, evaluation = "not evaluated  ", ""
    else:
        tta = f" (TTA {100 * row.test_accuracy_tta:.2f}%)" if row.test_accuracy_tta else ""
        which = "test (EMA weights)" if averaged else "test"
        test = f"{which} loss {row.test_loss:.3f} acc {100 * row.test_accuracy:.2f}%{tta}  "
        evaluation = f" + eval {row.eval_seconds:.1f} s"
    return (
        f"epoch {row.epoch:>{len(str(epochs))}}/{epochs}  "
        f"train loss {row.train_loss:.3f} acc {100 * row.train_accuracy:.2f}%  "
        f"{test}lr {row.lr:.4g}  {speed}{evaluation}{left}"
    )


@dataclass(frozen=True)
class Estimate:
    """What a run will cost, from one measured training step of its own batch."""

    seconds_per_step: float
    training: float
    evaluation: float
    range_test: float
    gflop_per_step: float | None = None  # the model's FLOPs of one step (forward + backward)
    on_cpu: bool = False  # then a long run points at the quick try,
    sliced: bool = False  # unless it is a slice already (--train-subset)

    @property
    def total(self) -> float:
        return self.training + self.evaluation + self.range_test

    @classmethod
    def of(
        cls,
        seconds_per_step: float,
        *,
        steps: int,
        runs: int,
        epochs: int,
        batch: int,
        test_images: int,
        tta: bool,
        range_test_steps: int,
        tta_translate: bool = False,
        eval_every: int = 1,
        gflop_per_step: float | None = None,
        on_cpu: bool = False,
        sliced: bool = False,
    ) -> Estimate:
        evaluated = epochs // eval_every + (epochs % eval_every > 0)  # the last epoch, always
        evaluation = seconds_per_step * FORWARD_SHARE_OF_STEP * test_images / batch * evaluated
        return cls(
            seconds_per_step,
            training=seconds_per_step * steps * runs,
            evaluation=evaluation * (1 + (5 if tta_translate else 1) * tta) * runs,
            range_test=seconds_per_step * range_test_steps,
            gflop_per_step=gflop_per_step,
            on_cpu=on_cpu,
            sliced=sliced,
        )

    def line(self, where: str = "a measured step") -> str:
        parts = [f"{duration(self.training)} training", f"{duration(self.evaluation)} evaluation"]
        if self.range_test:
            parts.append(f"{duration(self.range_test)} LR range test")
        speed = ""
        if self.gflop_per_step:
            rate = self.gflop_per_step / self.seconds_per_step
            speed = f", {self.gflop_per_step:,.0f} GFLOP per step: {rate:,.0f} GFLOP/s"
        line = (
            f"estimated time: ~{duration(self.total)} ({', '.join(parts)}) at {where}'s "
            f"{self.seconds_per_step:.3g} s/step{speed}"
        )
        if self.on_cpu and not self.sliced and self.total > 600:
            line += (
                "; on a CPU try a slice first (README, The first five minutes: --epochs 2 "
                "--train-subset 2048 --batch-size 128 --test-subset 1000)"
            )
        return line


def metrics_row(
    epoch: int, totals: EpochTotals, evaluation: Evaluation | None, lr: float, eval_seconds: float
) -> MetricsRow:
    """One epoch's row; the test columns are None after an epoch that was not evaluated
    (--eval-every)."""
    plain = evaluation.plain if evaluation else None
    tta = evaluation.tta if evaluation else None
    return MetricsRow(
        epoch=epoch,
        train_loss=totals.loss,
        train_accuracy=totals.accuracy,
        test_loss=plain.loss if plain else None,
        test_accuracy=plain.accuracy if plain else None,
        test_loss_tta=tta.loss if tta else None,
        test_accuracy_tta=tta.accuracy if tta else None,
        lr=lr,
        epoch_seconds=totals.seconds,
        images_per_second=totals.examples / max(totals.seconds, 1e-9),
        eval_seconds=eval_seconds if evaluation else None,
    )


def final_line(summary: Summary, folder: RunFolder) -> str:
    """The last line of a run: accuracy, then where the time went (wall time beside the
    training, so that any overhead shows)."""
    averaged = " (EMA weights)" if summary.config.get("ema") else ""
    accuracy = f"test accuracy{averaged} {100 * summary.final_test_accuracy:.2f}%"
    if summary.final_test_accuracy_tta is not None:
        accuracy += f" ({summary.headline} {100 * summary.final_test_accuracy_tta:.2f}%)"
    warm_up = "compile" if summary.compiled else "warm-up"
    extras = [f"{warm_up} {duration(summary.warm_up_seconds)}"]
    if "range_test_seconds" in summary.lr_source:
        extras.append(f"range test {duration(summary.lr_source['range_test_seconds'])}")
    if summary.resumed:
        trained_by = sources(summary)
        extras.append(
            f"resumed under another source: {' then '.join(trained_by)}"
            if len(trained_by) > 1
            else "resumed"
        )
    if summary.time_budget:
        budget = summary.time_budget["budget_seconds"]
        over = (
            " (over: the measured step was faster than the run's)"
            if (summary.wall_seconds > budget)
            else ""
        )
        extras.append(f"time budget {duration(budget)}{over}")
    return (
        f"{accuracy} | training {duration(summary.total_train_seconds)}, evaluation "
        f"{duration(summary.total_eval_seconds)}, wall {duration(summary.wall_seconds)} "
        f"({', '.join(extras)}) | run folder: {folder.path}"
    )


def save_range_test(result: RangeTestResult, folder: RunFolder, plot: bool = True) -> None:
    folder.write_json(RANGE_TEST_FILE, result.to_dict())
    if plot and folder.writes:
        from fastcifar.outputs import plots  # here: matplotlib costs a run without plots 0.3 s

        plots.plot_range_test(result, folder / "lr_range_test.png")


def read_range_test(folder: Path) -> RangeTestResult | None:
    """A range test already written to `folder` (strict JSON may add keys: they are ignored)."""
    import dataclasses
    import json

    path = folder / RANGE_TEST_FILE
    if not path.is_file():
        return None
    names = {item.name for item in dataclasses.fields(RangeTestResult)}
    try:
        values = json.loads(path.read_text())
        result = RangeTestResult(**{key: value for key, value in values.items() if key in names})
        if not (result.lrs and isinstance(result.lr_max, float | int)):
            raise ValueError("no curve or no LRMAX")
    except (ValueError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise RunFolderError(
            f"{path} is no LR range test that fastcifar wrote ({type(error).__name__}: "
            f"{str(error)[:120]}): remove it, and the resume runs the range test again"
        ) from None
    return result


class ReportedTrainer(Protocol):
    """What the reporter reads of a run's trainer (training.trainer.Trainer, a layer above)."""

    config: TrainConfig
    dist: Distributed
    model: nn.Module
    data: Dataset

    @property
    def steps_per_epoch(self) -> int: ...

    @property
    def total_steps(self) -> int: ...


class ReportedState(Protocol):
    """What the reporter reads of a run's state (training.state.TrainingState)."""

    bounds: LrBounds
    epoch: int
    history: list[MetricsRow]
    step_losses: list[float]

    @property
    def started(self) -> bool: ...


class Reporter:
    """TensorBoard as the run goes, the plots and Grad-CAM at its end; a no-op on the ranks
    that do not write. TensorBoard gets an epoch's steps every LIVE_SECONDS in a single
    process (one read of the device-side losses then, never a read per step), and at each
    epoch's end the global batch's losses."""

    def __init__(self, trainer: ReportedTrainer, folder: RunFolder) -> None:
        self.trainer, self.folder = trainer, folder
        self.config = trainer.config
        self.log = None
        self.logged = 0  # steps of the epoch in progress already in TensorBoard
        self.last_live = time.monotonic()

    @contextlib.contextmanager
    def session(self, state: ReportedState) -> Iterator[None]:
        if self.config.tensorboard and self.folder.writes:
            from fastcifar.outputs.tensorboard_log import TensorBoardLog

            self.log = TensorBoardLog(self.folder / "tensorboard", flush_seconds=LIVE_SECONDS)
            curve = self._range_test_curve()
            if curve is not None and not state.started:
                self.log.range_test(curve.lrs, curve.losses, curve.smoothed)
        try:
            yield
        finally:
            if self.log is not None:
                self.log.close()

    def _range_test_curve(self) -> RangeTestResult | None:
        """The range test this run's bounds came from (its folder's, or its multi-run's)."""
        folders = [self.folder.path] + ([self.folder.parent.path] if self.folder.parent else [])
        return next((c for c in map(read_range_test, folders) if c is not None), None)

    def live_steps(
        self, accumulator: EpochAccumulator, first_step: int, lr_of: Callable[[int], float]
    ) -> None:
        if self.log is None or self.trainer.dist.enabled:
            return
        if time.monotonic() - self.last_live < LIVE_SECONDS:
            return
        done = accumulator.steps_done
        losses = accumulator.losses[self.logged : done].tolist()
        self._write_steps(first_step + self.logged, losses, lr_of)
        self.logged, self.last_live = done, time.monotonic()
        self.log.flush()

    def steps(self, first_step: int, losses: list[float], lr_of: Callable[[int], float]) -> None:
        """The rest of the epoch's steps (global-batch losses), at its end."""
        if self.log is not None:
            self._write_steps(first_step + self.logged, losses[self.logged :], lr_of)
        self.logged = 0

    def _write_steps(self, first: int, losses: list[float], lr_of: Callable[[int], float]) -> None:
        lrs = [lr_of(first + index) for index in range(len(losses))]
        self.log.steps(first, lrs, losses)

    def epoch(self, state: ReportedState, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.epoch(state.epoch, row.to_dict())

    def end(self, state: ReportedState, evaluation: Evaluation) -> None:
        """Every plot of a finished run, Grad-CAM of its mistakes, and both in TensorBoard."""
        folder, trainer = self.folder, self.trainer
        if self.config.plots:
            plot_run(folder, state, evaluation, trainer)
        if self.config.gradcam:
            from fastcifar.outputs.gradcam import explain_mistakes

            explain_mistakes(trainer.model, trainer.data, evaluation, folder / "gradcam.png")
        if self.log is not None:
            names = [p.stem for p in sorted(folder.path.glob("*.png"))]
            self.log.images({name: folder / f"{name}.png" for name in names})


def plot_run(
    folder: RunFolder, state: ReportedState, evaluation: Evaluation, trainer: ReportedTrainer
) -> None:
    """The schedule, the curves (every step's loss and each epoch's), the mistakes and the
    confusion matrix of a finished run."""
    from fastcifar.engine.schedule import schedule_points
    from fastcifar.outputs import plots  # here: matplotlib costs a run without plots 0.3 s

    labels, predictions = evaluation.labels.numpy(), evaluation.headline().predictions.numpy()
    names = trainer.data.class_names
    steps, lrs = schedule_points(
        lr_min=state.bounds.lr_min,
        lr_max=state.bounds.lr_max,
        total_steps=trainer.total_steps,
        peak_fraction=trainer.config.peak_fraction,
        final_divisor=trainer.config.lr_final_divisor,
    )
    plots.plot_schedule(steps, lrs, trainer.steps_per_epoch, folder / "lr_schedule.png")
    plots.plot_curves(
        state.history,
        folder / "curves.png",
        state.step_losses,
        trainer.steps_per_epoch,
        "test (EMA weights)" if trainer.config.ema else "test",
    )
    plots.plot_mistakes(
        trainer.data.test.images, labels, predictions, names, folder / "misclassified.png"
    )
    matrix = plots.confusion_matrix(labels, predictions, len(names))
    plots.plot_confusion(matrix, names, folder / "confusion_matrix.png")
