"""Datasets used by the CLI, the benchmarks and the notebooks."""

from geta.data.fashion_mnist import DataError, fashion_mnist, find_fashion_mnist

__all__ = ["DataError", "fashion_mnist", "find_fashion_mnist"]
