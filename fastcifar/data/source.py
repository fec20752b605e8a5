"""The data sets of data/spec.py from their official *binary* archives: find or download,
verify, extract safely, parse.

No pickle anywhere: the binary versions are plain records of label bytes + 3,072 pixel bytes
(CHW). Every file is checked before it is parsed (its SHA-256 where the spec has one, else its
exact size), so a corrupted or truncated download can never pass as data. Nothing the user owns
is ever deleted: only our own temporary files are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastcifar.data.dataset import CifarSplit, Dataset
from fastcifar.data.normalisation import Normalisation
from fastcifar.data.spec import CIFAR10, DataSpec
from fastcifar.errors import DataSourceError
from fastcifar.system.caller import named, setting
from fastcifar.system.files import waiting_lock

__all__ = ["DataSourceError", "cache_dir", "default_data_dir", "load_cifar10", "load_source"]

DATA_ENV = "FASTCIFAR_DATA"
CACHE_ENV = "FASTCIFAR_CACHE"
LOCK_NAME = ".fastcifar-download.lock"


def cache_dir() -> Path:
    """fastcifar's own cache: $FASTCIFAR_CACHE, else $XDG_CACHE_HOME/fastcifar, else
    ~/.cache/fastcifar. Written files (downloads, betons) go here, never into a data folder
    that was only given to be read."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fastcifar"
    return Path.home() / ".cache" / "fastcifar"


def beton_cache_folder(spec: DataSpec = CIFAR10) -> Path:
    """Where a data set's betons go unless told otherwise: the cache, in a folder named by the
    data's checksums (betons of other data never meet them); never the data folder."""
    digests = "".join(sha for _, sha in sorted(spec.file_sha256)) or spec.archive_sha256
    key = hashlib.sha256(digests.encode()).hexdigest()[:12]
    return cache_dir() / "betons" / f"{spec.name}-{key}"


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


