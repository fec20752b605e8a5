"""CIFAR-10 from the official *binary* archive: find or download, verify, extract safely, parse.

No pickle anywhere: the binary version is plain records of 1 label byte + 3,072 pixel bytes (CHW).
Every file is checked against the official SHA-256 before it is parsed, so a corrupted or truncated
download can never pass as data. Nothing the user owns is ever deleted: only our own temporary
files are removed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastcifar.data.dataset import CifarSplit, Dataset
from fastcifar.data.normalisation import CIFAR10
from fastcifar.errors import DataSourceError
from fastcifar.system.files import waiting_lock

__all__ = ["DataSourceError", "cache_dir", "default_data_dir", "load_cifar10"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
FOLDER_NAME = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
META_FILE = "batches.meta.txt"
FILE_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    "batches.meta.txt": "2ce042b1e0b48db4bb214408e6414ba18b2731c24af244f2d6c112fddf31af00",
}
RECORD_BYTES = 1 + 3 * 32 * 32
DATA_ENV = "FASTCIFAR_DATA"
CACHE_ENV = "FASTCIFAR_CACHE"
LOCK_NAME = ".fastcifar-download.lock"


@dataclass(frozen=True)
class SourceChecksums:
    """What the files must hash to; tests substitute their own tiny archives' values."""

    archive: str = ARCHIVE_SHA256
    files: tuple[tuple[str, str], ...] = tuple(FILE_SHA256.items())


def cache_dir() -> Path:
    """fastcifar's own cache: $FASTCIFAR_CACHE, else $XDG_CACHE_HOME/fastcifar, else
    ~/.cache/fastcifar. Written files (downloads, betons) go here, never into a data folder
    that was only given to be read."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fastcifar"
    return Path.home() / ".cache" / "fastcifar"


def beton_cache_folder() -> Path:
    """Where the CIFAR-10 betons go unless told otherwise: the cache, in a folder named by the
    data's checksums (betons of other data never meet them); never the data folder."""
    key = hashlib.sha256("".join(FILE_SHA256[name] for name in sorted(FILE_SHA256)).encode())
    return cache_dir() / "betons" / f"cifar10-{key.hexdigest()[:12]}"


