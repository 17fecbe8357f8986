"""geta: joint structured pruning and quantization of any PyTorch model under a size budget.

Quick start (compress under a budget inside your own training loop)::

    c = geta.Compressor(model, (x,), budget=geta.Budget.size(ratio=50))
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=steps)
    for x, y in loader:
        F.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
    small = c.finalize(); c.export("out/"); print(c.report())

The pieces on their own::

    import torch, torchvision, geta
    model = torchvision.models.resnet18().eval()
    graph = geta.trace(model, torch.randn(1, 3, 224, 224))
    graph.summary()                       # the prunable groups
    geta.prune(model, graph, {0: [0, 5]}) # remove channels 0 and 5 of group 0

    geta.quant.prepare(model, init_bits=4)  # learnable quantizers on conv/linear weights
    geta.export.save(model, "out/")         # bit-packed artifact (safetensors + JSON)
    print(geta.size_report(model, "out/"))  # papers' ratio and real bytes
    fast = geta.deploy(model)               # int8/int4 codes in RAM, integer kernels
"""

from geta import deployment, export, hf, optim, quant
from geta.compressor import Compressor, CompressorConfig
from geta.deployment import deploy
from geta.errors import (
    ArtifactError,
    BudgetError,
    ConfigError,
    DivergenceError,
    GetaError,
    PruneError,
    TraceError,
)
from geta.export.size import size_report
from geta.graph import DependencyGraph, GroupMember, PruningGroup, prune, trace, zero_groups
from geta.optim import AdmmConfig, AdmmOptimizer, Budget, GetaOptimizer, LayerTarget

__version__ = "0.1.0"

__all__ = [
    "AdmmConfig",
    "AdmmOptimizer",
    "ArtifactError",
    "Budget",
    "BudgetError",
    "Compressor",
    "ConfigError",
    "CompressorConfig",
    "DependencyGraph",
    "DivergenceError",
    "GetaError",
    "GetaOptimizer",
    "GroupMember",
    "LayerTarget",
    "PruneError",
    "PruningGroup",
    "TraceError",
    "deploy",
    "deployment",
    "export",
    "hf",
    "optim",
    "prune",
    "quant",
    "size_report",
    "trace",
    "zero_groups",
]
