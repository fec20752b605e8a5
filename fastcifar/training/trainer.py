"""Everything a run needs, built once from a config and a data set: device, precision, loaders,
model, the compiled training and evaluation graphs and the optimizer; then the warm-up, the LR
range test and the short measured step that a time estimate starts from.

One `Trainer` serves every run of a process: a single run, each run of a multi-run (re-seeded
in place, so that its compiled graphs stay valid), find_lr, the estimate and the benchmarks.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastcifar.data.augmentation import AugmentationSpec
from fastcifar.data.dataset import Dataset
from fastcifar.data.loaders import BatchLoader, LoaderOptions, compile_pays, make_loader
from fastcifar.data.source import beton_cache_folder
from fastcifar.data.spec import SPECS
from fastcifar.engine.compilation import compile_counts, compile_model
from fastcifar.engine.evaluation import EvalBatches, EvalForward, Evaluation, evaluate
from fastcifar.engine.ghost_batchnorm import convert as convert_to_ghost_batchnorm
from fastcifar.engine.initialisation import initialise
from fastcifar.engine.lr_range_test import RangeTestResult, lr_range_test
from fastcifar.engine.model import (
    ModelChoice,
    architecture_of,
    build_model,
    check_logits,
    model_factory,
    model_name,
    reinitialise,
)
from fastcifar.engine.schedule import (
    LrBounds,
    MuonSettings,
    ParameterGroups,
    freeze_bn_scales,
    make_optimizer,
)
from fastcifar.engine.step import (
    StepContext,
    TrainForward,
    mark_step_begin,
    state_restored,
    training_step,
)
from fastcifar.errors import ConfigError, LimitReached
from fastcifar.records.config import TrainConfig
from fastcifar.system.device import Precision, device_name, synchronize
from fastcifar.system.distributed import Distributed, compile_mode_for, data_parallel_forward
from fastcifar.system.signals import StopSignals
from fastcifar.training.limits import Limits

WARM_UP_STEPS = 3


@dataclass
class Trainer:
    config: TrainConfig  # as resolved: data_dir absolute, the seed and LRMAX in use
    device: torch.device
    dist: Distributed  # the ranks that share one run (one process in parallel-runs mode)
    precision: Precision
    data: Dataset  # cut to train_subset / test_subset
    train_loader: BatchLoader
    eval_batches: EvalBatches
    model: nn.Module  # the plain module: its state_dict is what gets saved
    train_forward: nn.Module  # TrainForward, wrapped in DDP and compiled as configured
    eval_forward: nn.Module  # EvalForward, compiled as configured
    optimizer: torch.optim.SGD
    compile_mode: str | None  # None: eager
    factory: Callable[[], nn.Module]  # initial weights from torch's global seed
    model_name: str
    initial_optimizer_state: dict
    budget_plan: dict[str, Any] | None = None  # --time-budget's plan (runs/budget.py)

    @property
    def architecture(self) -> str:
        return architecture_of(self.model)

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    @property
    def needs_warm_up(self) -> bool:
        """Compiled graphs (and, on a GPU, cuDNN's algorithm search) are paid for before
        anything is timed; an eager CPU run has nothing to warm up."""
        return self.compiled or self.device.type == "cuda"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def step_context(
        self, scheduler: Any = None, scaler: Any = None, after_step: Any = None
    ) -> StepContext:
        """A training step's context; without a schedule and with a fresh scaler unless given
        (warm-up, range test, measured steps); `after_step`: the training state's hook."""
        if scheduler is None and scaler is None:
            scaler = self.precision.make_scaler()
        return StepContext(self.train_forward, self.optimizer, scaler, scheduler, after_step)

    def evaluate(self) -> Evaluation:
        # Ranks updated their BatchNorm statistics from their own samples; evaluate rank 0's.
        self.dist.broadcast_buffers(self.model)
        labels = torch.from_numpy(self.data.test.labels)
        return evaluate(self.eval_forward, self.eval_batches, labels, self.dist)

    def reseed(self, seed: int, lr_max: float | None) -> None:
        """Start over with `seed` (and `lr_max`): its initial weights (copied in place), a fresh
        optimizer state and a loader drawing from it, exactly as a new process with that seed."""
        self.config = replace(self.config, seed=seed, lr_max=lr_max)
        close = getattr(self.train_loader, "close", None)
        if close is not None:  # FFCV: end the producer thread of an unfinished epoch
            close()
        reinitialise(self.model, seed, self.factory)
        _initialise(self.model, self.config, self.data)
        self.optimizer.load_state_dict(copy.deepcopy(self.initial_optimizer_state))
        self.train_loader = _train_loader(self.config, self.data, self.device, self.dist)

    def facts(self) -> dict[str, Any]:
        """What a summary records of how the run was trained."""
        return {
            "compiled": self.compiled,
            "compile_mode": self.compile_mode,
            "compile_counts": compile_counts().to_dict() if self.compiled else None,
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
            "device_name": device_name(self.device),
            "world_size": self.dist.world_size,
            "backend": self.dist.backend,
            "rank_devices": self.dist.gather_objects(device_name(self.device)),
        }

    def trained_how(self) -> dict[str, Any]:
        """What a checkpoint records so that a resume can refuse what it cannot continue."""
        return {
            "world_size": self.dist.world_size,
            "rank_batch": self.train_loader.batch_size,
            "threads": torch.get_num_threads(),
            "loader": self.config.loader,
        }


def build(
    config: TrainConfig,
    data: Dataset,
    device: torch.device,
    dist: Distributed,
    model: ModelChoice = None,
) -> Trainer:
    """The trainer of `config` on `data` (already cut to its subsets)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = Precision.choose(device, config.amp)
    factory = model_factory(model, data.num_classes, config.logit_scale, config.model, config.width)
    network = build_model(
        device, config.logit_scale, config.channels_last, config.seed, factory=factory
    )
    _initialise(network, config, data)
    if model is not None:
        check_logits(network, data.num_classes, device)
    if config.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm has no CPU kernel")
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if config.ghost_bn is not None:
        if config.batch_size // dist.world_size % config.ghost_bn:
            raise ConfigError(
                f"ghost_bn ({config.ghost_bn}) must divide each rank's batch "
                f"({config.batch_size // dist.world_size} of {dist.world_size} ranks)"
            )
        convert_to_ghost_batchnorm(network, config.ghost_bn)
    if config.freeze_bn_scale:
        freeze_bn_scales(network)
    optimizer = make_optimizer(
        network,
        lr=config.lr_maxes[0] or 0.1,  # a placeholder: the range test, then One Cycle, set it
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        groups=ParameterGroups(
            config.freeze_bn_scale,
            config.bn_bias_lr_scale,
            config.bias_decay,
            config.whitening_bias_lr_scale,
        ),
        muon=MuonSettings(config.muon_lr_scale, config.muon_momentum)
        if config.optimizer == "muon"
        else None,
    )
    mode = compile_mode_for(config.compile, config.compile_mode, device, dist)
    loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    train_forward: nn.Module = TrainForward(network, loss, precision)
    if dist.enabled:
        train_forward = data_parallel_forward(train_forward, device)
    return Trainer(
        config=config,
        device=device,
        dist=dist,
        precision=precision,
        data=data,
        train_loader=_train_loader(config, data, device, dist),
        eval_batches=EvalBatches(
            data.test, config.eval_batch_size, device, dist, data.normalisation
        ),
        model=network,
        train_forward=_maybe_compile(train_forward, mode),
        eval_forward=_maybe_compile(
            EvalForward(network, precision, config.tta, config.tta_translate), mode
        ),
        optimizer=optimizer,
        compile_mode=mode,
        factory=factory,
        model_name=model_name(model, config.model),
        initial_optimizer_state=copy.deepcopy(optimizer.state_dict()),
    )


def _maybe_compile(module: nn.Module, mode: str | None) -> nn.Module:
    return compile_model(module, mode) if mode is not None else module


def _train_loader(
    config: TrainConfig, data: Dataset, device: torch.device, dist: Distributed
) -> BatchLoader:
    # This rank's images over the configured epochs: a --time-budget run decides before its
    # plan (a loader rebuilt after it would compile inside the budget, not in the warm-up).
    images = config.epochs * len(data.train) // dist.world_size
    model_compiled = compile_mode_for(config.compile, config.compile_mode, device, dist) is not None
    options = LoaderOptions(
        batch_size=config.batch_size // dist.world_size,
        device=device,
        compile_augmentation=compile_pays(device, images, model_compiled),
        augment=True,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        normalisation=data.normalisation,
        beton_path=_beton_path(config, data),
        spec=augmentation_spec(config),
    )
    return make_loader(config.loader, data.train, options)


def augmentation_spec(config: TrainConfig) -> AugmentationSpec:
    """The training augmentation `config` asks for."""
    return AugmentationSpec(
        pad=config.crop_padding,
        cutout_size=config.cutout,
        flip_mode=config.flip,
        pad_mode=config.pad_mode,
    )


def _initialise(network: nn.Module, config: TrainConfig, data: Dataset) -> None:
    """The initial weights --whitening-init and --dirac-init ask for, over the random draw."""
    if config.whitening_init or config.dirac_init:
        initialise(network, whitening=config.whitening_init, dirac=config.dirac_init,
                   images=data.train.images, normalisation=data.normalisation)  # fmt: skip


def _beton_path(config: TrainConfig, data: Dataset) -> Path | None:
    """Where the FFCV loader finds (or writes) the training split's beton: --beton-dir, else
    a cache folder keyed by the data set's checksums (never the data folder, which may be
    shared and read-only). A subset, or data of one's own, gets a temporary beton instead."""
    if config.loader != "ffcv" or config.train_subset is not None:
        return None  # a beton holds a whole split
    spec = SPECS.get(config.dataset)
    if spec is None:  # a folder of images: no named beton
        return None
    if config.beton_dir:
        return Path(config.beton_dir) / spec.beton_names["train"]
    if data.source is None:
        return None
    return beton_cache_folder(spec) / spec.beton_names["train"]


