"""Device and numeric-precision choices: which device, which autocast dtype, whether to scale.

Mixed precision means the fastest precision that *this* device runs natively:
  * CUDA: bf16 where the GPU has bf16 tensor cores, else fp16 with a GradScaler;
  * CPU: bf16 only where the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16).
    Elsewhere oneDNN emulates bf16, which is far slower than fp32: on a 2-core AMD EPYC with
    AVX2 only (torch 2.14.1), one ResNet-9 step on 64 images took 20.1 s in bf16 against 1.5 s
    in fp32. There fp32 is used and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastcifar.errors import ConfigError
from fastcifar.system.caller import setting

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow its native bf16 kernels.
BF16_ISA_CAPS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX")


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given (checked to exist), else CUDA when present, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {name!r}: fastcifar runs on cpu, cuda or cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}: fastcifar runs on cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available: use "
                f"{setting('device', 'cpu', repr('cpu'))}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} does not exist: this machine has {count} GPU(s)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # FFCV's streams and every default-device call must use the chosen GPU, not GPU 0.
        torch.cuda.set_device(device)
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU {cpu_model_name()} ({threads} thread{'s' * (threads != 1)}, {cpu_capability()})"


def compute_kind(device: torch.device) -> str:
    """The kind of device a run's numbers depend on, for its provenance: the GPU's name, or the
    CPU's model, the kernels ATen dispatches to (capped by ATEN_CPU_CAPABILITY) and whether it
    runs bf16 natively (capped by ONEDNN_MAX_CPU_ISA too; it also picks Muon's Newton-Schulz
    precision). Not the thread count, which the checkpoint keeps and warns about itself."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    bf16 = "native" if cpu_bf16_support()[0] else "not native"
    return f"CPU {cpu_model_name()}, {torch.backends.cpu.get_cpu_capability()} kernels, bf16 {bf16}"


def cpu_model_name() -> str:
    """The CPU's model name as `lscpu` prints it (from /proc/cpuinfo), else the platform's."""
    name = _cpuinfo_value(("model name",))
    return name.strip() if name is not None else platform.processor() or platform.machine()


def cpu_capability() -> str:
    """What the CPU offers this workload: AVX2, AVX512, AVX512_BF16 or AMX (ATen's dispatch
    level, refined by the bf16 instructions that decide the precision unless an ISA cap keeps
    them out: an AMX CPU capped to AVX2 is named AVX2, as its kernels are; a cap that still
    allows bf16 renames nothing)."""
    base = torch.backends.cpu.get_cpu_capability()
    if _bf16_cap() is not None:
        return base
    if _cpu_flag("amx_tile", "_is_amx_tile_supported"):
        return "AMX"
    if _cpu_flag("avx512_bf16", "_is_avx512_bf16_supported"):
        return "AVX512_BF16"
    return base


def cpu_bf16_support() -> tuple[bool, str]:
    """(native bf16?, why) for this CPU in this environment.

    torch.ops.mkldnn._is_mkldnn_bf16_supported() is not the check: it accepts any AVX-512 CPU,
    where oneDNN emulates bf16 dot products. The bf16 instructions themselves are asked for,
    and the ISA caps of the environment (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) are honoured:
    a CPU capped below them runs bf16 emulated too.
    """
    capped = _bf16_cap()
    if capped is not None:
        return False, capped
    if platform.machine().lower() in ("aarch64", "arm64"):
        native = _cpu_flag("bf16", None)
        return native, "Arm CPU with BF16" if native else "Arm CPU without BF16"
    capability = cpu_capability()
    if capability in ("AMX", "AVX512_BF16"):
        return True, f"this CPU runs bf16 natively ({capability})"
    return False, f"this CPU has no native bf16 ({capability})"


def _bf16_cap() -> str | None:
    """Which ISA cap of the environment keeps native bf16 out, in words; None if none does."""
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if onednn_cap and not onednn_cap.startswith((*BF16_ISA_CAPS, "AVX10")):
        return f"ONEDNN_MAX_CPU_ISA={onednn_cap} keeps oneDNN from native bf16"
    aten_cap = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten_cap in ("default", "avx2"):
        return f"ATEN_CPU_CAPABILITY={aten_cap} keeps ATen from native bf16"
    return None


def _cpu_flag(linux_flag: str, torch_check: str | None) -> bool:
    check = getattr(torch.cpu, torch_check, None) if torch_check else None
    if check is not None:
        with contextlib.suppress(Exception):
            return bool(check())
    flags = _cpuinfo_value(("flags", "Features"))  # x86, ARM
    return flags is not None and linux_flag in flags.split()


def _cpuinfo_value(keys: tuple[str, ...]) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys` (Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith(keys):
            return line.split(":", 1)[1]
    return None


@dataclass(frozen=True)
class Precision:
    """Autocast settings for a device, and why they were chosen."""

    device_type: str
    dtype: torch.dtype | None  # None: full fp32
    reason: str = ""
    fallback_note: str = ""  # a line for the user when --amp could not be honoured

    @classmethod
    def choose(cls, device: torch.device, amp: bool | None) -> Precision:
        """`amp` True/None: the fastest native mixed precision (None stays quiet about a
        fallback); False: fp32."""
        if amp is False:
            return cls(device.type, None, "mixed precision off (--no-amp)")
        if device.type == "cuda":
            return cls._choose_cuda(device)
        native, why = cpu_bf16_support()
        if native:
            return cls(device.type, torch.bfloat16, why)
        note = f"--amp: {why}; training in fp32, which is faster here" if amp else ""
        return cls(device.type, None, f"{why}: fp32 is faster here", note)

    @classmethod
    def _choose_cuda(cls, device: torch.device) -> Precision:
        with torch.cuda.device(device):
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device)
        if native_bf16:
            return cls(device.type, torch.bfloat16, f"{name} runs bf16 natively")
        return cls(device.type, torch.float16, f"{name} has no native bf16: fp16 + GradScaler")

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None


def synchronize(device: torch.device) -> None:
    """Wait for queued work; used only at epoch boundaries, never per batch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds that `work()` takes, with all queued device work finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start
