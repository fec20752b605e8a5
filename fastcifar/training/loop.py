"""One training run: One Cycle epochs from wherever its state stands, checkpoints by time, a
divergence guard, a clean stop on a signal or a limit, then the outputs.

A stop (SIGINT/SIGTERM, --max-time, --max-steps) ends the current step, saves a checkpoint
that records the position inside the epoch, and raises `Interrupted` or `LimitReached`. At each
epoch's end the training loss, the test loss and every weight, buffer and optimizer state are
checked once (no per-step host sync): anything non-finite is divergence, and no checkpoint is
written after it. Under torchrun every rank runs this; only rank 0 writes and speaks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from fastcifar.engine.evaluation import Evaluation
from fastcifar.engine.schedule import LrBounds, one_cycle_lr, one_cycle_schedule
from fastcifar.engine.step import EpochAccumulator, EpochTotals, run_steps
from fastcifar.errors import Diverged, LimitReached
from fastcifar.outputs.report import Reporter, epoch_line, final_line, metrics_row
from fastcifar.records import summary as run_summary
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_record import RunKind, Status
from fastcifar.records.metrics_row import MetricsRow
from fastcifar.records.provenance import segment
from fastcifar.records.run_folder import RunFolder, resume_hint
from fastcifar.records.summary import Summary
from fastcifar.system.device import compute_kind, synchronize
from fastcifar.system.progress import progress, say
from fastcifar.system.signals import StopSignals
from fastcifar.training.limits import Limits
from fastcifar.training.state import TrainingState, option_parts
from fastcifar.training.trainer import Trainer


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    warm_up_seconds: float = 0.0


def new_state(trainer: Trainer, bounds: LrBounds) -> TrainingState:
    """The state of a run that starts now from `bounds`, under the One Cycle schedule."""
    config = trainer.config
    scheduler = one_cycle_schedule(
        trainer.optimizer,
        lr_min=bounds.lr_min,
        lr_max=bounds.lr_max,
        total_steps=trainer.total_steps,
        peak_fraction=config.peak_fraction,
        cycle_momentum=config.cycle_momentum,
        base_momentum=config.base_momentum,
        max_momentum=config.max_momentum,
        final_divisor=config.lr_final_divisor,
    )
    scaler = trainer.precision.make_scaler()
    state = TrainingState.of(trainer.model, trainer.optimizer, scheduler, scaler, bounds)
    for name, part in option_parts(trainer).items():
        state.add(name, part)
    return state


class TrainingRun:
    """The epochs of one run into one folder; see the module docstring."""

    def __init__(
        self,
        trainer: Trainer,
        folder: RunFolder,
        stop: StopSignals,
        state: TrainingState,
        *,
        resumed: bool = False,
        limits: Limits | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.trainer, self.folder, self.stop, self.state = trainer, folder, stop, state
        self.config: TrainConfig = trainer.config
        self.resumed, self.limits = resumed, limits or Limits()
        self.timings = timings or Timings()
        self.reporter = Reporter(trainer, folder)
        self.elapsed_before = state.elapsed  # a resumed run counts its earlier processes too
        self.last_checkpoint = self.position() if state.started else None
        state.segments.append(segment(self.position(), compute_kind(trainer.device)))
        self.last_checkpoint_time = time.monotonic()
        self.checkpoints_written = 0
        self.limit: str | None = None
        self.agreed = 0  # the stop code every rank agreed on (see _wanted)

    def run(self) -> Summary:
        """Train from wherever the state stands to the last epoch; returns the summary."""
        with self.reporter.session(self.state):
            evaluation = None
            while self.state.epoch < self.config.epochs:
                totals = self._epoch()
                self.state.end_of_epoch()
                eval_start = time.perf_counter()
                evaluation = self._evaluate() if self._evaluates() else None
                eval_seconds = time.perf_counter() - eval_start
                self._check_finite(totals, evaluation)
                lr = self._lr((self.state.epoch + 1) * self.trainer.steps_per_epoch - 1)
                row = metrics_row(self.state.epoch + 1, totals, evaluation, lr, eval_seconds)
                self._end_epoch(totals, row)
            if evaluation is None:  # resumed a run whose epochs were all done
                evaluation = self._evaluate()
            return self._finish(evaluation)

    def _evaluate(self) -> Evaluation:
        with self.state.evaluated():  # an average's weights, where a part keeps one
            return self.trainer.evaluate()

    def _evaluates(self) -> bool:
        """Whether the epoch that just ended is evaluated: every --eval-every, and the last."""
        epoch = self.state.epoch + 1
        return epoch == self.config.epochs or epoch % self.config.eval_every == 0

    def _epoch(self) -> EpochTotals:
        state, trainer = self.state, self.trainer
        loader = trainer.train_loader
        loader.set_epoch(state.epoch, state.step_in_epoch)
        accumulator = EpochAccumulator(
            trainer.steps_per_epoch - state.step_in_epoch, trainer.device
        )
        first_step = state.epoch * trainer.steps_per_epoch + state.step_in_epoch
        ctx = trainer.step_context(state.scheduler, state.scaler, state.after_step(first_step))
        batches = progress(
            loader,
            f"epoch {state.epoch + 1}",
            unit="batch",
            nested=True,
            initial=state.step_in_epoch,
            total=trainer.steps_per_epoch,
        )
        start = time.perf_counter()
        ctx.forward.train()
        self.agreed = self.trainer.dist.agree(self._wanted(first_step))
        if not self.agreed:  # else a limit reached (or a signal received) already
            run_steps(
                ctx,
                batches,
                accumulator,
                lambda done: self._after_step(accumulator, first_step, done),
            )
        synchronize(trainer.device)
        part = accumulator.read(trainer.dist.all_reduce_sum, loader.batch_size)
        part.seconds = time.perf_counter() - start
        self.reporter.steps(first_step, part.step_losses, self._lr)
        totals = state.partial.merged(part)
        if state.step_in_epoch + accumulator.steps_done < trainer.steps_per_epoch:
            self._check_finite(totals, None)  # before the checkpoint, never after divergence
            state.step_in_epoch += accumulator.steps_done
            state.partial = totals
            raise self._stopped()
        return totals

    def _after_step(self, accumulator: EpochAccumulator, first_step: int, done: int) -> bool:
        self.reporter.live_steps(accumulator, first_step, self._lr)
        return self._should_stop(first_step + done)

    def _should_stop(self, next_step: int) -> bool:
        """Whether to stop before global step `next_step`, inside an epoch: a signal or a
        limit, agreed on by every rank (see Distributed.stop_vote); --max-steps is the same on
        every rank, so it needs no vote and stops at its step exactly."""
        wanted, dist = self._wanted(next_step), self.trainer.dist
        if self.limits.max_steps is not None and next_step >= self.limits.max_steps:
            self.agreed = dist.agree(wanted)  # every rank is at this step: a vote, then stop
            return True
        steps_done = next_step - self.state.epoch * self.trainer.steps_per_epoch
        self.agreed = dist.stop_vote(wanted, steps_done, self.trainer.device)
        return self.agreed > 0

    def _wanted(self, next_step: int) -> int:
        """This rank's stop code before `next_step`: 0 none, 1 a limit, 2 + N signal N. A
        signal outranks a limit, and the ranks agree on the largest code (their clocks, and
        the moments a signal reaches each, differ)."""
        self.limit = self.limits.reached(next_step)
        if self.stop.received is not None:
            return 2 + self.stop.received
        return int(self.limit is not None)

    def _check_finite(self, totals: EpochTotals, evaluation: Evaluation | None) -> None:
        """Diverged when a loss, a weight, a buffer or an optimizer state is not finite."""
        state, spe = self.state, self.trainer.steps_per_epoch
        problem = None
        if totals.first_non_finite_step is not None:
            step = state.epoch * spe + totals.first_non_finite_step
            problem = (
                f"the training loss became non-finite at step "
                f"{totals.first_non_finite_step + 1} of epoch {state.epoch + 1} "
                f"(LR {self._lr(step):.4g})"
            )
        elif evaluation is not None and not all(
            math.isfinite(scores.loss) for scores in (evaluation.plain, evaluation.tta) if scores
        ):
            problem = f"the test loss is not finite after epoch {state.epoch + 1}"
        # Every rank gets here alike (the losses are all-reduced); BatchNorm statistics are each
        # rank's own until evaluation broadcasts them, so the ranks agree on the verdict.
        elif self.trainer.dist.any(not self.state.is_finite()):
            problem = (
                "weights, BatchNorm statistics, momentum or averages are not finite in epoch "
                f"{state.epoch + 1}"
            )
        if problem is None:
            return
        kept = (
            f"the last good checkpoint ({self.last_checkpoint}) is kept in {self.folder.final}"
            if self.last_checkpoint
            else "no checkpoint had been saved"
        )
        raise Diverged(f"diverged: {problem} (LRMAX {state.bounds.lr_max:.4g}); {kept}")

    def _end_epoch(self, totals: EpochTotals, row: MetricsRow) -> None:
        state = self.state
        state.epoch, state.step_in_epoch, state.partial = state.epoch + 1, 0, EpochTotals()
        state.history.append(row)
        state.step_losses.extend(totals.step_losses)
        self.folder.write_metrics(state.history)
        last = state.epoch == self.config.epochs
        if last or self._checkpoint_due():
            self.save_checkpoint()
        self.reporter.epoch(state, row)
        say(epoch_line(row, self.config.epochs, self._seconds_left(), bool(self.config.ema)))
        if last:
            return
        self.agreed = self.trainer.dist.agree(
            self._wanted(state.epoch * self.trainer.steps_per_epoch)
        )
        if self.agreed:
            raise self._stopped()

    def _checkpoint_due(self) -> bool:
        if self.config.checkpoint_every is not None:
            return self.state.epoch % self.config.checkpoint_every == 0
        return time.monotonic() - self.last_checkpoint_time >= self.config.checkpoint_seconds

    def wall_seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.timings.started

    def save_checkpoint(self) -> None:
        # A state that has not trained a step is no checkpoint: the first one of an --overwrite
        # run would replace the previous run with nothing.
        if not self.state.started or self.last_checkpoint == self.position():
            return  # nothing trained, or this very state is saved already
        self.state.elapsed = self.wall_seconds()
        checkpoint = self.state.checkpoint(self.config.to_dict(), self.trainer.trained_how())
        self.folder.save_checkpoint(checkpoint.save)
        self.last_checkpoint, self.last_checkpoint_time = self.position(), time.monotonic()
        self.checkpoints_written += 1

    def position(self) -> str:
        """Where the state stands: "after epoch 3", or "at step 12/97 of epoch 4"."""
        if self.state.step_in_epoch:
            steps = f"{self.state.step_in_epoch}/{self.trainer.steps_per_epoch}"
            return f"at step {steps} of epoch {self.state.epoch + 1}"
        return f"after epoch {self.state.epoch}"

    def resume_hint(self) -> str:
        return resume_hint(self.folder.final)

    def _stopped(self) -> LimitReached | Exception:
        """The agreed stop: the same outcome, status and exit code on every rank."""
        self.save_checkpoint()
        if self.agreed >= 2:
            return self.stop.interrupted(
                f" {self.position()}", self.resume_hint(), number=self.agreed - 2
            )
        # Without a limit of its own, another rank's clock reached --max-time first.
        limit = self.limit or self.limits.time_limit
        return LimitReached(f"stopped at {limit} {self.position()}", hint=self.resume_hint())

    def _lr(self, step: int) -> float:
        bounds = self.state.bounds
        return one_cycle_lr(
            min(step, self.trainer.total_steps - 1),
            lr_min=bounds.lr_min,
            lr_max=bounds.lr_max,
            total_steps=self.trainer.total_steps,
            peak_fraction=self.config.peak_fraction,
            final_divisor=self.config.lr_final_divisor,
        )

    def _seconds_left(self) -> float | None:
        history = self.state.history
        if not history or self.state.epoch >= self.config.epochs:
            return None
        evaluations = [row.eval_seconds for row in history if row.evaluated]
        per_evaluation = evaluations[-1] if evaluations else 0.0
        epochs, every, done = self.config.epochs, self.config.eval_every, self.state.epoch
        evaluated = epochs // every - done // every + (epochs % every > 0)  # the last, always
        return history[-1].epoch_seconds * (epochs - done) + per_evaluation * evaluated

    def _finish(self, evaluation: Evaluation) -> Summary:
        if self.folder.writes:
            with self.state.evaluated():  # the weights that were evaluated
                self.folder.save(
                    "model.pt", lambda buffer: torch.save(self.trainer.model.state_dict(), buffer)
                )
            self.reporter.end(self.state, evaluation)
        summary = run_summary.run_complete(
            running_summary(self.trainer),
            self.trainer.facts(),
            self.state,
            evaluation,
            train_examples_per_epoch=self.trainer.steps_per_epoch * self.config.batch_size,
            warm_up_seconds=self.timings.warm_up_seconds,
            resumed=self.resumed,
            checkpoints_written=self.checkpoints_written,
            wall_seconds=self.wall_seconds(),
        )
        self.folder.write_summary(summary)  # last: the run is complete now
        self.folder.drop_checkpoint()
        say(final_line(summary, self.folder))
        return summary


def running_summary(trainer: Trainer) -> Summary:
    return Summary(
        RunKind.RUN,
        Status.RUNNING,
        trainer.config.to_dict(),
        class_names=list(trainer.data.class_names),
        time_budget=trainer.budget_plan,
    )
