"""Op rules: how each ATen op maps the dimensions of its inputs to those of its outputs.

Importing this package registers the built-in rules. Add your own with
:func:`register_rule`; see :mod:`geta.graph.rules.base` for the context a rule receives.
"""

from geta.graph.rules import (
    contraction,
    indexing,
    normalization,
    pointwise,
    quantization,
    reduction,
    shape,
)
from geta.graph.rules.base import OpRule, RuleContext, lookup_rule, register_rule, registered_ops
from geta.graph.rules.pointwise import broadcast_rule

__all__ = [
    "OpRule",
    "RuleContext",
    "broadcast_rule",
    "lookup_rule",
    "register_rule",
    "registered_ops",
    "contraction",
    "indexing",
    "normalization",
    "pointwise",
    "quantization",
    "reduction",
    "shape",
]
