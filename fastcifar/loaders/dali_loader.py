"""NVIDIA DALI loader: a DALI pipeline fed from the split's uint8 arrays by an external source,
with DALI operators for the augmentation spec; yields torch tensors via DALIGenericIterator.

On a CUDA device the pipeline runs its operators on that GPU (only the uint8 batch crosses
PCIe); otherwise it is a CPU-only pipeline (`device_id=None`), which is what CI exercises.
Normalisation comes first so that padding and cutout can fill with 0.0, exactly the dataset
mean, instead of an integer near it. Draws come from DALI's RNG seeded with `options.seed`;
the order of epoch e is a permutation seeded with (seed, e).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastcifar.augmentation import CIFAR10_MEAN, CIFAR10_STD, AugmentationSpec
from fastcifar.data_source import CifarSplit
from fastcifar.loaders import LoaderOptions, MissingBackendError

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.pipeline import DataNode, Pipeline
    from nvidia.dali.plugin.pytorch import DALIGenericIterator
except ImportError as error:
    raise MissingBackendError(
        f"NVIDIA DALI is not importable ({error}): pip install .[dali]"
    ) from error

# Batches DALI prepares ahead of the consumer; an abandoned epoch costs at most this many.
PREFETCH = 2


class EpochSource:
    """External source: batch `info.iteration` of epoch `info.epoch_idx`, in that epoch's order.

    Raising StopIteration ends DALI's epoch; `end_epoch` ends the current one early so that an
    abandoned epoch can be drained in a few batches instead of run to its end.
    """

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        self.images, self.labels = split.images, split.labels
        self.options = options
        self.epoch = -1  # the epoch of the latest call
        self.ended_epoch = -1
        self._order: tuple[int, np.ndarray] | None = None

    def __call__(self, info: types.BatchInfo) -> tuple[np.ndarray, np.ndarray]:
        self.epoch = info.epoch_idx
        start = info.iteration * self.options.batch_size
        stop = min(start + self.options.batch_size, len(self.labels))
        partial = stop - start < self.options.batch_size
        if start >= stop or (partial and self.options.drop_last) or self.epoch == self.ended_epoch:
            raise StopIteration
        indices = self.order(self.epoch)[start:stop]
        return self.images[indices], self.labels[indices]

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            count = len(self.labels)
            if self.options.shuffle:
                order = np.random.default_rng((self.options.seed, epoch)).permutation(count)
            else:
                order = np.arange(count)
            self._order = (epoch, order)
        return self._order[1]

    def end_epoch(self) -> None:
        self.ended_epoch = self.epoch


def augment(images: DataNode, spec: AugmentationSpec) -> DataNode:
    """The spec on normalised HWC images: pad-and-crop, flip, one cutout square, fill 0."""
    shift = list(range(-spec.pad, spec.pad + 1))  # crop offset 0..2*pad, minus the padding
    start = fn.random.uniform(values=shift, shape=[2], dtype=types.INT32)
    size = [spec.image_size, spec.image_size]
    images = fn.slice(
        images,
        start=start,
        shape=size,
        axis_names="HW",
        out_of_bounds_policy="pad",
        fill_values=0.0,
    )
    images = fn.flip(images, horizontal=fn.random.coin_flip(probability=spec.flip_probability))
    corners = [float(c) for c in range(spec.cutout_corners)]  # the square stays inside
    corner = fn.random.uniform(values=corners, shape=[2])
    cutout = [float(spec.cutout_size)] * 2
    return fn.erase(images, anchor=corner, shape=cutout, axis_names="HW", fill_value=0.0)


def build_pipeline(source: EpochSource, options: LoaderOptions) -> Pipeline:
    on_gpu = options.device.type == "cuda"
    device_id = None
    if on_gpu:
        device_id = options.device.index
        if device_id is None:
            device_id = torch.cuda.current_device()

    @pipeline_def(
        batch_size=options.batch_size,
        num_threads=torch.get_num_threads(),
        device_id=device_id,
        seed=options.seed,
        prefetch_queue_depth=PREFETCH,
        exec_dynamic=True,
    )
    def cifar_pipeline():
        images, labels = fn.external_source(
            source=source, batch_info=True, num_outputs=2, layout=["HWC", ""]
        )
        if on_gpu:
            images, labels = images.gpu(), labels.gpu()
        images = fn.crop_mirror_normalize(
            images,
            mean=list(CIFAR10_MEAN),
            std=list(CIFAR10_STD),
            dtype=types.FLOAT,
            output_layout="HWC",
        )
        if options.augment:
            images = augment(images, options.spec)
        return images, labels

    return cifar_pipeline()


class CifarDaliLoader:
    """`BatchLoader` over `split` through a DALI pipeline (CPU-only or on options.device)."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        if len(split) == 0:
            raise ValueError("cannot build a loader over an empty split")
        self.options = options
        self.batch_size = options.batch_size
        self.examples = len(split)
        self.source = EpochSource(split, options)
        self.iterator = None  # DALI refuses a pipeline without a single batch
        if len(self) > 0:
            pipeline = build_pipeline(self.source, options)
            pipeline.build()
            self.iterator = DALIGenericIterator(pipeline, ["images", "labels"], auto_reset=True)
        self._running: object | None = None  # a token naming the epoch in progress

    def __len__(self) -> int:
        return self.options.batches_per_epoch(self.examples)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.iterator is None:
            return
        self._end_running_epoch()
        running = self._running = object()
        finished = False
        try:
            while True:
                if self._running is not running:
                    raise RuntimeError("this epoch was ended by a newer iteration of the loader")
                try:
                    (batch,) = next(self.iterator)
                except StopIteration:
                    finished = True
                    return
                # HWC memory viewed as NCHW: exactly the channels_last layout.
                yield batch["images"].permute(0, 3, 1, 2), batch["labels"]
        finally:
            if self._running is running:
                self._running = None
                if not finished:
                    self._drain()

    def _end_running_epoch(self) -> None:
        if self._running is not None:
            self._running = None
            self._drain()

    def _drain(self) -> None:
        """End DALI's current epoch early: the source stops, the prefetched batches are
        discarded, and auto_reset readies the next epoch."""
        self.source.end_epoch()
        for _ in self.iterator:
            pass