def default_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` if given, else $FASTCIFAR_DATA, else the cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir()


def recorded_data_dir(explicit: str | os.PathLike | None = None) -> str:
    """The data folder as a run records (and compares) it: absolute, links resolved; the
    folder given (or found by default), not the cifar-10-batches-bin/ inside it, which may be a
    link to elsewhere."""
    return str(default_data_dir(explicit).resolve())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str = URL,
    checksums: SourceChecksums = SourceChecksums(),
) -> Dataset:
    """Find CIFAR-10 under `data_dir` (downloading and extracting it if allowed) and parse it."""
    root = default_data_dir(data_dir)
    folder = ensure_extracted(root, download=download, url=url, checksums=checksums)
    verify_folder(folder, checksums)
    return Dataset(
        train=parse_batches([folder / name for name in TRAIN_FILES]),
        test=parse_batches([folder / name for name in TEST_FILES]),
        class_names=read_class_names(folder / META_FILE),
        normalisation=CIFAR10,
        folder=folder.resolve(),
    )


def ensure_extracted(root: Path, *, download: bool, url: str, checksums: SourceChecksums) -> Path:
    """Return the `cifar-10-batches-bin` folder under `root`, extracting/downloading when absent.

    An existing folder is only read. Otherwise the work happens under a lock on the data
    folder, so that the processes of one machine (torchrun's ranks) or of several sharing a
    file system download and extract once, one after another, each finding the other's result."""
    folder = root / FOLDER_NAME
    if folder.is_dir():
        return folder
    if not download and not (root / ARCHIVE_NAME).is_file():
        raise DataSourceError(
            f"CIFAR-10 not found in {root} (no {FOLDER_NAME}/ or {ARCHIVE_NAME}): "
            "pass --data-dir to a folder that holds it, or allow the download"
        )
    if root.exists() and not root.is_dir():
        raise DataSourceError(f"--data-dir {root} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    with waiting_lock(root / LOCK_NAME):
        if folder.is_dir():  # another process finished while this one waited
            return folder
        return _download_and_extract(root, url=url, checksums=checksums)


def _download_and_extract(root: Path, *, url: str, checksums: SourceChecksums) -> Path:
    folder = root / FOLDER_NAME
    archive = root / ARCHIVE_NAME
    for stale in root.glob(f".{ARCHIVE_NAME}.*.part"):  # of a killed download: the lock is ours
        stale.unlink(missing_ok=True)
    if not archive.is_file():
        download_archive(url, archive, checksums.archive)
    actual = sha256_of(archive)
    if actual != checksums.archive:
        raise DataSourceError(
            f"checksum mismatch for {archive} (sha256 {actual[:12]}..., expected "
            f"{checksums.archive[:12]}...): the file is corrupt or not the official archive; "
            "move it away and run again to download a fresh copy"
        )
    extract_safely(archive, root)
    return folder


def download_archive(url: str, target: Path, expected_sha256: str) -> None:
    """Download to a temporary name, verify, then rename: an interrupted download never passes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: two processes that download at once never write into one file.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="CIFAR-10") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DataSourceError(
            f"could not download CIFAR-10 from {url} ({reason}); no network? Download "
            f"{ARCHIVE_NAME} by hand into {target.parent}, or pass --data-dir to a folder "
            f"that holds {FOLDER_NAME}/"
        ) from None
    actual = sha256_of(partial)
    if actual != expected_sha256:
        partial.unlink()
        raise DataSourceError(
            f"checksum mismatch for the download from {url} (sha256 {actual[:12]}..., "
            f"expected {expected_sha256[:12]}...): the transfer was corrupted; run again"
        )
    partial.replace(target)


def extract_safely(archive: Path, root: Path) -> None:
    """Extract only regular files under `cifar-10-batches-bin/`; refuse anything that escapes."""
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            name = Path(member.name)
            escapes = name.is_absolute() or ".." in name.parts
            if escapes or member.issym() or member.islnk():
                raise DataSourceError(
                    f"refusing to extract {archive}: member {member.name!r} would land outside "
                    f"{root} or is a link; the archive is not the official one"
                )
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
        try:
            tar.extractall(staging, members=members, filter="data")
            extracted = staging / FOLDER_NAME
            if not extracted.is_dir():
                raise DataSourceError(
                    f"{archive} holds no {FOLDER_NAME}/ folder: it is not the CIFAR-10 binary "
                    "archive"
                )
            extracted.replace(root / FOLDER_NAME)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def verify_folder(folder: Path, checksums: SourceChecksums) -> None:
    """Every expected file exists, has whole records and matches its SHA-256."""
    for name, expected in checksums.files:
        path = folder / name
        if not path.is_file():
            raise DataSourceError(
                f"{path} is missing: the CIFAR-10 folder is incomplete; restore it or point "
                "--data-dir at a complete copy"
            )
        size = path.stat().st_size
        if name.endswith(".bin") and (size == 0 or size % RECORD_BYTES):
            raise DataSourceError(
                f"{path} is truncated ({size} bytes is not a whole number of {RECORD_BYTES}-byte "
                "records): restore it from the official archive"
            )
        actual = sha256_of(path)
        if actual != expected:
            raise DataSourceError(
                f"checksum mismatch for {path} (sha256 {actual[:12]}..., expected "
                f"{expected[:12]}...): restore it from the official archive"
            )


def parse_batches(paths: list[Path]) -> CifarSplit:
    """Parse binary-version batch files into HWC uint8 images and int64 labels."""
    records = np.concatenate(
        [np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES) for path in paths]
    )
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), labels)


def read_class_names(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != 10:
        raise DataSourceError(f"{path} lists {len(names)} class names, expected 10")
    return names
