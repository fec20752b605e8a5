"""What the benchmarks ran on: a readable hardware line, a file-name slug and the known peak FLOP/s.

Peaks are *dense* tensor-core numbers (no 2:4 sparsity) from NVIDIA's datasheets; datasheets print
the sparse figure with an asterisk, so each value below is that figure halved. fp32 training runs
its convolutions in TF32 by default (`torch.backends.cudnn.allow_tf32` is True), so fp32 rows are
compared with the TF32 peak unless TF32 is switched off. Devices not listed report "n/a".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from fastcifar.system.device import cpu_capability, cpu_model_name, device_name


@dataclass(frozen=True)
class PeakTflops:
    half: float  # bf16 / fp16 tensor cores, dense
    tf32: float  # TF32 tensor cores, dense
    fp32: float  # plain FP32 (CUDA cores)


# First match wins, so the PCIe/NVL variants come before the SXM entry of the same chip.
# Word boundaries keep "A10" from matching "A100" or "A10G", and "H200" from matching "GH200".
KNOWN_PEAKS: tuple[tuple[str, PeakTflops], ...] = (
    # H100 PCIe datasheet: BF16 1,513* / TF32 756* / FP32 51 TFLOPS.
    (r"\bH100\b.*\bPCIe\b", PeakTflops(half=756.5, tf32=378.0, fp32=51.0)),
    # H100 NVL datasheet: BF16 1,671* / TF32 835* / FP32 60 TFLOPS.
    (r"\bH100\b.*\bNVL\b", PeakTflops(half=835.5, tf32=417.5, fp32=60.0)),
    # H100 SXM datasheet: BF16 1,979* / TF32 989* / FP32 67 TFLOPS.
    (r"\bH100\b", PeakTflops(half=989.5, tf32=494.5, fp32=67.0)),
    # H200 NVL datasheet: BF16 1,671* / TF32 835* / FP32 60 TFLOPS.
    (r"\bH200\b.*\bNVL\b", PeakTflops(half=835.5, tf32=417.5, fp32=60.0)),
    # H200 SXM datasheet: BF16 1,979* / TF32 989* / FP32 67 TFLOPS.
    (r"\bH200\b", PeakTflops(half=989.5, tf32=494.5, fp32=67.0)),
    # A100 datasheet (SXM and PCIe alike): BF16 312 (624*) / TF32 156 (312*) / FP32 19.5 TFLOPS.
    (r"\bA100\b", PeakTflops(half=312.0, tf32=156.0, fp32=19.5)),
    # L40S datasheet: BF16 362.05 (733*) / TF32 183 (366*) / FP32 91.6 TFLOPS.
    (r"\bL40S\b", PeakTflops(half=362.05, tf32=183.0, fp32=91.6)),
    # A10 datasheet: BF16 125 (250*) / TF32 62.5 (125*) / FP32 31.2 TFLOPS.
    (r"\bA10\b", PeakTflops(half=125.0, tf32=62.5, fp32=31.2)),
    # L4 datasheet: BF16 121 (242*) / TF32 60 (120*) / FP32 30.3 TFLOPS.
    (r"\bL4\b", PeakTflops(half=121.0, tf32=60.0, fp32=30.3)),
)


def known_peak(name: str) -> PeakTflops | None:
    """The datasheet peaks of the device called `name`, or None when it is not in the table."""
    for pattern, peak in KNOWN_PEAKS:
        if re.search(pattern, name):
            return peak
    return None


def peak_tflops(name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s for a training precision ("fp32", "bf16" or "fp16") on device `name`."""
    peak = known_peak(name)
    if peak is None:
        return None
    if precision in ("bf16", "fp16", "bfloat16", "float16"):
        return peak.half
    return peak.tf32 if torch.backends.cudnn.allow_tf32 else peak.fp32


def describe_hardware(device: torch.device) -> str:
    """One line naming the accelerator (or CPU), the cores and the threads torch uses."""
    cores = f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        return f"{device_name(device)} (host CPU {cpu_model_name()}, {cores})"
    return f"CPU {cpu_model_name()} ({cpu_capability()}, {cores})"


def hardware_name(device: torch.device) -> str:
    """The name the peak table and result files are keyed by."""
    if device.type == "cuda":
        return device_name(device)
    # The capability is part of the name: two CPUs of one model name can differ in it (AVX2
    # only, or AVX-512 with bf16), and with it the speed by a factor of several.
    return f"cpu {cpu_model_name()} {cpu_capability()} {os.cpu_count()} cores"


def slug(text: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `nvidia-h100-80gb-hbm3`, safe in a file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def load_average() -> float | None:
    """1-minute load average: above the core count, other work competed with the timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def git_commit() -> str:
    """Short commit of the source, marked "+dirty" when files differ from it; from git, or
    where there is none, from $FASTCIFAR_COMMIT or .provenance.json
    (fastcifar.records.provenance)."""
    from fastcifar.records.provenance import describe_commit, source_commit

    return describe_commit(source_commit())
