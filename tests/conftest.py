"""Shared fixtures. FASTCIFAR_DATA, when set to a folder holding cifar-10-batches-bin/, enables the
tests that need the real CIFAR-10 (CI sets it to the shared copy)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from tests.cifar_files import real_cifar_dir
from tests.workers import TEST_THREADS, one_thread_per_worker

one_thread_per_worker()
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True, scope="session")
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """fastcifar's cache (betons, downloads) in a folder of the test session, never ~/.cache."""
    os.environ["FASTCIFAR_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def real_data_dir() -> Path:
    folder = real_cifar_dir()
    if folder is None:
        pytest.skip("set FASTCIFAR_DATA to a folder holding cifar-10-batches-bin/ to run this")
    return folder


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/served over HTTP on 127.0.0.1; yields the base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