def warm_up(trainer: Trainer, steps: int = WARM_UP_STEPS) -> float:
    """Compile (and record CUDA graphs for) the training and evaluation graphs before anything
    is timed, the range test included; then restore the initial weights and optimizer state.
    An eager CPU run only draws one batch, which compiles the torch loader's augmentation where
    that pays (`compile_pays`; compiling in the range test made it twice as slow per step).
    Returns the seconds it took."""
    start = time.perf_counter()
    if not trainer.needs_warm_up:
        batches = iter(trainer.train_loader)
        next(batches, None)
        del batches  # ends the epoch
        return time.perf_counter() - start
    context = trainer.step_context()
    with state_restored(trainer.model, trainer.optimizer):
        trainer.train_forward.train()
        batches = iter(trainer.train_loader)
        for _ in range(min(steps, len(trainer.train_loader))):
            training_step(context, *next(batches))
        del batches  # ends the warm-up's epoch
        # Every evaluation batch has one shape (the last is padded): one batch compiles it.
        first = next(iter(trainer.eval_batches))
        trainer.eval_forward.eval()
        with torch.no_grad():
            for _ in range(steps):  # CUDA-graph trees warm up, then record, then replay
                mark_step_begin()
                trainer.eval_forward(*first)
        synchronize(trainer.device)
    return time.perf_counter() - start


