"""Everything a run needs, built once from a TrainConfig: device, ranks, data, loaders, model,
the compiled training and evaluation graphs, and the optimizer.

Shared by `train`, `find_lr` and the multi-seed runner, which re-seeds one Experiment in place
between seeds so that its compiled graphs stay valid.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from fastcifar.compilation import compile_model
from fastcifar.config import TrainConfig
from fastcifar.data_source import Cifar10, default_data_dir, load_cifar10
from fastcifar.device import Precision, pick_device, synchronize
from fastcifar.distributed import Distributed, from_environment, local_device_name, setup
from fastcifar.engine import (
    StepContext,
    TrainForward,
    mark_step_begin,
    state_restored,
    training_step,
)
from fastcifar.errors import ConfigError
from fastcifar.evaluation import EvalBatches, EvalForward, Evaluation, evaluate
from fastcifar.loaders import BETON_NAMES, BatchLoader, LoaderOptions, make_loader
from fastcifar.model import ResNet9, build_model, reinitialise
from fastcifar.optimizer import make_optimizer

WARM_UP_STEPS = 3


@dataclass
class Experiment:
    config: TrainConfig  # as resolved: data_dir absolute, the seed in use
    device: torch.device
    dist: Distributed
    precision: Precision
    data: Cifar10  # train/test already cut to --train-subset/--test-subset
    train_loader: BatchLoader
    eval_batches: EvalBatches
    model: ResNet9  # the plain module: its state_dict is what gets saved
    train_forward: nn.Module  # TrainForward, wrapped in DDP and compiled as configured
    eval_forward: nn.Module  # EvalForward, compiled as configured
    optimizer: torch.optim.SGD
    compile_mode: str | None  # None: eager
    initial_optimizer_state: dict

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    @property
    def needs_warm_up(self) -> bool:
        """Compiled graphs (and, on a GPU, cuDNN's algorithm search) are paid for before
        anything is timed; an eager CPU run has nothing to warm up."""
        return self.compiled or self.device.type == "cuda"

    def step_context(self) -> StepContext:
        """A context with a fresh scaler and no LR schedule (warm-up, range test)."""
        return StepContext(self.train_forward, self.optimizer, self.precision.make_scaler())

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
        reinitialise(self.model, seed, self.config.logit_scale)
        self.optimizer.load_state_dict(copy.deepcopy(self.initial_optimizer_state))
        self.train_loader = _train_loader(self.config, self.data, self.device, self.dist)


def start_ranks(config: TrainConfig) -> tuple[torch.device, Distributed]:
    """The device of this process and, under torchrun, its place in the process group."""
    _, _, world_size = from_environment()
    if config.batch_size % world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not divide among {world_size} ranks: "
            "--batch-size is the global batch, split evenly"
        )
    device = pick_device(local_device_name(config.device))
    return device, setup(device)


def build_experiment(
    config: TrainConfig, device: torch.device | None = None, dist: Distributed | None = None
) -> Experiment:
    if device is None or dist is None:
        device, dist = start_ranks(config)
    # Rank 0 first: a download (or an extraction) happens once, not once per rank at a time.
    data = _subsets(config, dist.first_rank_first(lambda: load_cifar10(config.data_dir)))
    config = replace(config, data_dir=str(data.folder.parent.resolve()))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = Precision.choose(device, config.amp)
    model = build_model(device, config.logit_scale, config.channels_last, seed=config.seed)
    if config.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm has no CPU kernel")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(
        model,
        lr=config.lr_max or 0.1,  # a placeholder: the range test, then OneCycleLR, set the LR
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    mode = compile_mode(config, device, dist)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return Experiment(
        config=config,
        device=device,
        dist=dist,
        precision=precision,
        data=data,
        train_loader=_train_loader(config, data, device, dist),
        eval_batches=EvalBatches(data.test, config.eval_batch_size, device, dist),
        model=model,
        train_forward=_train_forward(model, loss_fn, precision, config, dist, mode),
        eval_forward=_maybe_compile(EvalForward(model, precision, config.tta), mode),
        optimizer=optimizer,
        compile_mode=mode,
        initial_optimizer_state=copy.deepcopy(optimizer.state_dict()),
    )


def compile_mode(config: TrainConfig, device: torch.device, dist: Distributed) -> str | None:
    """The torch.compile mode to use, or None for eager.

    Compiling is on by default only with CUDA: on the 2-core development CPU it did not pay
    (BENCHMARKS.md). Under DDP the default is mode "default", the combination PyTorch
    documents (DDPOptimizer splits the graph at gradient buckets); CUDA graphs with NCCL
    collectives between them have not been measured here, so they are not the default."""
    use = config.compile if config.compile is not None else device.type == "cuda"
    if not use:
        return None
    if config.compile_mode is not None:
        return config.compile_mode
    return "default" if dist.enabled else "reduce-overhead"


def _subsets(config: TrainConfig, data: Cifar10) -> Cifar10:
    train = data.train.subset(config.train_subset, "train_subset")
    return replace(data, train=train, test=data.test.subset(config.test_subset, "test_subset"))


def _train_forward(model, loss_fn, precision, config, dist, mode) -> nn.Module:
    forward: nn.Module = TrainForward(model, loss_fn, precision)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device = model_device(model)
        device_ids = [device] if device.type == "cuda" else None
        # No buffer broadcast before every forward (a collective per step): in training,
        # BatchNorm normalises with the batch's statistics; its running statistics are used
        # only by evaluation, which broadcasts rank 0's first (Experiment.evaluate), and by the
        # checkpoints, which rank 0 writes.
        no_sync = {_buffer_sync_flag(): False}
        forward = DistributedDataParallel(forward, device_ids=device_ids, **no_sync)
    return _maybe_compile(forward, mode)


def _buffer_sync_flag() -> str:
    """DDP's flag for the per-forward buffer broadcast: renamed in torch 2.14, whose old name
    warns (the GPU machines have torch 2.11)."""
    from torch.nn.parallel import DistributedDataParallel

    names = inspect.signature(DistributedDataParallel).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _maybe_compile(module: nn.Module, mode: str | None) -> nn.Module:
    return compile_model(module, mode) if mode is not None else module


def _train_loader(
    config: TrainConfig, data: Cifar10, device: torch.device, dist: Distributed
) -> BatchLoader:
    options = LoaderOptions(
        batch_size=config.batch_size // dist.world_size,
        device=device,
        augment=True,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        beton_path=_beton_path(config),
    )
    # Rank 0 first: an FFCV beton is written (or verified) once, not by every rank at a time.
    loader = dist.first_rank_first(lambda: make_loader(config.loader, data.train, options))
    steps = config.epochs * len(loader)
    if steps < 3:  # One Cycle needs a first, a peak and a last step
        raise ConfigError(
            f"{config.epochs} epoch(s) of {len(loader)} batch(es) make {steps} training steps; "
            "One Cycle needs at least 3: raise --epochs or --train-subset"
        )
    return loader


def _beton_path(config: TrainConfig) -> Path | None:
    # A beton holds a whole split; a training subset gets its own temporary one.
    if config.loader != "ffcv" or config.train_subset is not None:
        return None
    folder = Path(config.beton_dir) if config.beton_dir else default_data_dir(config.data_dir)
    return folder / BETON_NAMES["train"]


def warm_up(experiment: Experiment, steps: int = WARM_UP_STEPS) -> float:
    """Compile (and record CUDA graphs for) the training and evaluation graphs before anything
    is timed, the range test included; then restore the initial weights and optimizer state.
    An eager CPU run only draws one batch, which compiles the torch loader's augmentation (it
    made a first range test twice as slow per step). Returns the seconds it took."""
    if not experiment.needs_warm_up:
        start = time.perf_counter()
        batches = iter(experiment.train_loader)
        next(batches, None)
        del batches  # ends the epoch
        return time.perf_counter() - start
    start = time.perf_counter()
    with state_restored(experiment.model, experiment.optimizer):
        context = experiment.step_context()
        experiment.train_forward.train()
        batches = iter(experiment.train_loader)
        for _ in range(min(steps, len(experiment.train_loader))):
            training_step(context, *next(batches))
        del batches  # ends the warm-up's epoch
        # Every evaluation batch has one shape (the last is padded): one batch compiles it.
        first = next(iter(experiment.eval_batches))
        experiment.eval_forward.eval()
        with torch.no_grad():
            for _ in range(steps):  # CUDA-graph trees warm up, then record, then replay
                mark_step_begin()
                experiment.eval_forward(*first)
        synchronize(experiment.device)
    return time.perf_counter() - start
