"""The dependency graph: capture (torch.export), op rules, channel spaces, groups, surgery."""

from geta.graph.capture import trace
from geta.graph.dependency_graph import DependencyGraph
from geta.graph.groups import BlockedSpace, GroupMember, PruningGroup
from geta.graph.module_adapters import register_model_adapter, register_module_adapter
from geta.graph.rules import register_rule
from geta.graph.surgery import Plan, prune, zero_groups

__all__ = [
    "BlockedSpace",
    "DependencyGraph",
    "GroupMember",
    "Plan",
    "PruningGroup",
    "prune",
    "register_model_adapter",
    "register_module_adapter",
    "register_rule",
    "trace",
    "zero_groups",
]
