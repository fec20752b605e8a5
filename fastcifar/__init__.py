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

# name -> module that defines it, below this package
PUBLIC = {
    "fit": "api",
    "estimate": "api",
    "load_run": "api",
    "RunResult": "api",
    "RangeTest": "api",
    "SavedRun": "runs.saved_run",
    "RunEvaluation": "runs.inference",
    "Predictions": "runs.inference",
    "TrainConfig": "records.config",
    "RunOptions": "records.config",
    "ResNet9": "engine.model",
    "Dataset": "data.dataset",
    "as_dataset": "data.dataset",
    "load_cifar10": "data.source",
    "CifarTensorLoader": "data.loaders.torch_loader",
    "__version__": "records.provenance",  # declared there as VERSION, read by setup.cfg
}
# the command modules that are callable as their function (see find_lr.py)
COMMAND_FUNCTIONS = ("find_lr", "evaluate", "predict", "export")
__all__ = [*(name for name in PUBLIC if name != "__version__"), *COMMAND_FUNCTIONS]


def __getattr__(name: str) -> Any:
    if name in COMMAND_FUNCTIONS:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in PUBLIC:
        raise AttributeError(f"module 'fastcifar' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{PUBLIC[name]}")
    return module.VERSION if name == "__version__" else getattr(module, name)
