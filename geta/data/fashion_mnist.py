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


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        data = f.read()
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


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
        images_file, labels_file = FILES[split]
        images = torch.from_numpy(_read_idx(directory / images_file).copy()).float() / 255
        labels = torch.from_numpy(_read_idx(directory / labels_file).astype(np.int64))
        if len(images) != len(labels):
            raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
        images = images.unsqueeze(1)
        if normalize:
            images = (images - MEAN) / STD
        out.append(TensorDataset(images, labels))
    return out[0], out[1]
