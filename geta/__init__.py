"""geta: joint structured pruning and quantization of any PyTorch model under a size budget.

Quick start::

    import torch, torchvision, geta
    model = torchvision.models.resnet18().eval()
    graph = geta.trace(model, torch.randn(1, 3, 224, 224))
    graph.summary()                       # the prunable groups
    geta.prune(model, graph, {0: [0, 5]}) # remove channels 0 and 5 of group 0

    geta.quant.prepare(model, init_bits=4)  # learnable quantizers on conv/linear weights
    geta.export.save(model, "out/")         # bit-packed artifact (safetensors + JSON)
    print(geta.size_report(model, "out/"))  # papers' ratio and real bytes
"""

from geta import export, hf, quant
from geta.errors import ArtifactError, GetaError, PruneError, TraceError
from geta.export.size import size_report
from geta.graph import DependencyGraph, GroupMember, PruningGroup, prune, trace, zero_groups

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "DependencyGraph",
    "GetaError",
    "GroupMember",
    "PruneError",
    "PruningGroup",
    "TraceError",
    "export",
    "hf",
    "prune",
    "quant",
    "size_report",
    "trace",
    "zero_groups",
]
