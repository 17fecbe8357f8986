"""Ops that rearrange dimensions without touching values: reshape (split and merge of dims),
permute, expand and repeat."""

from __future__ import annotations

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule

aten = torch.ops.aten


def _blocks(in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """Pair up runs of input and output dims with equal products (size-1 dims excluded)."""
    ins = [i for i, s in enumerate(in_shape) if s != 1]
    outs = [j for j, s in enumerate(out_shape) if s != 1]
    i = j = 0
    while i < len(ins) and j < len(outs):
        bi, bo = [ins[i]], [outs[j]]
        pi, po = in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                bi.append(ins[i])
                pi *= in_shape[ins[i]]
                i += 1
            else:
                bo.append(outs[j])
                po *= out_shape[outs[j]]
                j += 1
        yield bi, bo


def reshape_rule(ctx: RuleContext, node: fx.Node) -> None:
    """view / reshape / flatten / unflatten / squeeze / unsqueeze on ``args[0]``.

    Merged dims become a product of their atoms; split dims become factors of the input atom
    (so ``hidden -> (heads, head_dim)`` makes heads and head dims separate leaves).
    """
    x = node.args[0]
    in_atoms, in_shape = ctx.dims(x), ctx.shape(x)
    out_shape = ctx.out_shape()
    out: list[int | None] = [None] * len(out_shape)
    if 0 in in_shape:
        ctx.set_output([ctx.fresh(s) for s in out_shape])
        return
    for bi, bo in _blocks(in_shape, out_shape):
        if len(bi) == 1 and len(bo) == 1:
            out[bo[0]] = in_atoms[bi[0]]
            continue
        merged = ctx.spaces.prod([in_atoms[k] for k in bi])
        pieces = [ctx.spaces.new(out_shape[k]) for k in bo]
        ctx.unify(merged, ctx.spaces.prod(pieces))
        for k, p in zip(bo, pieces, strict=True):
            out[k] = p
    ctx.set_output([a if a is not None else ctx.spaces.new(1) for a in out])


register_rule(
    aten.view,
    aten.reshape,
    aten._unsafe_view,
    aten.flatten,
    aten.unflatten,
    aten.squeeze,
    aten.unsqueeze,
    aten.view_as,
    aten.reshape_as,
)(reshape_rule)


@register_rule(aten.permute)
def permute_rule(ctx: RuleContext, node: fx.Node) -> None:
    atoms = ctx.dims(node.args[0])
    order = [ctx.norm_dim(d, len(atoms)) for d in node.args[1]]
    ctx.set_output([atoms[d] for d in order])


@register_rule(aten.transpose, aten.swapaxes, aten.swapdims)
def transpose_rule(ctx: RuleContext, node: fx.Node) -> None:
    atoms = ctx.dims(node.args[0])
    a, b = (ctx.norm_dim(d, len(atoms)) for d in node.args[1:3])
    atoms[a], atoms[b] = atoms[b], atoms[a]
    ctx.set_output(atoms)


@register_rule(aten.t, aten.numpy_T)
def t_rule(ctx: RuleContext, node: fx.Node) -> None:
    ctx.set_output(list(reversed(ctx.dims(node.args[0]))))


@register_rule(aten.expand, aten.expand_as, aten.broadcast_to)
def expand_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Broadcast dims (size 1 -> n) are copies of one value: a new, blocked axis."""
    atoms, shape = ctx.dims(node.args[0]), ctx.shape(node.args[0])
    out_shape = ctx.out_shape()
    lead = len(out_shape) - len(atoms)
    out = [ctx.fresh(s, "broadcast copies") for s in out_shape[:lead]]
    for a, s, o in zip(atoms, shape, out_shape[lead:], strict=True):
        out.append(a if s == o else ctx.fresh(o, "broadcast copies"))
    ctx.set_output(out)


@register_rule(aten.repeat)
def repeat_rule(ctx: RuleContext, node: fx.Node) -> None:
    """``repeat`` tiles: output index ``r * n + i`` is input index ``i``."""
    atoms = ctx.dims(node.args[0])
    reps = list(node.args[1])
    lead = len(reps) - len(atoms)
    out = [ctx.fresh(r, "tiled copies") for r in reps[:lead]]
    for a, r in zip(atoms, reps[lead:], strict=True):
        out.append(a if r == 1 else ctx.spaces.prod([ctx.fresh(r, "tiled copies"), a]))
    ctx.set_output(out)


@register_rule(aten.repeat_interleave)
def repeat_interleave_rule(ctx: RuleContext, node: fx.Node) -> None:
    """``repeat_interleave(x, r, dim)``: output index ``i * r + k`` is input index ``i``."""
    x = node.args[0]
    reps = ctx.arg(1, "repeats")
    dim = ctx.arg(2, "dim")
    if not isinstance(x, fx.Node) or not isinstance(reps, int) or dim is None:
        raise NotImplementedError("repeat_interleave with tensor repeats or no dim")
    atoms = ctx.dims(x)
    d = ctx.norm_dim(dim, len(atoms))
    atoms[d] = ctx.spaces.prod([atoms[d], ctx.fresh(reps, "interleaved copies")])
    ctx.set_output(atoms)
