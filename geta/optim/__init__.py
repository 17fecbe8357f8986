"""Budgets, the cost model, saliency, the budget projection, and the compression modes (one
folder each, registered by :func:`geta.optim.mode.register_mode`)."""

from geta.optim import admm_progressive  # noqa: F401  (registers its mode)
from geta.optim.admm import AdmmConfig, AdmmOptimizer, LayerTarget
from geta.optim.ajpq import AjpqConfig  # registers its mode
from geta.optim.bit_allocation import allocate_bits, lower_hull
from geta.optim.budget import Budget
from geta.optim.cost import CostModel, UnitIndex, output_positions
from geta.optim.geta import BASE_OPTIMIZERS, GetaOptimizer
from geta.optim.mode import (
    CompressionMode,
    ModeOptimizer,
    mode_for_config,
    mode_named,
    register_mode,
    registered_modes,
)
from geta.optim.oneshot import OneshotConfig  # registers its mode
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
    "AjpqConfig",
    "OneshotConfig",
    "AdmmOptimizer",
    "LayerTarget",
    "allocate_bits",
    "lower_hull",
    "BASE_OPTIMIZERS",
    "Budget",
    "CompressionProblem",
    "CompressionMode",
    "CompressionReport",
    "CostModel",
    "GetaOptimizer",
    "LayerReport",
    "ModeOptimizer",
    "Projection",
    "Schedule",
    "UnitIndex",
    "UnitStatistics",
    "bit_distortion",
    "importance",
    "minimum_cost",
    "mode_for_config",
    "mode_named",
    "nonzero_code_share",
    "output_positions",
    "project",
    "register_mode",
    "register_saliency",
    "registered_modes",
    "saliency",
    "select_fraction",
]