def load_cifar10(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """CIFAR-10 under `data_dir` (downloaded and extracted there if allowed), parsed."""
    return load_source(CIFAR10, data_dir, download=download)


def load_source(
    spec: DataSpec, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """The data set `spec` describes, found under `data_dir` (downloaded and extracted there if
    allowed), verified and parsed."""
    root = default_data_dir(data_dir)
    folder = ensure_extracted(root, spec, download=download)
    verify_folder(folder, spec)
    train = parse_batches([folder / name for name in spec.train_files], spec)
    statistics = spec.statistics
    return Dataset(
        train=train,
        test=parse_batches([folder / name for name in spec.test_files], spec),
        class_names=read_class_names(folder / spec.names_file, spec.classes),
        normalisation=Normalisation(*statistics)
        if statistics
        else Normalisation.of_images(train.images),
        folder=folder.resolve(),
        source=spec.name,
    )


def ensure_extracted(root: Path, spec: DataSpec, *, download: bool) -> Path:
    """Return the data set's folder under `root`, extracting/downloading when absent.

    An existing folder is only read. Otherwise the work happens under a lock on the data
    folder, so that the processes of one machine (torchrun's ranks) or of several sharing a
    file system download and extract once, one after another, each finding the other's result."""
    folder = root / spec.folder_name
    if folder.is_dir():
        return folder
    if all((root / name).is_file() for name in spec.files):
        raise DataSourceError(loose_files_message(root, spec))
    if not download and not (root / spec.archive_name).is_file():
        raise DataSourceError(
            f"{spec.title} not found in {root} (no {spec.folder_name}/ or {spec.archive_name}): "
            f"pass {named('data_dir')} a folder that holds it, or allow the download"
        )
    if root.exists() and not root.is_dir():
        raise DataSourceError(f"{named('data_dir')} {root} is a file, not a folder")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with waiting_lock(root / LOCK_NAME):
            if folder.is_dir():  # another process finished while this one waited
                return folder
            return _download_and_extract(root, spec)
    except BaseException:
        if created:  # a failed download leaves no empty folder behind where none was
            with contextlib.suppress(OSError):
                root.rmdir()
        raise


def loose_files_message(root: Path, spec: DataSpec) -> str:
    """`root` holds the data set's files themselves, not its folder: most often the folder
    itself was given, one level too deep; else the files were copied out of it."""
    if root.name == spec.folder_name:
        parent = str(root.parent)
        return (
            f"{root} is the {spec.folder_name}/ folder itself: pass the folder that holds it "
            f"({setting('data_dir', parent, repr(parent))})"
        )
    return (
        f"{root} holds the {spec.title} files loose: they are read from {root / spec.folder_name}/"
        "; move them into it"
    )


def _download_and_extract(root: Path, spec: DataSpec) -> Path:
    archive = root / spec.archive_name
    for stale in root.glob(f".{spec.archive_name}.*.part"):  # of a killed download: ours now
        stale.unlink(missing_ok=True)
    if not archive.is_file():
        download_archive(spec, archive)
    actual = sha256_of(archive)
    if actual != spec.archive_sha256:
        raise DataSourceError(
            f"checksum mismatch for {archive} (sha256 {actual[:12]}..., expected "
            f"{spec.archive_sha256[:12]}...): the file is corrupt or not the official archive; "
            "move it away and run again to download a fresh copy"
        )
    extract_safely(archive, root, spec.folder_name)
    return root / spec.folder_name


def download_archive(spec: DataSpec, target: Path) -> None:
    """Download to a temporary name, verify, then rename: an interrupted download never passes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: two processes that download at once never write into one file.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    url = spec.url
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.title) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DataSourceError(
            f"could not download {spec.title} from {url} ({reason}); no network? Download "
            f"{spec.archive_name} by hand into a folder you can write and pass it with "
            f"{named('data_dir')} (it is checked and extracted there), or pass "
            f"{named('data_dir')} a folder that holds {spec.folder_name}/"
        ) from None
    actual = sha256_of(partial)
    if actual != spec.archive_sha256:
        partial.unlink()
        raise DataSourceError(
            f"checksum mismatch for the download from {url} (sha256 {actual[:12]}..., "
            f"expected {spec.archive_sha256[:12]}...): the transfer was corrupted; run again"
        )
    partial.replace(target)


def extract_safely(archive: Path, root: Path, folder_name: str) -> None:
    """Extract only regular files into `folder_name`/; refuse anything that escapes."""
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
            extracted = staging / folder_name
            if not extracted.is_dir():
                raise DataSourceError(
                    f"{archive} holds no {folder_name}/ folder: it is not the official binary "
                    "archive"
                )
            extracted.replace(root / folder_name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def verify_folder(folder: Path, spec: DataSpec) -> None:
    """Every expected file exists, holds whole records (of the known count, where the spec
    says it) and matches its SHA-256 (where the spec has one)."""
    digests = dict(spec.file_sha256)
    for name in spec.files:
        path = folder / name
        if not path.is_file():
            raise DataSourceError(
                f"{path} is missing: the {spec.title} folder is incomplete; restore it or point "
                f"{named('data_dir')} at a complete copy"
            )
        size = path.stat().st_size
        expected_size = None if name in digests else spec.expected_size(name)  # a digest says more
        whole = size and not size % spec.record_bytes
        if name.endswith(".bin") and not (whole and size == (expected_size or size)):
            should = (
                f"{expected_size // spec.record_bytes:,} records of {spec.record_bytes} bytes "
                f"make {expected_size:,}"
                if expected_size
                else f"not a whole number of {spec.record_bytes}-byte records"
            )
            raise DataSourceError(
                f"{path} is truncated or padded ({size:,} bytes; {should}): restore it from "
                "the official archive"
            )
        if name in digests and (actual := sha256_of(path)) != digests[name]:
            raise DataSourceError(
                f"checksum mismatch for {path} (sha256 {actual[:12]}..., expected "
                f"{digests[name][:12]}...): restore it from the official archive"
            )


def parse_batches(paths: list[Path], spec: DataSpec = CIFAR10) -> CifarSplit:
    """Parse binary-version files into HWC uint8 images and int64 labels (the spec's label
    byte: CIFAR-100's fine label)."""
    records = np.concatenate(
        [np.fromfile(path, dtype=np.uint8).reshape(-1, spec.record_bytes) for path in paths]
    )
    labels = records[:, spec.label_byte].astype(np.int64)
    images = records[:, spec.label_bytes :].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), labels)


def read_class_names(path: Path, classes: int = 10) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != classes:
        raise DataSourceError(f"{path} lists {len(names)} class names, expected {classes}")
    return names
