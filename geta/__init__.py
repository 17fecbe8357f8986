"""geta: joint structured pruning and quantization of any PyTorch model under a size budget.

Quick start::

    import torch, torchvision, geta
    model = torchvision.models.resnet18().eval()
    graph = geta.trace(model, torch.randn(1, 3, 224, 224))
    graph.summary()                       # the prunable groups
    geta.prune(model, graph, {0: [0, 5]}) # remove channels 0 and 5 of group 0
"""

from geta.errors import GetaError, PruneError, TraceError
from geta.graph import DependencyGraph, GroupMember, PruningGroup, prune, trace, zero_groups

__version__ = "0.1.0"

__all__ = [
    "DependencyGraph",
    "GetaError",
    "GroupMember",
    "PruneError",
    "PruningGroup",
    "TraceError",
    "prune",
    "trace",
    "zero_groups",
]
