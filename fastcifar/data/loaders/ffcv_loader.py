"""FFCV loader: reads a raw-RGB `.beton` of the split; FFCV's CPU threads apply the epoch's
augmentation draws to the uint8 images, and only uint8 crosses to the device, where the batch
is normalised.

Pipeline: decode -> SpecAugmentation (ours, numba, uint8 RGB -> uint8 RGB + keep mask) ->
tensor -> device -> normalise, fill 0.0 where the mask says padding (unless it reflects) or
cutout (exactly the dataset mean) -> channels_last. Moving 4 bytes per pixel (RGB + mask)
instead of 12 (float32 RGB) cuts the copy to a third; normalising on the device also replaces
the copy of FFCV's reused output buffer that the batch needed before.

FFCV's own RandomTranslate/RandomHorizontalFlip/Cutout cannot meet the spec: their integer
fill can never equal the non-integer dataset mean, and they draw from numba's unseeded
per-thread RNG. The sample order is ours as well (`SharedOrder`): FFCV's distributed mode is
torch's DistributedSampler, which pads an epoch by repeating samples, while `rank_order`
splits each global batch exactly, as the other back ends do.

Which beton: `options.beton_path` must hold exactly this split's examples (checked on every
construction; written there if missing). Without it the split is written to a beton in a
temporary folder (under $TMPDIR) that is deleted with the loader.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fastcifar.data.augmentation import DRAW_NAMES, AugmentationSpec
from fastcifar.data.dataset import CifarSplit
from fastcifar.data.loaders.base import EpochCounter, LoaderOptions
from fastcifar.data.loaders.beton import beton_for, write_beton
from fastcifar.data.normalisation import normalise

# isort: split
# After fastcifar.data.loaders.beton, which turns a missing FFCV into MissingBackendError naming
# the extra.
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.transforms import ToDevice, ToTensor
from ffcv.traversal_order.base import TraversalOrder

# A batch abandoned mid-epoch leaves FFCV's producer thread blocked for up to 0.5 s (its queue
# timeout) before it sees the stop request; waiting a little longer covers one more batch.
STOP_TIMEOUT_S = 5.0


class SharedOrder(TraversalOrder):
    """FFCV traversal order = this rank's order of `LoaderOptions.epoch` (see module docstring).

    FFCV instantiates a custom order by calling the object it was given with the loader."""

    def __init__(self, options: LoaderOptions, count: int) -> None:
        self.options, self.count = options, count
        self.drawn: tuple[int, np.ndarray] | None = None  # (epoch, order) the loader drew

    def __call__(self, loader: Loader) -> SharedOrder:
        super().__init__(loader)
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        if self.drawn is not None and self.drawn[0] == epoch:
            return self.drawn[1]
        return self.options.epoch(self.count, epoch)[1]


class SpecAugmentation(Operation):
    """Applies the epoch's draws (crop, flip, cutout per sample index) to uint8 HWC images and
    appends a keep mask channel: 1 for a real pixel, 0 for padding or cutout.

    Runs outside FFCV's jitted stage so that it can read the epoch's draws; the pixel work is a
    numba kernel compiled by FFCV's Compiler (parallel over images).
    """

    def __init__(self, spec: AugmentationSpec) -> None:
        super().__init__()
        self.spec = spec
        self.draws: list[np.ndarray] = []  # set for each epoch: DRAW_NAMES arrays

    def generate_code(self) -> Callable:
        kernel = Compiler.compile(_crop_flip_cutout_kernel(self.spec))

        def augment(images, destination, indices):
            return kernel(images, destination, *(draw[indices] for draw in self.draws))

        augment.with_indices = True
        return augment

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        height, width, _ = previous_state.shape
        shape = (height, width, 4)
        return (
            replace(previous_state, jit_mode=False, shape=shape),
            AllocationQuery(shape, np.dtype("uint8")),
        )


def _crop_flip_cutout_kernel(spec: AugmentationSpec) -> Callable:
    size, pad, cut, reflect = spec.image_size, spec.pad, spec.cutout_size, spec.reflect
    image_range = Compiler.get_iterator()  # prange when FFCV runs more than one thread

    def crop_flip_cutout(images, out, crop_rows, crop_cols, flips, cut_rows, cut_cols):
        for i in image_range(images.shape[0]):
            for y in range(size):
                source_row = crop_rows[i] - pad + y
                in_cut_rows = cut_rows[i] <= y < cut_rows[i] + cut
                for x in range(size):
                    # Output column x of a flipped crop reads crop column size-1-x.
                    crop_col = size - 1 - x if flips[i] else x
                    source_col = crop_cols[i] - pad + crop_col
                    row, col = source_row, source_col
                    if reflect:  # the padding mirrors the image: -1 reads 1, size reads size-2
                        row = -row if row < 0 else min(row, 2 * (size - 1) - row)
                        col = -col if col < 0 else min(col, 2 * (size - 1) - col)
                    inside = 0 <= row < size and 0 <= col < size
                    keep = inside and not (in_cut_rows and cut_cols[i] <= x < cut_cols[i] + cut)
                    for c in range(3):
                        out[i, y, x, c] = images[i, row, col, c] if inside else 0
                    out[i, y, x, 3] = 1 if keep else 0
        return out

    crop_flip_cutout.is_parallel = True
    return crop_flip_cutout


class CifarFfcvLoader:
    """`BatchLoader` over an FFCV beton of `split` (see the module docstring for which beton)."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        self.options = options
        self.batch_size = options.batch_size
        self.count = len(split)
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.beton_path = self._beton_for(split)
        self.augmentation = SpecAugmentation(options.spec) if options.augment else None
        device = options.device
        self.mean, self.inv_std = options.normalisation.on(device)
        self.counter = EpochCounter()
        self.order = SharedOrder(options, self.count)
        self.loader = Loader(
            str(self.beton_path),
            batch_size=options.batch_size,
            # As many threads as torch uses: FFCV sets torch's thread count to this number.
            num_workers=torch.get_num_threads(),
            order=self.order,
            drop_last=options.drop_last,
            pipelines=self._pipelines(),
        )
        self._running = None  # FFCV's producer thread for the epoch in progress

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.counter.set_epoch(epoch, skip_batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._stop_running_epoch()
        epoch, first = self.counter.start()
        self.loader.next_epoch = epoch  # the epoch FFCV's order (SharedOrder) is drawn for
        draws, order = self.options.epoch(self.count, epoch)  # once, for FFCV's order too
        self.order.drawn = (epoch, order)
        if self.augmentation is not None:
            self.augmentation.draws = [getattr(draws, name) for name in DRAW_NAMES]
        running = self._running = iter(self.loader)
        try:
            for batch in range(len(self)):
                if self._running is not running:
                    raise RuntimeError("this epoch was ended by a newer iteration of the loader")
                try:
                    pixels, labels = next(running)
                except StopIteration:
                    return
                if batch >= first:  # FFCV cannot start mid-epoch: earlier batches are skipped
                    yield self._batch(pixels, labels)
        finally:
            if self._running is running:
                self._stop_running_epoch()

    def _batch(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Both outputs are new tensors: FFCV reuses its buffers a few batches later.
        keep = pixels[..., 3] if self.augmentation is not None else None
        images = normalise(pixels[..., :3], self.mean, self.inv_std, keep)
        return images, labels.reshape(-1).to(torch.int64, copy=True)

    def _pipelines(self) -> dict[str, list[Operation]]:
        image: list[Operation] = [SimpleRGBImageDecoder()]
        if self.augmentation is not None:
            image.append(self.augmentation)
        image.append(ToTensor())
        label: list[Operation] = [IntDecoder(), ToTensor()]
        if self.options.device.type == "cuda":
            image.append(ToDevice(self.options.device, non_blocking=True))
            label.append(ToDevice(self.options.device, non_blocking=True))
        return {"image": image, "label": label}

    def _beton_for(self, split: CifarSplit) -> Path:
        path = self.options.beton_path
        if path is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="fastcifar-ffcv-")
            return write_beton(split, Path(self._scratch.name) / "split.beton")
        return beton_for(split, path)

    def close(self) -> None:
        """End the epoch in progress, if any (a loader about to be replaced)."""
        self._stop_running_epoch()

    def _stop_running_epoch(self) -> None:
        """Stop FFCV's producer thread of an unfinished epoch before another one starts: two
        producers would run numba's parallel kernels from two threads at once."""
        running, self._running = self._running, None
        if running is None:
            return
        running.terminate_event.set()
        running.join(STOP_TIMEOUT_S)
        running.close()
