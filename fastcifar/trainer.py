"""One training run: warm up (compile), find the LR bounds, train under One Cycle with a
checkpoint per epoch, evaluate, report. `TrainingRun.execute` also continues a checkpoint.

A stop request (SIGINT/SIGTERM) ends the current step, saves a checkpoint that records the
position inside the epoch, and raises `Interrupted`; a non-finite loss, found when the epoch
reads its device-side sums back (no per-step host sync), raises `Diverged` and keeps the last
good checkpoint. Under torchrun every rank runs this; only rank 0 writes and speaks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fastcifar import __version__, report
from fastcifar.device import synchronize
from fastcifar.engine import EpochAccumulator, EpochTotals, StepContext, run_steps
from fastcifar.errors import Diverged
from fastcifar.evaluation import Evaluation
from fastcifar.experiment import Experiment
from fastcifar.lr_bounds import LrBounds, read_range_test
from fastcifar.progress import progress, say
from fastcifar.run_folder import RunFolder
from fastcifar.schedule import one_cycle_lr, one_cycle_schedule
from fastcifar.signals import StopSignals
from fastcifar.state import TrainingState

# Under torchrun the ranks agree on a stop (a gloo vote) every this many steps on a GPU, and
# after every step on a CPU: they must all stop at the same step, or the next all-reduce
# would wait forever; and torchrun kills its workers 30 s after forwarding a signal.
GPU_STOP_CHECK_INTERVAL = 8


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    compile_seconds: float = 0.0


class TrainingRun:
    """The epochs of one run into one folder; see the module docstring."""

    def __init__(
        self, experiment: Experiment, folder: RunFolder, stop: StopSignals, timings: Timings
    ) -> None:
        self.experiment, self.folder, self.stop, self.timings = experiment, folder, stop, timings
        self.config = experiment.config
        self.steps_per_epoch = len(experiment.train_loader)
        self.total_steps = self.config.epochs * self.steps_per_epoch
        self.tensorboard = None
        self.last_checkpoint: str | None = None  # where the newest checkpoint stands
        self.elapsed_before = 0.0
        self.resumed = False  # continued from a checkpoint

    def new_state(self, bounds: LrBounds) -> TrainingState:
        scheduler = one_cycle_schedule(
            self.experiment.optimizer,
            lr_min=bounds.lr_min,
            lr_max=bounds.lr_max,
            total_steps=self.total_steps,
            peak_fraction=self.config.peak_fraction,
            cycle_momentum=self.config.cycle_momentum,
            base_momentum=self.config.base_momentum,
            max_momentum=self.config.max_momentum,
        )
        return TrainingState(
            self.experiment.model,
            self.experiment.optimizer,
            scheduler,
            self.experiment.precision.make_scaler(),
            bounds.lr_min,
            bounds.lr_max,
            bounds.source,
        )

    def execute(self, state: TrainingState) -> dict[str, Any]:
        """Train from wherever `state` stands to the last epoch; returns the summary."""
        if self.config.tensorboard and self.folder.writes:
            from fastcifar.tensorboard_log import TensorBoardLog

            self.tensorboard = TensorBoardLog(self.folder / "tensorboard")
            self._log_range_test(state)
        if state.epoch or state.step_in_epoch:
            self.last_checkpoint = self.position(state)
        self.elapsed_before = state.elapsed  # a resumed run counts its earlier processes too
        try:
            evaluation = self._train(state)
            return self._finish(state, evaluation)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _log_range_test(self, state: TrainingState) -> None:
        """The range test this run's bounds came from (its folder's, or its multi-run's)."""
        folders = [self.folder.path] + ([self.folder.parent.path] if self.folder.parent else [])
        curve = next((c for c in map(read_range_test, folders) if c is not None), None)
        if curve is not None and not (state.epoch or state.step_in_epoch):
            self.tensorboard.range_test(curve.lrs, curve.losses, curve.smoothed)

    def _train(self, state: TrainingState) -> Evaluation:
        experiment = self.experiment
        ctx = StepContext(
            experiment.train_forward, experiment.optimizer, state.scaler, state.scheduler
        )
        evaluation = None
        while state.epoch < self.config.epochs:
            totals = self._epoch(ctx, state)
            eval_start = time.perf_counter()
            evaluation = self.experiment.evaluate()
            row = report.metrics_row(
                state.epoch + 1,
                totals,
                evaluation,
                self._lr_at_epoch_end(state.epoch),
                time.perf_counter() - eval_start,
            )
            self._end_epoch(state, totals, row)
        if evaluation is None:  # resumed a run whose epochs were all done
            evaluation = self.experiment.evaluate()
        return evaluation

    def _epoch(self, ctx, state: TrainingState) -> EpochTotals:
        loader = self.experiment.train_loader
        loader.set_epoch(state.epoch, state.step_in_epoch)
        accumulator = EpochAccumulator(
            self.steps_per_epoch - state.step_in_epoch, self.experiment.device
        )
        start = time.perf_counter()
        batches = progress(loader, f"epoch {state.epoch + 1}", unit="batch", nested=True)
        ctx.forward.train()
        run_steps(ctx, batches, accumulator, self._should_stop)
        synchronize(self.experiment.device)
        part = accumulator.read(self.experiment.dist.all_reduce_sum, loader.batch_size)
        part.seconds = time.perf_counter() - start
        totals = state.partial.merged(part)
        self._check_finite(totals, state)
        if state.step_in_epoch + accumulator.steps_done < self.steps_per_epoch:
            state.step_in_epoch += accumulator.steps_done
            state.partial = totals
            raise self._interrupt(state)
        return totals

    def _should_stop(self, steps_done: int) -> bool:
        dist = self.experiment.dist
        if not dist.enabled:
            return self.stop.requested
        interval = 1 if self.experiment.device.type == "cpu" else GPU_STOP_CHECK_INTERVAL
        if steps_done % interval:
            return False
        return dist.any(self.stop.requested)

    def _check_finite(self, totals: EpochTotals, state: TrainingState) -> None:
        bad = totals.first_non_finite_step
        if bad is None:
            return
        step = state.epoch * self.steps_per_epoch + bad
        kept = (
            f"the last good checkpoint ({self.last_checkpoint}) is kept in {self.folder.final}"
            if self.last_checkpoint
            else "no checkpoint had been saved"
        )
        raise Diverged(
            f"diverged: the training loss became non-finite at step {bad + 1} of epoch "
            f"{state.epoch + 1} (LR {self._lr(step):.4g}); {kept}"
        )

    def _end_epoch(self, state: TrainingState, totals: EpochTotals, row: dict[str, Any]) -> None:
        first_step = state.epoch * self.steps_per_epoch
        state.epoch, state.step_in_epoch, state.partial = state.epoch + 1, 0, EpochTotals()
        state.history.append(row)
        self.folder.write_metrics(state.history)
        last = state.epoch == self.config.epochs
        if last or state.epoch % self.config.checkpoint_every == 0:
            self.save_checkpoint(state)
        if self.tensorboard is not None:
            lrs = [self._lr(first_step + i) for i in range(len(totals.step_losses))]
            self.tensorboard.steps(first_step, lrs, totals.step_losses)
            self.tensorboard.epoch(state.epoch, row)
        say(report.epoch_line(row, self.config.epochs, self._seconds_left(state)))
        if not last and self.experiment.dist.any(self.stop.requested):
            if state.epoch % self.config.checkpoint_every:
                self.save_checkpoint(state)
            raise self._interrupt(state)

    def wall_seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.timings.started

    def save_checkpoint(self, state: TrainingState) -> None:
        state.elapsed = self.wall_seconds()
        payload = {
            "fastcifar": __version__,
            "config": self.config.to_dict(),
            "state": state.state_dict(),
        }
        self.folder.save_checkpoint(lambda buffer: torch.save(payload, buffer))
        self.last_checkpoint = self.position(state)

    def position(self, state: TrainingState) -> str:
        """Where `state` stands: "after epoch 3", or "at step 12/97 of epoch 4"."""
        if state.step_in_epoch:
            steps = f"{state.step_in_epoch}/{self.steps_per_epoch}"
            return f"at step {steps} of epoch {state.epoch + 1}"
        return f"after epoch {state.epoch}"

    def _interrupt(self, state: TrainingState):
        if state.step_in_epoch:
            self.save_checkpoint(state)
        return self.stop.interrupted(
            f" {self.position(state)}",
            f": resume with python -m fastcifar.train --resume {self.folder.final}",
        )

    def _lr(self, step: int) -> float:
        state_bounds = self.experiment.optimizer.param_groups[0]
        return one_cycle_lr(
            min(step, self.total_steps - 1),
            lr_min=state_bounds["initial_lr"],
            lr_max=state_bounds["max_lr"],
            total_steps=self.total_steps,
            peak_fraction=self.config.peak_fraction,
        )

    def _lr_at_epoch_end(self, epoch: int) -> float:
        return self._lr((epoch + 1) * self.steps_per_epoch - 1)

    def _seconds_left(self, state: TrainingState) -> float | None:
        history = state.history
        if not history or state.epoch >= self.config.epochs:
            return None
        per_epoch = history[-1]["epoch_seconds"] + history[-1]["eval_seconds"]
        return per_epoch * (self.config.epochs - state.epoch)

    def _finish(self, state: TrainingState, evaluation: Evaluation) -> dict[str, Any]:
        compile_seconds = self.timings.compile_seconds
        summary = report.run_summary(self.experiment, state, evaluation, compile_seconds)
        summary["resumed"] = self.resumed
        if self.folder.writes:
            self._write_outputs(state, evaluation)
        summary["wall_seconds"] = self.wall_seconds()
        self.folder.write_json("summary.json", summary)  # last: the run is complete now
        if self.folder.writes:
            (self.folder / "checkpoint.pt").unlink(missing_ok=True)  # model.pt is the result
        say(report.final_line(summary, self.folder))
        return summary

    def _write_outputs(self, state: TrainingState, evaluation: Evaluation) -> None:
        weights = self.experiment.model.state_dict()
        if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
            raise Diverged("diverged: the final weights are not finite; model.pt was not written")
        self.folder.save("model.pt", lambda buffer: torch.save(weights, buffer))
        if self.config.plots:
            shape = dict(
                lr_min=state.lr_min,
                lr_max=state.lr_max,
                total_steps=self.total_steps,
                peak_fraction=self.config.peak_fraction,
            )
            report.plot_run(
                self.folder,
                state.history,
                evaluation,
                self.experiment.data,
                self.steps_per_epoch,
                shape,
            )
        if self.config.gradcam:
            from fastcifar.explain import explain_mistakes

            explain_mistakes(
                self.experiment.model, self.experiment.data, evaluation, self.folder / "gradcam.png"
            )
        if self.tensorboard is not None:
            names = [p.stem for p in sorted(self.folder.path.glob("*.png"))]
            self.tensorboard.images({name: self.folder / f"{name}.png" for name in names})
