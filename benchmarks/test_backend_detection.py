"""A broken optional back end skips its rows, unless CI requires every back end to work."""

from __future__ import annotations

import pytest

from benchmarks.runner import skip_if_backend_broken


def test_a_broken_optional_loader_is_skipped_with_its_reason(monkeypatch) -> None:
    monkeypatch.delenv("FASTCIFAR_REQUIRE_BACKENDS", raising=False)
    expected = "dali loader does not work here: OSError: libcuda.so not found$"
    with pytest.raises(pytest.skip.Exception, match=expected), skip_if_backend_broken("dali"):
        raise OSError("libcuda.so not found\nsecond line")


def test_a_broken_torch_loader_fails(monkeypatch) -> None:
    monkeypatch.delenv("FASTCIFAR_REQUIRE_BACKENDS", raising=False)
    with pytest.raises(RuntimeError), skip_if_backend_broken("torch"):
        raise RuntimeError("bug")


def test_required_backends_fail_instead_of_skipping(monkeypatch) -> None:
    monkeypatch.setenv("FASTCIFAR_REQUIRE_BACKENDS", "1")
    with pytest.raises(ImportError), skip_if_backend_broken("ffcv"):
        raise ImportError("no ffcv")
