"""What the suite measures (the configuration matrix) and at what size (full, reduced or smoke)."""

from __future__ import annotations

from dataclasses import dataclass

from fastcifar.data.loaders import LOADER_NAMES

# The seed's kind of data path: per-sample torchvision transforms (see reference_pipeline).
REFERENCE = "reference"
# Back ends that may be missing or broken on a machine; a failure to build one skips its rows.
OPTIONAL_LOADERS = ("ffcv", "dali")
# 50,000 training images in batches of 512 with the last partial batch dropped: 97 steps.
FULL_BATCH_SIZE = 512
FULL_STEPS_PER_EPOCH = 97
FULL_EPOCH_IMAGES = FULL_STEPS_PER_EPOCH * FULL_BATCH_SIZE
RECIPE_EPOCHS = 24  # the run a timed epoch stands for


@dataclass(frozen=True)
class BenchConfig:
    """One row of the training-epoch table."""

    loader: str  # a fastcifar loader name, or REFERENCE
    amp: bool  # bf16 autocast (fp16 + GradScaler on GPUs without bf16)
    compile_mode: str | None  # None: eager
    channels_last: bool = True

    @property
    def label(self) -> str:
        return self.describe()

    def describe(self, amp_dtype: str = "") -> str:
        """Row label; `amp_dtype` (bf16 or fp16) says what AMP resolved to on the device."""
        if self.loader == REFERENCE:
            return "reference: torchvision per-sample DataLoader, fp32, NCHW, eager"
        precision = f"AMP {amp_dtype}".strip() if self.amp else "fp32"
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.loader} · {precision} · {layout} · {self.compile_mode or 'eager'}"

    @property
    def test_id(self) -> str:
        if self.loader == REFERENCE:
            return REFERENCE
        precision = "amp" if self.amp else "fp32"
        layout = "cl" if self.channels_last else "nchw"
        return f"{self.loader}-{precision}-{layout}-{self.compile_mode or 'eager'}"


REFERENCE_CONFIG = BenchConfig(REFERENCE, amp=False, compile_mode=None, channels_last=False)


def compile_modes(device_type: str, autotune: bool) -> tuple[str | None, ...]:
    """Eager plus the compile modes worth timing on this kind of device."""
    if device_type == "cuda":
        # Measured outside fastcifar, by a plain reference script of this recipe on an H200
        # (torch 2.11, one step of 512): eager bf16 4.92 ms, default 5.68 ms, reduce-overhead
        # (CUDA graphs) 3.40 ms; max-autotune-no-cudagraphs 7.06 ms after 157 s of autotuning,
        # so it is timed only on request.
        modes: tuple[str | None, ...] = (None, "default", "reduce-overhead")
        return (*modes, "max-autotune-no-cudagraphs") if autotune else modes
    # CPU: reduce-overhead adds CUDA graphs, which do not exist here, so it equals default.
    # max-autotune measured by fastcifar's suite on a 2-core EPYC with native bf16 (torch 2.14,
    # AMP bf16, batch 512, cold cache): 26 s to compile, then 1.99 s per step against 1.93 s
    # eager, so it is not worth a row.
    return (None, "default")


def config_matrix(
    device_type: str, *, autotune: bool, smoke: bool, native_amp: bool = True
) -> list[BenchConfig]:
    """Reference, then every loader x {fp32, AMP} x compile mode, then NCHW eager for contrast.

    Without native mixed precision (a CPU without bf16 instructions) AMP resolves to fp32, so
    its rows would repeat the fp32 ones: they are left out, and the report says why."""
    configs = [REFERENCE_CONFIG]
    precisions = (False, True) if native_amp else (False,)
    for loader in LOADER_NAMES:
        for amp in precisions:
            for mode in compile_modes(device_type, autotune):
                # In smoke mode compilation dominates the time and its model side does not
                # depend on the loader, so only the torch loader is compiled.
                if smoke and mode is not None and loader != "torch":
                    continue
                configs.append(BenchConfig(loader, amp, mode))
    # Is channels_last worth it? The same eager step on plain NCHW memory answers that.
    configs += [BenchConfig("torch", amp, None, channels_last=False) for amp in precisions]
    return configs


@dataclass(frozen=True)
class BenchSizes:
    train_images: int  # per training epoch
    batch_size: int
    warmup_epochs: int  # untimed for the epoch figure, reported on their own (compilation)
    timed_epochs: int
    loader_images: int  # per loader-only epoch
    loader_epochs: int  # timed loader-only epochs, after one warm-up epoch
    full: bool  # False: smoke mode, numbers only prove that the code runs

    @property
    def steps_per_epoch(self) -> int:
        return self.train_images // self.batch_size

    @property
    def reduced(self) -> bool:
        """True when epoch times are extrapolated to 97 steps of 512."""
        return self.steps_per_epoch * self.batch_size != FULL_EPOCH_IMAGES


def choose_sizes(device_type: str, full: bool) -> BenchSizes:
    if not full:
        return BenchSizes(32, 16, 1, 1, loader_images=128, loader_epochs=1, full=False)
    if device_type == "cuda":
        return BenchSizes(
            50_000, FULL_BATCH_SIZE, 1, 3, loader_images=50_000, loader_epochs=3, full=True
        )
    # CPU: a step of 512 takes 2-9 s on 2 cores, so 2 steps per epoch keep ~12 rows in minutes.
    return BenchSizes(1024, FULL_BATCH_SIZE, 1, 2, loader_images=8192, loader_epochs=3, full=True)
