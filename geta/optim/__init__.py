"""Budgets, the cost model, saliency, the budget projection and the optimizers."""

from geta.optim.admm import AdmmOptimizer
from geta.optim.admm_config import AdmmConfig, LayerTarget
from geta.optim.bit_allocation import allocate_bits, lower_hull
from geta.optim.budget import Budget
from geta.optim.cost import CostModel, UnitIndex, output_positions
from geta.optim.geta_optimizer import BASE_OPTIMIZERS, GetaOptimizer
from geta.optim.problem import CompressionProblem
from geta.optim.projection import (
    Projection,
    bit_distortion,
    minimum_cost,
    nonzero_code_share,
    project,
    select_fraction,
)
from geta.optim.report import CompressionReport, LayerReport
from geta.optim.saliency import UnitStatistics, importance, register_saliency, saliency
from geta.optim.schedule import Schedule

__all__ = [
    "AdmmConfig",
    "AdmmOptimizer",
    "LayerTarget",
    "allocate_bits",
    "lower_hull",
    "BASE_OPTIMIZERS",
    "Budget",
    "CompressionProblem",
    "CompressionReport",
    "CostModel",
    "GetaOptimizer",
    "LayerReport",
    "Projection",
    "Schedule",
    "UnitIndex",
    "UnitStatistics",
    "bit_distortion",
    "importance",
    "minimum_cost",
    "nonzero_code_share",
    "output_positions",
    "project",
    "register_saliency",
    "saliency",
    "select_fraction",
]
