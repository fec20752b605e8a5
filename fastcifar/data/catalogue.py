"""The one way a run reads the data set --dataset names: an official archive's (data/spec.py,
data/source.py) or a folder of one's own images (data/image_folder.py)."""

from __future__ import annotations

import os

from fastcifar.data.dataset import Dataset
from fastcifar.data.spec import FOLDER, SPECS
from fastcifar.errors import DataSourceError
from fastcifar.system.caller import named, setting


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """The data set `name` (cifar10, cifar100 or folder) under `data_dir`."""
    if name != FOLDER:
        from fastcifar.data.source import load_source

        return load_source(SPECS[name], data_dir, download=download)
    if not data_dir:
        raise DataSourceError(
            f"{setting('dataset', FOLDER, repr(FOLDER))} reads the folder "
            f"{named('data_dir')} names (train/<class>/ and test/<class>/ of 32x32 images): "
            "give it"
        )
    from fastcifar.data.image_folder import load_image_folder

    return load_image_folder(data_dir)
