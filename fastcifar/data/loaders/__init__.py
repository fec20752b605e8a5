"""Batch loaders: one interface (`loaders.base`), three back ends (torch-native, FFCV, DALI),
built by name. Every back end serves the same samples with the same augmentation draws; see
`loaders.base` for the contract.
"""

from __future__ import annotations

from fastcifar.data import LOADER_NAMES
from fastcifar.data.dataset import CifarSplit
from fastcifar.data.loaders.base import BatchLoader, EpochCounter, LoaderOptions, compile_pays
from fastcifar.errors import MissingBackendError

__all__ = [
    "LOADER_NAMES",
    "BatchLoader",
    "EpochCounter",
    "LoaderOptions",
    "MissingBackendError",
    "compile_pays",
    "make_loader",
]


def make_loader(name: str, split: CifarSplit, options: LoaderOptions) -> BatchLoader:
    """Build the named back end over `split`."""
    if len(split) == 0:
        raise ValueError("cannot build a loader over an empty split")
    if name == "torch":
        from fastcifar.data.loaders.torch_loader import CifarTensorLoader

        return CifarTensorLoader(split, options)
    if name == "ffcv":
        from fastcifar.data.loaders.ffcv_loader import CifarFfcvLoader

        return CifarFfcvLoader(split, options)
    if name == "dali":
        from fastcifar.data.loaders.dali_loader import CifarDaliLoader

        return CifarDaliLoader(split, options)
    raise ValueError(f"unknown loader {name!r}: choose one of {', '.join(LOADER_NAMES)}")
