"""fastcifar: a fast, honest trainer for the DAWNBench "custom ResNet" (ResNet-9) on CIFAR-10.

From Python:

    import fastcifar
    result = fastcifar.fit(epochs=2, train_subset=2048, batch_size=128, device="cpu")
    result.accuracy, result.folder, result.model

Everything here is imported when first used, so that `import fastcifar` (and every command's
--help) stays fast: torch is loaded by the first call that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# name -> module that defines it
PUBLIC = {
    "fit": "fastcifar.api",
    "estimate": "fastcifar.api",
    "load_run": "fastcifar.api",
    "RunResult": "fastcifar.api",
    "RangeTest": "fastcifar.api",
    "SavedRun": "fastcifar.saved_run",
    "TrainConfig": "fastcifar.config",
    "RunOptions": "fastcifar.config",
    "ResNet9": "fastcifar.model",
    "Dataset": "fastcifar.dataset",
    "as_dataset": "fastcifar.dataset",
    "load_cifar10": "fastcifar.data_source",
    "CifarTensorLoader": "fastcifar.loaders.torch_loader",
}
__all__ = [*PUBLIC, "find_lr"]


def __getattr__(name: str) -> Any:
    if name == "find_lr":  # the command module, callable as the function (see find_lr.py)
        return importlib.import_module("fastcifar.find_lr")
    if name not in PUBLIC:
        raise AttributeError(f"module 'fastcifar' has no attribute {name!r}")
    return getattr(importlib.import_module(PUBLIC[name]), name)
