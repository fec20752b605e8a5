"""What --bn-reestimate N would have changed for a finished run, without training it again: the
run's model.pt evaluated in fp32 (flip + translate TTA) as saved, then with its BatchNorm
statistics re-estimated over N training batches of the epoch after its last (the training
augmentation, bf16 where the CPU runs it natively: what the option does at the end of a run).

    python -m benchmarks.reestimate_saved_run RUN_DIR [N ...] [--data-dir D]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

import fastcifar
from fastcifar.data.catalogue import load_dataset
from fastcifar.data.loaders import LoaderOptions, make_loader
from fastcifar.engine.evaluation import evaluate_split
from fastcifar.system.device import Precision
from fastcifar.training.bn_reestimate import BatchNormReestimate
from fastcifar.training.trainer import augmentation_spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reestimate_saved_run",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("run_dir")
    parser.add_argument("batches", nargs="*", type=int, default=[20])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    saved = fastcifar.load_run(args.run_dir)
    config, model, device = saved.config, saved.model, torch.device("cpu")
    data = load_dataset(config.dataset, args.data_dir or config.data_dir)

    def score(what: str) -> None:
        start = time.perf_counter()
        result = evaluate_split(model, data.test, device, 1000, True, data.normalisation, True)
        seconds = time.perf_counter() - start
        print(f"{what}: {100 * result.plain.accuracy:.2f}%, flip + translate TTA "
              f"{100 * result.tta.accuracy:.2f}% ({seconds:.0f} s)")  # fmt: skip

    score("as saved")
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    options = LoaderOptions(
        batch_size=config.batch_size, device=device, augment=True, shuffle=True, drop_last=True,
        seed=config.seed, normalisation=data.normalisation,
        spec=augmentation_spec(config),
    )  # fmt: skip
    loader = make_loader("torch", data.train, options)
    for count in args.batches:
        model.load_state_dict(weights)
        trainer = SimpleNamespace(model=model, train_loader=loader, config=config,
                                  precision=Precision.choose(device, None))  # fmt: skip
        BatchNormReestimate(trainer, count).end_of_epoch(config.epochs)
        model.eval()
        score(f"BatchNorm statistics re-estimated over {count} batches")


if __name__ == "__main__":
    main()
