"""GETA mode: the staged optimizer (warm-up, bit reduction, joint pruning + quantization,
cool-down) and its registration."""

from geta.optim.geta.mode import GetaMode
from geta.optim.geta.optimizer import BASE_OPTIMIZERS, GetaOptimizer

__all__ = ["GetaMode", "GetaOptimizer", "BASE_OPTIMIZERS"]
