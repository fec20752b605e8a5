"""Files written safely: the one writer of run-folder files (temporary file, fsync, rename, fsync
of the folder), and the lock file that one process at a time holds.

A reader (or a crash) therefore sees either the old file or the complete new one, never a
truncated mix, even when the disk fills up mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

# The names of the temporary files: a folder's sole writer may remove any it finds (a killed
# process's), see RunFolder.lock.
TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary file; on a clean exit it replaces `path` atomically, else leaves it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):  # name the file meant, not ours
            raise OSError(error.errno, os.strerror(error.errno), str(path)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    fsync_folder(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace `path` with `data` (text is written as UTF-8) atomically."""
    with atomic_writer(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_save(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """`write(buffer)` fills an in-memory buffer (torch.save, savefig, ...); then atomic_write."""
    buffer = io.BytesIO()
    write(buffer)
    return atomic_write(path, buffer.getvalue())


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# Held by the open file, so a killed holder frees it at once (the CIFAR-10 download, the betons of
# a folder).
@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Holds `path` (created if missing) exclusively for the block, waiting for it if need be,
    and removes it after: no lock file is left behind. A waiter that wakes on a file its last
    holder removed takes the path afresh, so two processes never hold it at once."""
    while True:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass  # removed while this process waited: take the new one
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while held: a waiter on this file re-checks and takes a new one
        os.close(descriptor)
