"""Reductions, softmax-like ops, pooling and resampling, and ops that only read metadata or
create new tensors."""

from __future__ import annotations

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule

aten = torch.ops.aten


def _dims_arg(ctx: RuleContext, node: fx.Node, rank: int) -> list[int]:
    dim = ctx.named("dim", None)
    if dim is None or dim == []:
        return list(range(rank))
    if isinstance(dim, int):
        dim = [dim]
    return sorted(ctx.norm_dim(d, rank) for d in dim)


def _is_square(node: object) -> bool:
    """``x ** 2`` or ``x * x``: the statistic of an RMS norm written out (HF's RMSNorm)."""
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return False
    packet = getattr(node.target, "overloadpacket", None)
    if packet is aten.pow:
        return len(node.args) > 1 and node.args[1] == 2
    return packet is aten.mul and len(node.args) > 1 and node.args[0] is node.args[1]


def reduce_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Reduced dims are blocked (removing a channel changes a mean, max or norm); the others
    pass through, size-1 where ``keepdim``. The mean of a square (an RMS norm written out) is
    a norm's statistic: see :meth:`RuleContext.normalised`."""
    xa = ctx.dims(node.args[0])
    reduced = _dims_arg(ctx, node, len(xa))
    if node.target.overloadpacket is aten.mean and _is_square(node.args[0]):
        ctx.normalised([xa[d] for d in reduced], "normalised over (root mean square)")
    else:
        ctx.block([xa[d] for d in reduced], "reduced over")
    val = node.meta.get("val")
    shapes = (
        [ctx.out_shape(i) for i in range(len(val))]
        if isinstance(val, (tuple, list))
        else [ctx.out_shape()]
    )
    outs = []
    for shape in shapes:
        if len(shape) == len(xa):
            outs.append([ctx.spaces.new(1) if d in reduced else a for d, a in enumerate(xa)])
        else:
            outs.append([a for d, a in enumerate(xa) if d not in reduced])
    if isinstance(val, (tuple, list)):
        ctx.set_outputs(outs)
    else:
        ctx.set_output(outs[0])


register_rule(
    aten.sum,
    aten.mean,
    aten.amax,
    aten.amin,
    aten.max,
    aten.min,
    aten.argmax,
    aten.argmin,
    aten.var,
    aten.std,
    aten.var_mean,
    aten.std_mean,
    aten.logsumexp,
    aten.prod,
    aten.all,
    aten.any,
    aten.norm,
    aten.linalg_vector_norm,
    aten.nansum,
    aten.count_nonzero,
)(reduce_rule)


def along_dim_rule(ctx: RuleContext, node: fx.Node) -> None:
    """softmax / cumsum / sort along one dim: that dim is blocked, shapes are unchanged."""
    xa = ctx.dims(node.args[0])
    d = ctx.norm_dim(ctx.named("dim", -1), len(xa))
    ctx.block(xa[d], "normalised or accumulated along")
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        ctx.set_outputs([list(xa) for _ in val])
    else:
        ctx.set_output(xa)


register_rule(
    aten.softmax,
    aten._softmax,
    aten.log_softmax,
    aten._log_softmax,
    aten.cumsum,
    aten.cumprod,
    aten.sort,
    aten.argsort,
)(along_dim_rule)


