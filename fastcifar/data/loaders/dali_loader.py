"""NVIDIA DALI loader: a DALI pipeline fed from the split's uint8 arrays by an external source,
with DALI operators applying the epoch's augmentation draws; yields torch tensors via
DALIGenericIterator.

On a CUDA device the pipeline runs its operators on that GPU (only the uint8 batch crosses
PCIe, and it is normalised there); otherwise it is a CPU-only pipeline (`device_id=None`),
which is what CI exercises. Normalisation comes first so that padding and cutout can fill with
0.0, exactly the dataset mean, instead of an integer near it.

The order and the draws come from `LoaderOptions.epoch` (the same for every back end), passed
to the operators as per-sample arguments instead of DALI's own RNG: a resumed run and every
rank see exactly the epoch they would have seen. Ranks are sharded by that order as well
(`rank_order`); DALI's `shard_id`/`num_shards` belong to its file readers, which an external
source does not use.

The batches are gathered by a producer thread of the source, not in the training thread
(see `EpochSource`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from fastcifar.data.augmentation import AugmentationSpec
from fastcifar.data.dataset import CifarSplit
from fastcifar.data.loaders.base import EpochCounter, LoaderOptions
from fastcifar.errors import MissingBackendError

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.pipeline import DataNode, Pipeline
    from nvidia.dali.plugin.pytorch import DALIGenericIterator
except ImportError as error:
    raise MissingBackendError(
        f"NVIDIA DALI is not importable ({error}): pip install -e '.[dali]'"
    ) from error

# Batches DALI prepares ahead of the consumer; an abandoned epoch costs at most this many.
PREFETCH = 2
READY_BATCHES = 4  # gathered ahead by the source's producer thread


class EpochSource:
    """External source: batch `first + info.iteration` of the epoch set by `begin`.

    A producer thread gathers the batches ahead into a small queue: NumPy's gather releases the
    GIL (two threads gathered 1.8x as fast as one on the 2-core development CPU, 0.15-0.2 ms per
    batch of 512), so the gather overlaps with the training step instead of running between
    steps in the training thread. Raising StopIteration ends DALI's epoch; `end_epoch` ends the
    current one early so that an abandoned epoch is drained in a few batches.
    """

    def __init__(self, split: CifarSplit, options: LoaderOptions, batches: int) -> None:
        self.images, self.labels = split.images, split.labels
        self.options, self.batches = options, batches
        self.ended = threading.Event()
        self.ended.set()
        self.ready: queue.Queue = queue.Queue(maxsize=READY_BATCHES)
        self.producer: threading.Thread | None = None

    def begin(self, epoch: int, first: int) -> None:
        self.end_epoch()
        draws, order = self.options.epoch(len(self.labels), epoch)
        # DALI's slice start is relative to the image it is given (the producer's reflected
        # padding is part of it, the mean padding is not); its erase anchor is a float.
        start = 0 if self.options.spec.reflect else self.options.spec.pad
        per_sample = [
            np.stack([draws.crop_row, draws.crop_col], axis=1).astype(np.int32) - start,
            draws.flip.astype(np.int32),
            np.stack([draws.cutout_row, draws.cutout_col], axis=1).astype(np.float32),
        ]
        self.ended.clear()
        self.ready = queue.Queue(maxsize=READY_BATCHES)
        self.producer = threading.Thread(
            target=self._produce, args=(order, per_sample, first, self.ready), daemon=True
        )
        self.producer.start()

    def _produce(self, order: np.ndarray, per_sample: list, first: int, ready: queue.Queue) -> None:
        size = self.options.batch_size
        for batch in range(first, self.batches):
            indices = order[batch * size : (batch + 1) * size]
            outputs = [self._pixels(indices), self.labels[indices]]
            if self.options.augment:
                outputs += [draw[indices] for draw in per_sample]
            if not self._put(ready, outputs):
                return
        self._put(ready, None)  # the end of the epoch

    def _pixels(self, indices: np.ndarray) -> np.ndarray:
        pixels = np.take(self.images, indices, axis=0)
        spec = self.options.spec
        if self.options.augment and spec.reflect and spec.pad:
            # DALI's slice pads only with a constant: the mirrored border is added here.
            border = ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad), (0, 0))
            pixels = np.pad(pixels, border, mode="reflect")
        return pixels

    def _put(self, ready: queue.Queue, item: object) -> bool:
        while not self.ended.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __call__(self, info: types.BatchInfo) -> list[np.ndarray]:
        if self.ended.is_set():
            raise StopIteration
        outputs = self.ready.get()
        if outputs is None:
            raise StopIteration
        return outputs

    def end_epoch(self) -> None:
        self.ended.set()
        if self.producer is not None:
            self.producer.join()
            self.producer = None


def augment(images: DataNode, draws: list[DataNode], spec: AugmentationSpec) -> DataNode:
    """The spec on normalised HWC images: pad-and-crop (the reflected padding is already part
    of the images), flip, one cutout square, fill 0."""
    start, flip, corner = draws
    size = [spec.image_size, spec.image_size]
    images = fn.slice(
        images,
        start=start,
        shape=size,
        axis_names="HW",
        out_of_bounds_policy="pad",
        fill_values=0.0,
    )
    images = fn.flip(images, horizontal=flip)
    cutout = [float(spec.cutout_size)] * 2
    return fn.erase(images, anchor=corner, shape=cutout, axis_names="HW", fill_value=0.0)


def build_pipeline(source: EpochSource, options: LoaderOptions) -> Pipeline:
    on_gpu = options.device.type == "cuda"
    device_id = None
    if on_gpu:
        device_id = options.device.index
        if device_id is None:
            device_id = torch.cuda.current_device()
    outputs = 5 if options.augment else 2

    @pipeline_def(
        batch_size=options.batch_size,
        num_threads=torch.get_num_threads(),
        device_id=device_id,
        seed=options.seed,
        prefetch_queue_depth=PREFETCH,
        exec_dynamic=True,
    )
    def cifar_pipeline():
        images, labels, *draws = fn.external_source(
            source=source,
            batch_info=True,
            num_outputs=outputs,
            layout=["HWC"] + [""] * (outputs - 1),
        )
        if on_gpu:
            images, labels = images.gpu(), labels.gpu()
        images = fn.crop_mirror_normalize(
            images,
            mean=list(options.normalisation.mean),
            std=list(options.normalisation.std),
            dtype=types.FLOAT,
            output_layout="HWC",
        )
        if options.augment:
            images = augment(images, draws, options.spec)
        return images, labels

    return cifar_pipeline()


class CifarDaliLoader:
    """`BatchLoader` over `split` through a DALI pipeline (CPU-only or on options.device)."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        self.options = options
        self.batch_size = options.batch_size
        self.examples = len(split)
        self.counter = EpochCounter()
        self.source = EpochSource(split, options, len(self))
        self.iterator = None  # DALI refuses a pipeline without a single batch
        if len(self) > 0:
            pipeline = build_pipeline(self.source, options)
            pipeline.build()
            self.iterator = DALIGenericIterator(
                pipeline, ["images", "labels"], auto_reset=False, prepare_first_batch=False
            )
        self._started = False  # DALI needs a reset() between epochs, not before the first
        self._running: object | None = None  # a token naming the epoch in progress

    def __len__(self) -> int:
        return self.options.batches_per_epoch(self.examples)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.counter.set_epoch(epoch, skip_batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = self.counter.start()
        if self.iterator is None:
            return
        self._end_running_epoch()
        self.source.begin(epoch, first)
        if self._started:
            self.iterator.reset()
        self._started = True
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
        """End DALI's current epoch early: the source stops and the prefetched batches are
        discarded; the next epoch's reset() starts afresh."""
        self.source.end_epoch()
        for _ in self.iterator:
            pass
