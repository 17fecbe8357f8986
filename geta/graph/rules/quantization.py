"""geta's quantizer op: the output has the input's layout. A quantizer neither splits nor
merges groups; per-channel quantizer parameters are sliced with their channels, per-tensor
ones are attached to every group that slices the quantized tensor."""

from __future__ import annotations

import torch
import torch.fx as fx

import geta.quant.ops  # noqa: F401  (defines torch.ops.geta.quantize)
from geta.graph.rules.base import RuleContext, register_rule


@register_rule(torch.ops.geta.quantize)
def quantize_rule(ctx: RuleContext, node: fx.Node) -> None:
    x = node.args[0]
    xa = ctx.dims(x)
    axis = ctx.named("axis", 0)
    axis = ctx.norm_dim(axis, len(xa)) if xa else 0
    per_tensor = []
    for p in node.args[1:4]:
        pa = ctx.dims(p)
        ctx.mark_role(p, "quantizer")
        if pa and ctx.shape(p)[0] > 1:
            ctx.unify(pa[0], xa[axis])
        elif isinstance(p, fx.Node):
            per_tensor.append(p)
    ctx.attach(x, per_tensor)
    ctx.set_output(xa)
