"""Elementwise ops: every output index comes from the same index of each input (with
broadcasting, aligned from the right). Pruning a channel of such an op never changes another
channel's value, so these ops couple dimensions without blocking them."""

from __future__ import annotations

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule

__all__ = ["broadcast_rule", "broadcast_unify", "POINTWISE_OPS"]

aten = torch.ops.aten


def broadcast_unify(
    ctx: RuleContext, tensors: list[fx.Node], out_shape: tuple[int, ...]
) -> list[int]:
    """Unify the right-aligned dims of ``tensors`` that have the output's size; return the
    output's atoms (a new blocked atom where no input supplies the dim)."""
    rank = len(out_shape)
    out: list[int] = []
    for d, size in enumerate(out_shape):
        matches: list[int] = []
        for t in tensors:
            atoms = ctx.dims(t)
            shape = ctx.shape(t)
            k = d - (rank - len(atoms))
            if k >= 0 and shape[k] == size:
                matches.append(atoms[k])
        for other in matches[1:]:
            ctx.unify(matches[0], other)
        out.append(matches[0] if matches else ctx.fresh(size))
    return out


def broadcast_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Rule for elementwise ops over all tensor arguments."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):  # e.g. native_dropout -> (out, mask)
        shapes = [ctx.out_shape(i) for i in range(len(val))]
        outs = [broadcast_unify(ctx, ctx.tensor_args(), s) for s in shapes]
        ctx.set_outputs(outs)
    else:
        ctx.set_output(broadcast_unify(ctx, ctx.tensor_args(), ctx.out_shape()))


POINTWISE_OPS = [
    "abs",
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "neg",
    "pow",
    "sqrt",
    "rsqrt",
    "exp",
    "log",
    "log1p",
    "expm1",
    "reciprocal",
    "square",
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "softplus",
    "log_sigmoid",
    "erf",
    "sin",
    "cos",
    "clamp",
    "clamp_min",
    "clamp_max",
    "clip",
    "where",
    "masked_fill",
    "maximum",
    "minimum",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_not",
    "logical_and",
    "logical_or",
    "bitwise_not",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "__and__",
    "__or__",
    "__xor__",
    "isnan",
    "isinf",
    "nan_to_num",
    "lerp",
    "addcmul",
    "addcdiv",
    "dropout",
    "native_dropout",
    "feature_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "clone",
    "contiguous",
    "detach",
    "alias",
    "lift_fresh_copy",
    "_to_copy",
    "to",
    "type_as",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "rand_like",
    "randn_like",
    "copy",
    "copy_",
    "fill",
    "fill_",
    "threshold",
    "zero",
]


def _register_pointwise() -> None:
    # ``min`` / ``max`` are reductions, except their elementwise ``.other`` overloads (an exact
    # overload wins over the packet's rule)
    ops = [aten.min.other, aten.max.other]
    for name in POINTWISE_OPS:
        for variant in (name, name + "_"):
            op = getattr(aten, variant, None)
            if op is not None:
                ops.append(op)
    register_rule(*ops)(broadcast_rule)


_register_pointwise()
