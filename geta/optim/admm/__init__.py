"""Budget ADMM: its config, V-step projections, optimizer and registration."""

from geta.optim.admm.config import AdmmConfig, LayerTarget
from geta.optim.admm.mode import AdmmMode
from geta.optim.admm.optimizer import AdmmOptimizer

__all__ = ["AdmmConfig", "AdmmMode", "AdmmOptimizer", "LayerTarget"]
