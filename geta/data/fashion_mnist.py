"""Fashion-MNIST from its four idx files (the Debian package ``dataset-fashion-mnist``, a
directory you name, or torchvision's download)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from geta.errors import GetaError

__all__ = ["DataError", "fashion_mnist", "find_fashion_mnist"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MEAN, STD = 0.2860, 0.3530


class DataError(GetaError):
    """A dataset could not be found or read."""


def _open(path: Path):
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    if path.exists():
        return open(path, "rb")
    raise FileNotFoundError(path)


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """The unsigned-byte array an idx file's ``data`` holds (``name`` is for messages): the
    magic, the header and the size are checked, so a damaged file raises :class:`DataError`
    instead of giving wrong pixels."""
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{name} is not an unsigned-byte idx file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{name} is truncated: its header needs {4 + 4 * ndim} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{name} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        return parse_idx(f.read(), str(path))


def image_dataset(
    images: np.ndarray, labels: np.ndarray, split: str, mean: float, std: float, normalize: bool
) -> TensorDataset:
    """``N x 1 x H x W`` float images in [0, 1] (standardized with ``mean`` and ``std`` when
    ``normalize``) and int64 labels, from idx arrays ``N x H x W`` and ``N``."""
    if len(images) != len(labels):
        raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.copy()).float().unsqueeze(1) / 255
    if normalize:
        x = (x - mean) / std
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The directory holding the idx files: ``root``, ``$GETA_FASHION_MNIST``, the Debian
    package's directory, or torchvision's layout ``root/FashionMNIST/raw``."""
    candidates = [Path(p) for p in (root, os.environ.get("GETA_FASHION_MNIST")) if p]
    candidates += [c / "FashionMNIST" / "raw" for c in list(candidates)] + [DEBIAN_DIR]
    for c in candidates:
        if any((c / (FILES["test"][0] + ext)).exists() for ext in ("", ".gz")):
            return c
    raise DataError(
        "Fashion-MNIST not found; on Debian `apt-get install dataset-fashion-mnist`, or pass "
        "download=True (needs the internet), or point GETA_FASHION_MNIST at the idx files"
    )


def fashion_mnist(
    root: str | Path | None = None, *, download: bool = False, normalize: bool = True
) -> tuple[TensorDataset, TensorDataset]:
    """``(train, test)`` datasets of 60,000 and 10,000 ``1 x 28 x 28`` float images and labels.

    Example:
        >>> train, test = fashion_mnist()            # doctest: +SKIP
        >>> train.tensors[0].shape
        torch.Size([60000, 1, 28, 28])               # doctest: +SKIP
    """
    try:
        directory = find_fashion_mnist(root)
    except DataError:
        if not download:
            raise
        import torchvision

        target = Path(root or Path.home() / ".cache" / "geta")
        torchvision.datasets.FashionMNIST(str(target), download=True)
        directory = target / "FashionMNIST" / "raw"
    out = []
    for split in ("train", "test"):
        images, labels = (_read_idx(directory / name) for name in FILES[split])
        out.append(image_dataset(images, labels, split, MEAN, STD, normalize))
    return out[0], out[1]