def measure_step(trainer: Trainer, steps: int = 2) -> float:
    """Seconds of one training step as the run will take it (the last of `steps`, so that
    allocation is not counted), its after-step work included (the weight average of --ema,
    the pull of --lookahead, timed as on a step where it pulls: at most what a step costs),
    leaving no trace on the weights or the optimizer."""
    from fastcifar.training.state import option_parts

    parts = option_parts(trainer)
    hooks = [part.after_step for part in parts.values() if hasattr(part, "after_step")]

    def after_step() -> None:  # the run's last step: every part acts on it
        for hook in hooks:
            hook(trainer.total_steps - 1)

    with state_restored(trainer.model, trainer.optimizer):
        context = trainer.step_context(after_step=after_step if hooks else None)
        trainer.train_forward.train()
        batches = iter(trainer.train_loader)
        seconds = 0.0
        for _ in range(min(steps, len(trainer.train_loader))):
            batch = next(batches)
            synchronize(trainer.device)
            start = time.perf_counter()
            training_step(context, *batch)
            synchronize(trainer.device)
            seconds = time.perf_counter() - start
        del batches
    return seconds


def find_bounds(
    trainer: Trainer, stop: StopSignals, resume_hint: str = "", limits: Limits | None = None
) -> tuple[LrBounds, RangeTestResult]:
    """The LR range test, on the loader's epoch 0 (whether or not a warm-up ran before it, so
    that the bounds never depend on compilation); a signal, or --max-time in `limits`, stops
    it at a step."""
    config, dist = trainer.config, trainer.dist
    limits = limits or Limits()
    where = " during the LR range test"
    steps = config.resolved_range_test_steps(trainer.total_steps)
    trainer.train_loader.set_epoch(0)
    start = time.perf_counter()
    result = lr_range_test(
        trainer.step_context(),
        trainer.train_loader,
        restore=trainer.model,
        start_lr=config.range_test_start_lr,
        end_lr=config.range_test_end_lr,
        steps=steps,
        lr_min_divisor=config.lr_min_divisor,
        sum_over_ranks=dist.all_reduce_sum,
        ranks=dist.world_size,
        stop_requested=lambda: stop.requested,
        interrupted=lambda: stop.interrupted(where, resume_hint),
        out_of_time=limits.out_of_time,
        time_is_up=lambda: LimitReached(f"stopped at {limits.time_limit}{where}", hint=resume_hint),
    )
    seconds = time.perf_counter() - start
    source = {
        "lr_max": result.lr_max_method,
        "lr_min": result.lr_min_method,
        "range_test_seconds": seconds,
        "range_test_steps": len(result.lrs),
        "range_test_stop": result.stop_reason,
        "seconds_per_step": seconds / len(result.lrs),
    }
    return LrBounds(result.lr_min, result.lr_max, source), result
