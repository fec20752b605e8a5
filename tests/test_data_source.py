"""The CIFAR-10 source: download, verification, safe extraction and parsing, on tiny archives in the
official binary format built here (and on the real files when FASTCIFAR_DATA points at them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastcifar.data import source as data_source
from fastcifar.data.source import DataSourceError, default_data_dir, load_cifar10, load_source
from fastcifar.data.spec import CIFAR10
from fastcifar.system.caller import called_from_command_line, called_from_python
from tests.cifar_files import (
    CLASS_NAMES,
    encode_records,
    make_archive,
    random_split,
    spec_for,
    tiny_files,
    write_folder,
)


def test_download_verifies_extracts_and_parses(tmp_path, http_server):
    served, base = http_server
    files = tiny_files(per_batch=3)
    archive = make_archive(files)
    (served / CIFAR10.archive_name).write_bytes(archive)
    cache = tmp_path / "cache"
    data = load_source(spec_for(files, archive, url=f"{base}/{CIFAR10.archive_name}"), cache)
    assert data.train.images.shape == (15, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert data.test.labels.dtype == np.int64 and data.test.labels.shape == (3,)
    assert data.class_names == CLASS_NAMES
    assert (cache / CIFAR10.archive_name).is_file() and not (
        cache / f"{CIFAR10.archive_name}.part"
    ).exists()


def test_parsing_puts_channels_last_and_labels_first():
    split = random_split(5, seed=3)
    path_bytes = encode_records(split)
    records = np.frombuffer(path_bytes, np.uint8).reshape(5, -1)
    assert records[:, 0].tolist() == split.labels.tolist()
    # The first 1,024 pixel bytes are the red plane, row by row.
    assert records[0, 1:33].tolist() == split.images[0, 0, :, 0].tolist()


def test_parse_round_trips_the_official_layout(tmp_path):
    split = random_split(7, seed=1)
    path = tmp_path / "batch.bin"
    path.write_bytes(encode_records(split))
    parsed = data_source.parse_batches([path])
    np.testing.assert_array_equal(parsed.images, split.images)
    np.testing.assert_array_equal(parsed.labels, split.labels)


def test_download_with_wrong_checksum_is_refused_and_leaves_no_archive(tmp_path, http_server):
    served, base = http_server
    files = tiny_files()
    (served / CIFAR10.archive_name).write_bytes(make_archive(files))
    cache = tmp_path / "cache"
    expected = spec_for(files, b"some other archive")
    with pytest.raises(DataSourceError, match="checksum mismatch for the download"):
        load_source(replace(expected, url=f"{base}/{CIFAR10.archive_name}"), cache)
    assert not cache.exists()  # no archive, no part, no lock: the folder it made is gone too


def test_no_network_gives_one_actionable_error(tmp_path, http_server):
    _, base = http_server
    with (
        called_from_command_line(),
        pytest.raises(DataSourceError, match=r"could not download.*--data-dir") as caught,
    ):
        load_source(replace(CIFAR10, url=f"{base}/missing.tar.gz"), tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert "into a folder you can write" in str(caught.value)
    assert not (tmp_path / "cache").exists()  # the folder it made for the download is gone
    kept = tmp_path / "mine"  # a folder that was there stays, with nothing of ours in it
    kept.mkdir()
    with pytest.raises(DataSourceError):
        load_source(replace(CIFAR10, url=f"{base}/missing.tar.gz"), kept)
    assert kept.is_dir() and not list(kept.iterdir())


def test_no_network_from_python_names_the_keyword(tmp_path, http_server):
    _, base = http_server
    with called_from_python(data=False, model=False), pytest.raises(DataSourceError) as caught:
        load_source(replace(CIFAR10, url=f"{base}/missing.tar.gz"), tmp_path / "cache")
    assert "pass data_dir a folder that holds cifar-10-batches-bin/" in str(caught.value)
    assert "--data-dir" not in str(caught.value)


def test_the_data_folder_itself_instead_of_its_parent_is_named_and_left_untouched(tmp_path):
    files = tiny_files()
    folder = write_folder(tmp_path, files)
    with called_from_command_line(), pytest.raises(DataSourceError) as caught:
        load_source(spec_for(files), folder)
    assert str(caught.value) == (
        f"{folder} is the cifar-10-batches-bin/ folder itself: pass the folder that holds it "
        f"(--data-dir {tmp_path})"
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # no lock, no download
    with called_from_python(data=False, model=False), pytest.raises(DataSourceError) as caught:
        load_source(spec_for(files), folder)
    assert str(caught.value).endswith(f"(data_dir={str(tmp_path)!r})")
    assert load_source(spec_for(files), tmp_path).train.images.shape[0] > 0


def test_files_copied_out_of_their_folder_are_named_and_a_stray_one_is_not(tmp_path, http_server):
    files = tiny_files()
    loose = write_folder(tmp_path, files)  # the files, in a folder of another name
    loose = loose.rename(tmp_path / "mine")
    with pytest.raises(DataSourceError, match=r"holds the CIFAR-10 files loose: they are read "):
        load_source(spec_for(files), loose)
    (loose / "data_batch_1.bin").unlink()  # not the data set: fetched as if absent
    _, base = http_server
    with pytest.raises(DataSourceError, match="could not download"):
        load_source(replace(spec_for(files), url=f"{base}/missing.tar.gz"), loose)


def test_no_download_allowed_says_where_it_looked(tmp_path):
    with pytest.raises(DataSourceError, match=f"not found in {tmp_path}"):
        load_cifar10(tmp_path, download=False)


def test_checksum_mismatch_names_the_file_and_deletes_nothing(tmp_path):
    files = tiny_files()
    spec = spec_for(files)
    files["data_batch_3.bin"] = encode_records(random_split(4, seed=99))
    folder = write_folder(tmp_path, files)
    with pytest.raises(DataSourceError, match=r"checksum mismatch for .*data_batch_3\.bin"):
        load_source(spec, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)


def test_truncated_file_is_reported_as_truncated(tmp_path):
    files = tiny_files()
    spec = spec_for(files)
    files["test_batch.bin"] = files["test_batch.bin"][:-100]
    write_folder(tmp_path, files)
    with pytest.raises(DataSourceError, match=r"test_batch\.bin is truncated"):
        load_source(spec, tmp_path)


def test_missing_file_is_reported(tmp_path):
    files = tiny_files()
    spec = spec_for(files)
    del files["data_batch_5.bin"]
    write_folder(tmp_path, files)
    with pytest.raises(DataSourceError, match=r"data_batch_5\.bin is missing"):
        load_source(spec, tmp_path)


@pytest.mark.parametrize("escaping_name", ["../evil.bin", "/tmp/evil.bin"])
def test_archive_member_escaping_the_folder_is_refused(tmp_path, escaping_name):
    files = tiny_files()
    archive = make_archive(files, extra={escaping_name: b"gotcha"})
    root = tmp_path / "root"
    root.mkdir()
    (root / CIFAR10.archive_name).write_bytes(archive)
    with pytest.raises(DataSourceError, match="refusing to extract"):
        load_source(spec_for(files, archive), root)
    assert not (tmp_path / "evil.bin").exists()
    assert not (root / CIFAR10.folder_name).exists()
    assert (root / CIFAR10.archive_name).is_file()  # the user's archive is kept


def test_existing_archive_with_wrong_checksum_is_kept(tmp_path):
    files = tiny_files()
    (tmp_path / CIFAR10.archive_name).write_bytes(b"not really a tarball")
    with pytest.raises(DataSourceError, match=f"checksum mismatch for {tmp_path}"):
        load_source(spec_for(files, b"expected archive"), tmp_path)
    assert (tmp_path / CIFAR10.archive_name).read_bytes() == b"not really a tarball"


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCIFAR_DATA", str(tmp_path / "env"))
    assert default_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("FASTCIFAR_DATA")
    monkeypatch.delenv("FASTCIFAR_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_data_dir() == Path.home() / ".cache" / "fastcifar"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "fastcifar"
    monkeypatch.setenv("FASTCIFAR_CACHE", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


def test_real_cifar10_matches_the_official_counts(real_data_dir):
    data = load_cifar10(real_data_dir, download=False)
    assert data.train.images.shape == (50_000, 32, 32, 3)
    assert data.test.images.shape == (10_000, 32, 32, 3)
    assert np.bincount(data.train.labels).tolist() == [5_000] * 10
    assert data.class_names[0] == "airplane" and data.class_names[-1] == "truck"


def test_the_waiting_lock_is_exclusive_and_leaves_no_file(tmp_path):
    import threading
    import time

    from fastcifar.system.files import waiting_lock

    path, inside, overlaps = tmp_path / ".lock", [], []

    def hold(name: str) -> None:
        with waiting_lock(path):
            if inside:
                overlaps.append((inside[-1], name))
            inside.append(name)
            time.sleep(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(str(i),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and not path.exists()