@register_rule(aten.diff)
def diff_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Differences of neighbours along one dim: that dim is blocked and shrinks."""
    xa = ctx.dims(node.args[0])
    d = ctx.norm_dim(ctx.named("dim", -1), len(xa))
    ctx.block(xa[d], "differenced along")
    out = list(xa)
    out[d] = ctx.fresh(ctx.out_shape()[d])
    ctx.set_output(out)


@register_rule(aten.topk)
def topk_rule(ctx: RuleContext, node: fx.Node) -> None:
    xa = ctx.dims(node.args[0])
    d = ctx.norm_dim(ctx.arg(2, "dim", -1), len(xa))
    ctx.block(xa[d], "top-k along")
    out = list(xa)
    out[d] = ctx.fresh(ctx.out_shape(0)[d])
    ctx.set_outputs([out, list(out)])


def spatial_rule(spatial: int):
    """Pooling / resampling over the last ``spatial`` dims; leading dims pass through."""

    def rule(ctx: RuleContext, node: fx.Node) -> None:
        xa = ctx.dims(node.args[0])
        keep = xa[: len(xa) - spatial]
        val = node.meta.get("val")
        shapes = (
            [ctx.out_shape(i) for i in range(len(val))]
            if isinstance(val, (tuple, list))
            else [ctx.out_shape()]
        )
        outs = [
            keep + [ctx.fresh(s, "resampled position") for s in shape[len(keep) :]]
            for shape in shapes
        ]
        if isinstance(val, (tuple, list)):
            ctx.set_outputs(outs)
        else:
            ctx.set_output(outs[0])

    return rule


for _k in (1, 2, 3):
    _names = [
        f"avg_pool{_k}d",
        f"max_pool{_k}d",
        f"max_pool{_k}d_with_indices",
        f"adaptive_avg_pool{_k}d",
        f"_adaptive_avg_pool{_k}d",
        f"adaptive_max_pool{_k}d",
        f"lp_pool{_k}d",
        f"fractional_max_pool{_k}d",
    ]
    _names += {
        1: ["upsample_nearest1d", "upsample_linear1d", "_upsample_nearest_exact1d"],
        2: [
            "upsample_nearest2d",
            "upsample_bilinear2d",
            "upsample_bicubic2d",
            "_upsample_bilinear2d_aa",
            "_upsample_bicubic2d_aa",
            "_upsample_nearest_exact2d",
            "grid_sampler_2d",
        ],
        3: ["upsample_nearest3d", "upsample_trilinear3d", "_upsample_nearest_exact3d"],
    }[_k]
    _ops = [getattr(aten, n) for n in _names if hasattr(aten, n)]
    register_rule(*_ops)(spatial_rule(_k))


@register_rule(aten.roll, aten.flip)
def roll_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Rolled or flipped dims move values between positions: blocked."""
    xa = ctx.dims(node.args[0])
    dims = node.args[2] if node.target.overloadpacket is aten.roll else node.args[1]
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims:
        dims = list(range(len(xa)))
    ctx.block([xa[ctx.norm_dim(d, len(xa))] for d in dims], "rolled or flipped")
    ctx.set_output(xa)


def metadata_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Ops that read sizes or assert properties: they relate no channels."""


register_rule(
    aten.sym_size,
    aten.sym_numel,
    aten.sym_stride,
    aten._assert_async,
    aten._assert_scalar,
    aten._assert_tensor_metadata,
    aten.sym_constrain_range_for_size,
    aten.sym_constrain_range,
    aten._functional_sym_constrain_range_for_size,
)(metadata_rule)


def creation_rule(ctx: RuleContext, node: fx.Node) -> None:
    """New tensors whose values depend on the position (arange, eye, random, literal data):
    every dim is a new, blocked axis; the inputs are not affected."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        ctx.set_output([ctx.fresh(s, "created with a fixed shape") for s in ctx.out_shape()])


def constant_fill_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Tensors filled with one value (zeros, ones, full, empty): every index holds the same
    value, so any index can go; each dim is a new, free axis that the ops using the tensor
    tie to their channels. (The trial prune checks that the code creates the pruned size.)"""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        ctx.set_output([ctx.spaces.new(s) for s in ctx.out_shape()])


register_rule(
    aten.arange,
    aten.linspace,
    aten.eye,
    aten.rand,
    aten.randn,
    aten.randint,
    aten.scalar_tensor,
    aten.tensor,
)(creation_rule)

register_rule(
    aten.zeros,
    aten.ones,
    aten.full,
    aten.empty,
    aten.new_zeros,
    aten.new_ones,
    aten.new_full,
    aten.new_empty,
    aten.empty_strided,
    aten.new_empty_strided,
)(constant_fill_rule)
