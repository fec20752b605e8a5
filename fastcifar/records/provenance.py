"""Where a number came from: the source commit (with or without git on the machine), the GPU
driver, and the versions of what ran. Recorded in every summary and every benchmark result.

The commit comes from, in order: $FASTCIFAR_COMMIT (and $FASTCIFAR_DIRTY); `git` itself; the
file `.provenance.json` beside the package, written by `python -m benchmarks.stamp` before a
source tree is copied to a machine without git (git first, so that a stamp left behind on the
development machine never outlives the commit it names); else "unknown".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The package version (setup.cfg reads it from here; fastcifar.__version__ is this).
VERSION = "0.2.0"
PROVENANCE_FILE = Path(__file__).resolve().parents[1] / ".provenance.json"
NVIDIA_VERSION = Path("/proc/driver/nvidia/version")


def source_commit(root: Path = PROVENANCE_FILE.parent) -> dict[str, Any]:
    """{"commit", "dirty", "from"}: the commit of the source that runs, and how it is known."""
    if os.environ.get("FASTCIFAR_COMMIT"):
        dirty = os.environ.get("FASTCIFAR_DIRTY", "").lower() in ("1", "true", "yes")
        return {"commit": os.environ["FASTCIFAR_COMMIT"], "dirty": dirty, "from": "environment"}
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is not None:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        return {"commit": commit, "dirty": bool(status), "from": "git"}
    stamp = root / PROVENANCE_FILE.name
    try:
        values = json.loads(stamp.read_text())
        return {"commit": str(values["commit"]), "dirty": bool(values["dirty"]), "from": stamp.name}
    except (OSError, ValueError, KeyError, TypeError):
        return {"commit": "unknown", "dirty": None, "from": "nothing (no git, no stamp)"}


def training_source(device: str | None = None) -> dict[str, str]:
    """What decides a run's numbers besides its config: the commit (with "+dirty"), the torch
    version (a plain str: a checkpoint loaded weights_only refuses torch's TorchVersion) and,
    when given, the kind of device (system.device.compute_kind: the CPU's kernels and whether
    it runs bf16 natively, which picks Muon's Newton-Schulz precision, or the GPU)."""
    import torch

    source = {"commit": describe_commit(source_commit()), "torch": str(torch.__version__)}
    return source if device is None else {**source, "device": device}


def segment(start: str, device: str | None = None) -> dict[str, Any]:
    """What one process that trains a run records: where it took the run up ("after epoch 0",
    "at step 12/97 of epoch 4") and its training_source. A resumed run is several segments; if
    their sources differ, the run is not one version of the code, or not one kind of machine."""
    return {"start": start, **training_source(device)}


def describe_source(source: dict[str, Any]) -> str:
    """ "commit abc1234, torch 2.14.1" (", on DEVICE" where recorded): one segment's (or
    training_source's) source, as warnings and the run's last line name it."""
    described = f"commit {source.get('commit')}, torch {source.get('torch')}"
    return described + (f", on {source['device']}" if source.get("device") else "")


def describe_sources(sources: list[dict[str, Any]]) -> list[str]:
    """The distinct sources among `sources`, in order, each described by what all of them
    record: a segment saved before devices were recorded (2026-12-07) has no device, and is
    not another source for that."""
    if not sources:
        return []
    shared = set.intersection(*(set(source) for source in sources)) - {"start"}
    return list(dict.fromkeys(describe_source({k: s[k] for k in shared}) for s in sources))


def _git(root: Path, *args: str) -> str | None:
    """git's output, or None where git is missing, fails, or this is no repository."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.SubprocessError):  # FileNotFoundError: no git on the machine
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def describe_commit(provenance: dict[str, Any]) -> str:
    """ "abc1234", "abc1234+dirty" or "unknown"."""
    return provenance["commit"] + ("+dirty" if provenance.get("dirty") else "")


def gpu_driver() -> str | None:
    """The NVIDIA driver version (e.g. "550.54.15"), or None without one."""
    try:
        text = NVIDIA_VERSION.read_text()
    except OSError:
        return None
    words = text.split("Kernel Module", 1)[-1].split()
    return words[0] if words else None


def versions() -> dict[str, str | None]:
    import numpy as np
    import torch

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "gpu_driver": gpu_driver(),
        "numpy": np.__version__,
        "fastcifar": VERSION,
    }
    for package in ("ffcv", "nvidia-dali-cuda130", "grad-cam", "tensorboard"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
