"""Everything a run needs, built once from a TrainConfig: device, data, loaders, model, optimizer.

Shared by `train` and `find_lr` so both see exactly the same model, loader and precision.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastcifar.config import TrainConfig
from fastcifar.data_source import Cifar10, default_data_dir, load_cifar10
from fastcifar.device import Precision, pick_device, synchronize
from fastcifar.engine import StepContext, evaluate, training_step
from fastcifar.loaders import BETON_NAMES, BatchLoader, LoaderOptions, make_loader
from fastcifar.lr_range_test import RangeTestResult, lr_range_test
from fastcifar.model import ResNet9, build_model
from fastcifar.optimizer import compile_model, make_optimizer


@dataclass
class Experiment:
    config: TrainConfig
    device: torch.device
    precision: Precision
    data: Cifar10
    train_loader: BatchLoader
    test_loader: BatchLoader
    model: ResNet9  # the plain module: its state_dict is what gets saved
    runner: nn.Module  # what is called: the compiled model, or `model` itself
    optimizer: torch.optim.SGD
    loss_fn: nn.Module

    @property
    def compiled(self) -> bool:
        return self.runner is not self.model

    def step_context(self, scheduler=None) -> StepContext:
        return StepContext(
            self.runner,
            self.optimizer,
            self.loss_fn,
            self.precision,
            self.precision.make_scaler(),
            scheduler,
        )


def build_experiment(config: TrainConfig) -> Experiment:
    device = pick_device(config.device)
    data = load_cifar10(config.data_dir)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_model(device, config.logit_scale, config.channels_last)
    use_compile = config.compile if config.compile is not None else device.type == "cuda"
    return Experiment(
        config=config,
        device=device,
        precision=Precision.choose(device, config.amp),
        data=data,
        train_loader=_loader(config, data, "train", device),
        test_loader=_loader(config, data, "test", device),
        model=model,
        runner=compile_model(model, config.compile_mode) if use_compile else model,
        optimizer=make_optimizer(
            model,
            # A placeholder: the range test, then OneCycleLR, set the LR of every step.
            lr=config.lr_max or 0.1,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        ),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
    )


def _loader(config: TrainConfig, data: Cifar10, split_name: str, device) -> BatchLoader:
    training = split_name == "train"
    split = data.train.subset(config.train_subset) if training else data.test
    options = LoaderOptions(
        batch_size=config.batch_size if training else config.eval_batch_size,
        device=device,
        augment=training,
        shuffle=training,
        drop_last=training,
        seed=config.seed,
        beton_path=_beton_path(config, split_name),
    )
    return make_loader(config.loader, split, options)


def _beton_path(config: TrainConfig, split_name: str) -> Path | None:
    # A beton holds a whole split; a training subset gets its own temporary one.
    if config.loader != "ffcv" or (split_name == "train" and config.train_subset is not None):
        return None
    folder = Path(config.beton_dir) if config.beton_dir else default_data_dir(config.data_dir)
    return folder / BETON_NAMES[split_name]


def run_range_test(experiment: Experiment) -> RangeTestResult:
    config = experiment.config
    return lr_range_test(
        experiment.runner,
        experiment.optimizer,
        experiment.train_loader,
        experiment.loss_fn,
        start_lr=config.range_test_start_lr,
        end_lr=config.range_test_end_lr,
        steps=config.range_test_steps,
        precision=experiment.precision,
        lr_min_divisor=config.lr_min_divisor,
    )


def warm_up(experiment: Experiment, steps: int = 3) -> float:
    """Compile (and record CUDA graphs for) the training and evaluation graphs before timing,
    then restore the initial weights and optimizer state. Returns the seconds it took."""
    saved_model = copy.deepcopy(experiment.model.state_dict())
    saved_optimizer = copy.deepcopy(experiment.optimizer.state_dict())
    start = time.perf_counter()
    context = experiment.step_context()
    experiment.runner.train()
    batches = iter(experiment.train_loader)
    for _ in range(steps):
        training_step(context, *next(batches))
    evaluate(experiment.runner, _first_batches(experiment.test_loader, 2), experiment.precision)
    synchronize(experiment.device)
    experiment.model.load_state_dict(saved_model)
    experiment.optimizer.load_state_dict(saved_optimizer)
    return time.perf_counter() - start


def _first_batches(loader: BatchLoader, count: int) -> list:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches
