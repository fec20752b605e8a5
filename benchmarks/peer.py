"""`python -m benchmarks.peer`: the public record's time to 94% beside fastcifar's, on this machine,
in one invocation.

The peer is airbench94 as its author publishes it: the `airbench` package (0.1.8, PyPI; Keller
Jordan, arXiv 2404.00498), its own `train94` and `evaluate`, run unchanged on a GPU
(`--device cuda`, benchmarks/run_gpu.sh's `peer` stage), and unchanged except where it cannot
run without one on the CPU (the default). It hard-codes CUDA, so there, for this process only:
  * `.cuda()` leaves a tensor or module where it is (the CPU), CUDA events time with the CPU's
    clock and `torch.cuda.synchronize` does nothing;
  * its loaders read `cifar10/train.pt` and `test.pt`, which this module writes from the local
    CIFAR-10 in the package's own format (it would otherwise download them);
  * its weights and images are fp16 (`.half()`) as published, which a CPU runs at a crawl (a
    64-image step took 277 s on a 2-core AMX Xeon, 3.0 s in fp32): here `.half()` leaves them
    fp32 (`--peer-precision fp16` keeps the crawl). bf16 is not offered: its weights in bf16
    skip its lookahead (which updates only fp16 and fp32 tensors), and under bf16 autocast
    it trained to chance (11.8% after 4 epochs on 4,096 images, against 47.0% in fp32; not
    understood). So on the CPU both sides train in fp32 (fastcifar with `--no-amp`): the
    same arithmetic, the time a fair comparison; `--fastcifar-amp` lets fastcifar use bf16
    where the CPU has it (its own default), beside the peer's fp32.
Its training time is measured around `train94` (building its network, its whitening, its
first epoch's preprocessing and the steps: a few seconds more than the steps alone);
fastcifar's is the run's training time (its epochs; summary.json), and each side's wall time
covers training and evaluation.
Both are evaluated with flip + translate TTA, each by its own code.

fastcifar's side is `fastcifar.fit(recipe="airbench", seed=K)` on the same data (`--recipe
airbench-muon`: the Muon recipe, whose published script the package does not hold).

`--step-pairs N` times the training step alone instead (`step_pairs`): N steps of each side,
alternately on the same batches, so that what the machine does meanwhile weighs on both alike;
a run-long comparison is at the mercy of a VM whose epochs vary by several percent.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastcifar.cli import count

PEER = "airbench==0.1.8"
PEER_EPOCHS = 9.9  # its published length
PEER_BATCH = 1024
PRECISIONS = ("fp32", "fp16")
RECIPES = ("airbench", "airbench-muon")  # fastcifar's side


@dataclass(frozen=True)
class Result:
    """One training run of one side: what the comparison table shows."""

    side: str  # "airbench94 (peer)" or "fastcifar --recipe airbench" (or airbench-muon)
    seed: int
    tta_accuracy: float
    accuracy: float
    training_seconds: float
    wall_seconds: float
    training_images: int
    training_pflop: float
    precision: str


class _CpuEvent:
    """torch.cuda.Event's timing, with the CPU's clock."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.at = 0.0

    def record(self, *_: Any) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: _CpuEvent) -> float:
        return 1e3 * (end.at - self.at)


@contextlib.contextmanager
def peer_on_cpu(precision: str) -> Iterator[None]:
    """The patches (see the module docstring), undone on the way out."""
    saved = {
        (torch.Tensor, "cuda"): torch.Tensor.cuda,
        (nn.Module, "cuda"): nn.Module.cuda,
        (torch.Tensor, "half"): torch.Tensor.half,
        (nn.Module, "half"): nn.Module.half,
        (torch.cuda, "Event"): torch.cuda.Event,
        (torch.cuda, "synchronize"): torch.cuda.synchronize,
    }
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    if precision == "fp32":
        torch.Tensor.half = lambda self, *a, **k: self.float()  # type: ignore[method-assign]
        nn.Module.half = lambda self: self.float()  # type: ignore[method-assign]
    torch.cuda.Event = _CpuEvent  # type: ignore[misc,assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def write_peer_data(data: Any, folder: Path) -> Path:
    """`folder`/cifar10/{train,test}.pt in the package's format (uint8 N x 32 x 32 x 3 images,
    int64 labels, class names) from a fastcifar Dataset; returns `folder`."""
    target = folder / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", data.train), ("test", data.test)):
        payload = {
            "images": torch.from_numpy(split.images.copy()),
            "labels": torch.from_numpy(split.labels.astype("int64")),
            "classes": list(data.class_names),
        }
        torch.save(payload, target / f"{name}.pt")
    return folder


def run_peer(
    folder: Path,
    seed: int,
    precision: str,
    epochs: float = PEER_EPOCHS,
    device: str = "cpu",
    batch: int = PEER_BATCH,
) -> Result:
    """airbench94's train94 and its flip + translate TTA evaluation, in `folder` (which holds
    write_peer_data's files), on the CPU (patched, `precision`) or as published on CUDA; in
    batches of `batch` (its published 1024 unless a slice asks: train94 scales its
    hyperparameters by its loader's batch)."""
    from airbench import lib_airbench94 as peer
    from airbench import utils

    on_cpu = device == "cpu"
    patches = peer_on_cpu(precision) if on_cpu else contextlib.nullcontext()
    with patches, _working_directory(folder):
        loader_defaults = utils.CifarLoader.__init__.__defaults__
        place = "cpu" if on_cpu else loader_defaults[-1]  # its gpu=0 on CUDA
        utils.CifarLoader.__init__.__defaults__ = (*loader_defaults[:-1], place)
        try:
            torch.manual_seed(seed)
            train = utils.CifarLoader("cifar10", train=True, batch_size=batch,
                                      aug=peer.hyp["aug"], altflip=True)  # fmt: skip
            started = time.perf_counter()
            model = peer.train94(train, epochs=epochs, verbose=False)
            training = time.perf_counter() - started
            test = utils.CifarLoader("cifar10", train=False, batch_size=2000)
            tta = utils.evaluate(model, test, tta_level=2)
            plain = utils.evaluate(model, test, tta_level=0)
            wall = time.perf_counter() - started
            steps = math.ceil(len(train) * epochs)  # as train94 counts them
            images = steps * batch
        finally:
            utils.CifarLoader.__init__.__defaults__ = loader_defaults
    gflop = step_gflop_of("airbench", images)  # its network is fastcifar's airbench network
    return Result("airbench94 (peer)", seed, 100 * tta, 100 * plain, training, wall, images,
                  gflop / 1e6, precision if on_cpu else "fp16")  # fmt: skip


def run_fastcifar(
    data: Any, out: Path, seed: int, device: str = "cpu", recipe: str = "airbench", **settings: Any
) -> Result:
    """fastcifar's `recipe` with `seed` on `device`, its run folder in `out`."""
    import fastcifar

    result = fastcifar.fit(recipe=recipe, data=data, seed=seed, out=str(out), quiet=True,
                           device=device, **settings)  # fmt: skip
    summary = result.summary
    config = summary.config_of_run
    steps = (len(data.train) // config.batch_size) * config.epochs
    gflop = step_gflop_of(config.model, steps * config.batch_size, config.width)
    return Result(f"fastcifar --recipe {recipe}", seed,
                  100 * (summary.final_test_accuracy_tta or 0.0),
                  100 * (summary.final_test_accuracy or 0.0), summary.total_train_seconds or 0.0,
                  summary.wall_seconds or 0.0, steps * config.batch_size, gflop / 1e6,
                  str(summary.precision))  # fmt: skip


@dataclass(frozen=True)
class StepPairs:
    """Both sides' training step, timed alternately on the same batches: seconds a step."""

    peer: list[float]
    fastcifar: list[float]
    batch: int
    precision: str

    @staticmethod
    def median(times: list[float]) -> float:
        return statistics.median(times)

    def line(self) -> str:
        peer, ours = self.median(self.peer), self.median(self.fastcifar)
        return (
            f"one training step of {self.batch} images, {self.precision}, {len(self.peer)} pairs: "
            f"airbench94 {peer:.3f} s, fastcifar {ours:.3f} s (median): "
            f"fastcifar {ours / peer:.3f}x"
        )


def step_pairs(data: Any, pairs: int, batch_size: int = PEER_BATCH) -> StepPairs:
    """The step alone, apart from either side's loop: the peer's network (its `make_net94`,
    patched as in `run_peer`, fp32) under the SGD step its `train94` takes (label-smoothed summed
    loss, Nesterov momentum, its two parameter groups), and fastcifar's `--recipe airbench` step
    (fp32, eager), alternately on the same batches of fastcifar's loader. Neither side's
    schedule, lookahead or loader is timed; two steps of each first, untimed."""
    from airbench import lib_airbench94

    import fastcifar.api as api
    from fastcifar.engine.step import training_step
    from fastcifar.runs.setup import Setup, built
    from fastcifar.system.distributed import Distributed

    request = api.make_request(recipe="airbench", data=data, amp=False, device="cpu",
                               batch_size=batch_size, quiet=True)  # fmt: skip
    trainer, _ = built(request, torch.device("cpu"), Distributed(), Setup())
    batches = list(itertools.islice(iter(trainer.train_loader), 2))
    context = trainer.step_context()
    trainer.train_forward.train()
    with peer_on_cpu("fp32"):
        network = lib_airbench94.make_net94()
    norms = [p for k, p in network.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in network.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD([{"params": norms, "lr": 0.01}, {"params": others, "lr": 0.001}],
                                momentum=0.85, nesterov=True, weight_decay=5e-4)  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")

    def peer_step(images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = loss_fn(network(images), labels).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def our_step(images: torch.Tensor, labels: torch.Tensor) -> None:
        training_step(context, images, labels)

    times: dict[str, list[float]] = {"peer": [], "fastcifar": []}
    for index in range(2 + pairs):
        images, labels = batches[index % len(batches)]
        for side, step in (("peer", peer_step), ("fastcifar", our_step)):
            started = time.perf_counter()
            step(images, labels)
            if index >= 2:
                times[side].append(time.perf_counter() - started)
    return StepPairs(times["peer"], times["fastcifar"], batches[0][0].shape[0], "fp32")


def step_gflop_of(network: str, images: int, width: int = 64) -> float:
    from fastcifar.engine.model import network_class, step_gflop

    return step_gflop(network_class(network)(width=width), images, torch.device("cpu")) or 0.0


@contextlib.contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def table(results: list[Result], slice_flags: str = "") -> str:
    """The comparison as markdown: a row per run, then each side's mean; `slice_flags`, the
    flags that made it a slice (whose times are no comparison)."""
    head = ("| side | seed | flip + translate TTA | plain | training | wall | images trained "
            "| training PFLOP | precision |\n" + "|---" + "|---:" * 7 + "|---|")  # fmt: skip
    rows = [f"| {r.side} | {r.seed} | {r.tta_accuracy:.2f}% | {r.accuracy:.2f}% | "
            f"{r.training_seconds:.0f} s | {r.wall_seconds:.0f} s | "
            f"{r.training_images:,} | {r.training_pflop:.3f} | {r.precision} |"
            for r in results]  # fmt: skip
    return "\n".join([head, *rows, *_means(results, slice_flags)]) + "\n"


def _means(results: list[Result], slice_flags: str) -> list[str]:
    lines = []
    for side in dict.fromkeys(r.side for r in results):
        mine = [r for r in results if r.side == side]
        tta = [r.tta_accuracy for r in mine]
        spread = f" ± {statistics.stdev(tta):.2f}%" if len(tta) > 1 else ""
        seconds = statistics.mean(r.training_seconds for r in mine)
        lines.append(f"| **{side}, mean of {len(mine)}** | | {statistics.mean(tta):.2f}%{spread} "
                     f"| | {seconds:.0f} s | | | | |")  # fmt: skip
    sides = [[r.training_seconds for r in results if r.side == side]
             for side in dict.fromkeys(r.side for r in results)]  # fmt: skip
    if len(sides) == 2:  # the peer first
        ratio = statistics.mean(sides[1]) / statistics.mean(sides[0])
        caveat = (f" (a slice, {slice_flags}: the times compare only at both sides' published "
                  "lengths and batches)" if slice_flags else "")  # fmt: skip
        lines.append(f"\nfastcifar's training time is {ratio:.2f}x the peer's{caveat}.")
    return lines


def machine_facts(device: str) -> dict[str, str]:
    """What results.json says of where it ran: the device (a CPU's model, threads and vector
    unit), the versions and fastcifar's commit."""
    from benchmarks.hardware import git_commit
    from fastcifar.system.device import device_name

    return {"device": device_name(torch.device(device)), "python": sys.version.split()[0],
            "torch": torch.__version__, "peer": PEER, "commit": git_commit()}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-bin/")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for both sides' "
                        "runs, results.json and results.md")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="runs of each side (seeds 0..N-1)")
    parser.add_argument("--peer-precision", choices=PRECISIONS, default="fp32",
                        help="on the CPU, what the peer's .half() means (fp16: as published, "
                        "and a crawl)")  # fmt: skip
    parser.add_argument("--fastcifar-amp", action="store_true",
                        help="on the CPU, fastcifar in bf16 where native (default: fp32, as "
                        "the peer)")  # fmt: skip
    parser.add_argument("--train-subset", type=count, help="a slice, to try the benchmark")
    parser.add_argument("--test-subset", type=count)
    parser.add_argument("--peer-epochs", type=float, default=PEER_EPOCHS)
    parser.add_argument("--peer-batch", type=count, default=PEER_BATCH, help="the peer's batch "
                        f"(default: its published {PEER_BATCH}); for a slice's try")  # fmt: skip
    parser.add_argument("--epochs", type=count, help="fastcifar's epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=count, help="fastcifar's batch (default: the "
                        "recipe's); for a slice's try: the peer's batch stays its 1024, so "
                        "the times compare only at the default")  # fmt: skip
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default="airbench",
        help="fastcifar's side (default: airbench, the peer's own training)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: both sides on the GPU, the peer as published")  # fmt: skip
    parser.add_argument("--step-pairs", type=int, metavar="N",
                        help="instead: time N training steps of each side alternately on the "
                        "same batches (CPU, fp32) into OUT/step_pairs.json")  # fmt: skip
    args = parser.parse_args(argv)
    from fastcifar.data.catalogue import load_dataset

    data = load_dataset("cifar10", args.data_dir).subsets(args.train_subset, args.test_subset)
    precision = args.peer_precision
    args.out.mkdir(parents=True, exist_ok=False)
    if args.step_pairs:
        pairs = step_pairs(data, args.step_pairs)
        payload = {"machine": machine_facts("cpu"), "step_pairs": asdict(pairs)}
        (args.out / "step_pairs.json").write_text(json.dumps(payload, indent=1) + "\n")
        print(pairs.line())
        return
    write_peer_data(data, args.out / "peer")
    settings: dict[str, Any] = {"epochs": args.epochs} if args.epochs else {}
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    if args.device == "cpu" and not args.fastcifar_amp:
        settings["amp"] = False
    results = []
    for seed in range(args.seeds):
        results.append(run_peer(args.out / "peer", seed, precision, args.peer_epochs, args.device,
                                args.peer_batch))  # fmt: skip
        print(table(results[-1:]), end="", flush=True)
        run = args.out / f"fastcifar-seed-{seed}"
        results.append(run_fastcifar(data, run, seed, args.device, args.recipe, **settings))
        print(table(results[-1:]), end="", flush=True)
    payload = {"machine": machine_facts(args.device), "results": [asdict(r) for r in results]}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    sliced = [f"--{name.replace('_', '-')}" for name in ("train_subset", "epochs", "batch_size")
              if getattr(args, name)]  # fmt: skip
    sliced += ["--peer-epochs"] if args.peer_epochs != PEER_EPOCHS else []
    sliced += ["--peer-batch"] if args.peer_batch != PEER_BATCH else []
    (args.out / "results.md").write_text(table(results, " ".join(sliced)))
    print(table(results, " ".join(sliced)), end="")


if __name__ == "__main__":
    main()
