"""A request served, written once for every flow: the device and the ranks started, the one
flow the request asks for, and the process group left whatever happens. The flows: training
(one run, new or resumed: single.py; several: multi.py), the LR range test alone (find_lr),
and the estimate. api.py only translates arguments into a Request.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from fastcifar.engine.lr_range_test import RangeTestResult
from fastcifar.engine.schedule import LrBounds
from fastcifar.outputs.report import Estimate
from fastcifar.records.summary import Summary
from fastcifar.runs import multi, resume, single
from fastcifar.runs.budget import TimeBudget
from fastcifar.runs.request import Request
from fastcifar.runs.setup import Setup, built, estimate_of
from fastcifar.system.distributed import from_environment, started
from fastcifar.training.trainer import warm_up


def train(request: Request) -> tuple[Summary, Path, nn.Module | None]:
    """Train what `request` asks for: its summary, its folder and, for a single run, the
    trained model (a plan's runs are in their folders)."""
    target, request = resume.target(request)
    request.check()
    config = request.config
    parallel = multi.runs_in_parallel(request.options, config, from_environment()[2])
    with started(config.device, config.batch_size, data_parallel=not parallel) as (device, dist):
        if config.runs == 1:  # a continued run's config is its record's: a plan's has several
            if target is None:
                summary, trainer, folder = single.train_one(request, device, dist)
            else:
                summary, trainer, folder = single.resume_one(target, request, device, dist)
            return summary, folder, trainer.model.eval()
        summary, _, folder = multi.train_plan(request, device, dist, parallel, target)
        return summary, folder, None


def range_test_alone(request: Request) -> tuple[LrBounds, RangeTestResult, Path]:
    """The LR range test `request` asks for, in a folder of its own (find_lr)."""
    request.check()
    config = request.config
    with started(config.device, config.batch_size, data_parallel=True) as (device, dist):
        return single.range_test_only(request, device, dist)


def cost(request: Request) -> Estimate:
    """What the runs `request` asks for would cost here, from one measured step after the
    warm-up; under --time-budget, of the epochs the run would plan (the plan said as the run
    says it). No run folder is written."""
    request.check()
    config = request.config
    with started(config.device, config.batch_size, data_parallel=True) as (device, dist):
        start = time.perf_counter()
        first_run = Setup(first_run=(config.seed, config.lr_maxes[0]))
        trainer, recorded = built(request, device, dist, first_run)
        if request.options.time_budget is not None:  # planned as open_run plans it
            TimeBudget(request.options.time_budget)(trainer, recorded, start)
        warm_up(trainer)
        return estimate_of(trainer, config.runs, config.needs_range_test)
