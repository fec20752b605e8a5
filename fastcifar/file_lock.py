"""A lock file that one process at a time holds: the others wait (the CIFAR-10 download, the
betons of a folder). Held by the open file, so a killed holder frees it at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Holds `path` (created if missing) exclusively for the block, waiting for it if need be."""
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
