"""FFCV loader: reads a raw-RGB `.beton` of the split and runs the augmentation spec as FFCV
pipeline operations on CPU threads; batches are moved to CUDA by FFCV when the device is a GPU.

Pipeline: decode -> NormalizeImage (FFCV) -> SpecAugmentation (ours) -> tensor -> device.
FFCV's own RandomTranslate/RandomHorizontalFlip/Cutout place their pixels as the spec says
(offsets 0..2*pad, corners 0..size-cutout), but they cannot meet it on uint8 images, whose
integer fill can never equal the non-integer dataset mean, and they draw from numba's unseeded
per-thread RNG, so no two runs see the same augmentations. SpecAugmentation therefore works on
the normalised image (fill 0.0 is exactly the mean) with draws keyed by (seed, epoch, batch).

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

from fastcifar.augmentation import CIFAR10_MEAN, CIFAR10_STD, AugmentationSpec
from fastcifar.beton import verify_beton, write_beton
from fastcifar.data_source import CifarSplit
from fastcifar.loaders import LoaderOptions

# isort: split
# After fastcifar.beton, which turns a missing FFCV into MissingBackendError naming the extra.
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.transforms import NormalizeImage, ToDevice, ToTensor, ToTorchImage

# A batch abandoned mid-epoch leaves FFCV's producer thread blocked for up to 0.5 s (its queue
# timeout) before it sees the stop request; waiting a little longer covers one more batch.
STOP_TIMEOUT_S = 5.0


class SpecAugmentation(Operation):
    """Crop (pad-4), flip and one cutout per image on normalised float HWC batches, fill 0.0.

    Runs outside FFCV's jitted stage so that it can read the epoch the loader sets; the pixel
    work is a numba kernel compiled by FFCV's Compiler (parallel over images).
    """

    def __init__(self, spec: AugmentationSpec, seed: int) -> None:
        super().__init__()
        self.spec = spec
        self.seed = seed
        self.epoch = 0

    def draw(self, first_index: int, count: int) -> tuple[np.ndarray, ...]:
        """Seeded draws for one batch: crop row/col, flip, cutout row/col per image."""
        spec = self.spec
        generator = np.random.default_rng((self.seed, self.epoch, first_index))
        crop = generator.integers(0, spec.crop_offsets, size=(2, count))
        flip = generator.random(count) < spec.flip_probability
        cutout = generator.integers(0, spec.cutout_corners, size=(2, count))
        return crop[0], crop[1], flip, cutout[0], cutout[1]

    def generate_code(self) -> Callable:
        kernel = Compiler.compile(_crop_flip_cutout_kernel(self.spec))

        def augment(images, destination, indices):
            # Each sample occurs once per epoch, so the batch's first index names the batch.
            return kernel(images, destination, *self.draw(int(indices[0]), len(images)))

        augment.with_indices = True
        return augment

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        return (
            replace(previous_state, jit_mode=False),
            AllocationQuery(previous_state.shape, previous_state.dtype),
        )


def _crop_flip_cutout_kernel(spec: AugmentationSpec) -> Callable:
    size, pad, cut = spec.image_size, spec.pad, spec.cutout_size
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
                    inside = 0 <= source_row < size and 0 <= source_col < size
                    keep = inside and not (in_cut_rows and cut_cols[i] <= x < cut_cols[i] + cut)
                    for c in range(images.shape[3]):
                        out[i, y, x, c] = images[i, source_row, source_col, c] if keep else 0.0
        return out

    crop_flip_cutout.is_parallel = True
    return crop_flip_cutout


def _own_copy(tensor: torch.Tensor) -> torch.Tensor:
    """FFCV reuses its output buffers a few batches later, so every batch is copied out. On CPU
    numpy copies (one thread, layout kept): torch's multi-threaded clone fights FFCV's numba
    workers for the cores (30k instead of 230k img/s on 2 cores)."""
    if tensor.is_cuda:
        return tensor.clone()
    return torch.from_numpy(np.array(tensor.numpy(), copy=True, order="K"))


class CifarFfcvLoader:
    """`BatchLoader` over an FFCV beton of `split` (see the module docstring for which beton)."""

    def __init__(self, split: CifarSplit, options: LoaderOptions) -> None:
        if len(split) == 0:
            raise ValueError("cannot build a loader over an empty split")
        self.options = options
        self.batch_size = options.batch_size
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.beton_path = self._beton_for(split)
        self.augmentation = (
            SpecAugmentation(options.spec, options.seed) if options.augment else None
        )
        self.loader = Loader(
            str(self.beton_path),
            batch_size=options.batch_size,
            # As many threads as torch uses: FFCV sets torch's thread count to this number.
            num_workers=torch.get_num_threads(),
            order=OrderOption.RANDOM if options.shuffle else OrderOption.SEQUENTIAL,
            seed=options.seed,
            drop_last=options.drop_last,
            pipelines=self._pipelines(),
        )
        self._running = None  # FFCV's producer thread for the epoch in progress

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._stop_running_epoch()
        if self.augmentation is not None:
            self.augmentation.epoch = self.loader.next_epoch  # the epoch FFCV's order is for
        running = self._running = iter(self.loader)
        try:
            while True:
                if self._running is not running:
                    raise RuntimeError("this epoch was ended by a newer iteration of the loader")
                try:
                    images, labels = next(running)
                except StopIteration:
                    return
                yield _own_copy(images), _own_copy(labels.reshape(-1))
        finally:
            if self._running is running:
                self._stop_running_epoch()

    def _pipelines(self) -> dict[str, list[Operation]]:
        mean, std = np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)
        image = [SimpleRGBImageDecoder(), NormalizeImage(mean, std, np.float32)]
        if self.augmentation is not None:
            image.append(self.augmentation)
        image.append(ToTensor())
        label = [IntDecoder(), ToTensor()]
        if self.options.device.type == "cuda":
            image.append(ToDevice(self.options.device, non_blocking=True))
            label.append(ToDevice(self.options.device, non_blocking=True))
        image.append(ToTorchImage(channels_last=True))
        return {"image": image, "label": label}

    def _beton_for(self, split: CifarSplit) -> Path:
        path = self.options.beton_path
        if path is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="fastcifar-ffcv-")
            return write_beton(split, Path(self._scratch.name) / "split.beton")
        path = Path(path)
        if path.exists():
            verify_beton(path, split)
            return path
        return write_beton(split, path)

    def _stop_running_epoch(self) -> None:
        """Stop FFCV's producer thread of an unfinished epoch before another one starts: two
        producers would run numba's parallel kernels from two threads at once."""
        running, self._running = self._running, None
        if running is None:
            return
        running.terminate_event.set()
        running.join(STOP_TIMEOUT_S)
        running.close()
