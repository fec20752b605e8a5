"""--amp means the fastest mixed precision the device runs natively: bf16 on a CPU only with bf16
instructions (and no ISA cap below them), fp32 with one line saying why otherwise; on CUDA bf16
where the chosen GPU has it natively, else fp16 with a GradScaler."""

from __future__ import annotations

import pytest
import torch

from fastcifar.system import device
from fastcifar.system.device import Precision, cpu_bf16_support
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, exit_code

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX512_BF16")
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")


def test_a_cpu_with_bf16_instructions_trains_bf16(native_bf16_cpu):
    precision = Precision.choose(CPU, amp=True)
    assert precision.dtype == torch.bfloat16 and precision.name == "bf16"
    assert precision.reason == "this CPU runs bf16 natively (AVX512_BF16)"
    assert not precision.needs_grad_scaler and precision.fallback_note == ""


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX2", "ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from native bf16"),
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", "ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN"),
        ("ATEN_CPU_CAPABILITY", "avx2", "ATEN_CPU_CAPABILITY=avx2 keeps ATen from native bf16"),
    ],
)
def test_an_isa_cap_below_bf16_counts_as_no_native_bf16(
    native_bf16_cpu, monkeypatch, variable, value, reason
):
    monkeypatch.setenv(variable, value)
    native, why = cpu_bf16_support()
    assert not native and why.startswith(reason)


def test_a_cap_that_still_allows_bf16_keeps_it(native_bf16_cpu, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_bf16_support()[0]


def test_amp_on_a_cpu_without_bf16_falls_back_to_fp32_with_one_line(monkeypatch):
    monkeypatch.setattr(
        device, "cpu_bf16_support", lambda: (False, "this CPU has no native bf16 (AVX2)")
    )
    asked = Precision.choose(CPU, amp=True)
    assert asked.dtype is None and asked.name == "fp32"
    assert asked.fallback_note == (
        "--amp: this CPU has no native bf16 (AVX2); training in fp32, which is faster here"
    )
    assert asked.reason == "this CPU has no native bf16 (AVX2): fp32 is faster here"
    by_default = Precision.choose(CPU, amp=None)
    assert by_default.dtype is None and by_default.fallback_note == ""  # nothing was asked


def test_the_train_command_says_the_fallback_once_before_its_start_line(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(
        device, "cpu_bf16_support", lambda: (False, "this CPU has no native bf16 (AVX2)")
    )
    out = tmp_path / "run"
    assert exit_code([*TWO_EPOCHS, "--amp", "--out", str(out)], synthetic_cifar(48, 32)) == 0
    captured = capsys.readouterr()
    note = "--amp: this CPU has no native bf16 (AVX2); training in fp32, which is faster here"
    assert captured.err.count(note) == 1
    start = "precision fp32: this CPU has no native bf16 (AVX2): fp32 is faster here"
    assert start in captured.out.splitlines()[0]


def test_no_amp_is_fp32_everywhere(native_bf16_cpu):
    precision = Precision.choose(CPU, amp=False)
    assert precision.dtype is None and "--no-amp" in precision.reason


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_on_cuda_bf16_only_where_the_chosen_gpu_has_it(monkeypatch, native, dtype):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append((including_emulation, torch.cuda.current_device()))
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda _d: _Entered(monkeypatch))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d: "Fake GPU")
    precision = Precision.choose(torch.device("cuda", 1), amp=None)
    assert precision.dtype == dtype and precision.needs_grad_scaler == (dtype == torch.float16)
    assert asked == [(False, 1)]  # no emulation, asked on the chosen GPU


class _Entered:
    """Stands in for torch.cuda.device(1): the current device is 1 inside."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def __enter__(self):
        self.monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)

    def __exit__(self, *_):
        self.monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_the_device_line_names_the_cpu_capability():
    assert device.cpu_capability() in device.device_name(CPU)


@pytest.mark.parametrize("cap", [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")])
def test_a_cpu_capped_below_bf16_is_named_by_the_kernels_it_runs(monkeypatch, cap):
    """On an AMX CPU (simulated) capped to AVX2 the device line and the benchmarks' hardware
    name said AMX; they name ATen's dispatch level then, as on a CPU that has no more."""
    monkeypatch.setattr(device, "_cpu_flag", lambda *_: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert device.cpu_capability() == "AMX"
    monkeypatch.setenv(*cap)
    assert device.cpu_capability() == torch.backends.cpu.get_cpu_capability()
