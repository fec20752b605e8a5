"""Device and numeric-precision choices: which device, which autocast dtype, whether to scale."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given (checked to exist), else CUDA when present, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available: use --device cpu")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Precision:
    """Autocast settings: bf16 where the device supports it (no loss scaling needed), else fp16."""

    device_type: str
    dtype: torch.dtype | None  # None: full fp32

    @classmethod
    def choose(cls, device: torch.device, amp: bool) -> Precision:
        if not amp:
            return cls(device.type, None)
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return cls(device.type, torch.float16)
        return cls(device.type, torch.bfloat16)

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
