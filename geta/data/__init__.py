"""Datasets used by the CLI, the benchmarks and the notebooks."""

from geta.data.fashion_mnist import DataError, fashion_mnist, find_fashion_mnist
from geta.data.mnist import mnist, mnist_archive
from geta.data.synthetic import synthetic_images

__all__ = [
    "DataError",
    "fashion_mnist",
    "find_fashion_mnist",
    "mnist",
    "mnist_archive",
    "synthetic_images",
]
