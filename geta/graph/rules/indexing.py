"""Ops that assemble or take apart dimensions by position: cat / stack, split / chunk /
unbind, slice / select / narrow, padding, advanced indexing and tuple access."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule
from geta.graph.rules.pointwise import broadcast_unify

aten = torch.ops.aten
_FULL = 2**62  # torch.export writes "to the end" as a huge int


@register_rule(aten.cat, aten.concat, aten.concatenate)
def cat_rule(ctx: RuleContext, node: fx.Node) -> None:
    tensors = [t for t in node.args[0] if ctx.dims(t) is not None and ctx.shape(t) != (0,)]
    rank = len(ctx.out_shape())
    dim = ctx.norm_dim(ctx.arg(1, "dim", 0), rank)
    first = ctx.dims(tensors[0])
    for t in tensors[1:]:
        for d, (a, b) in enumerate(zip(first, ctx.dims(t), strict=True)):
            if d != dim:
                ctx.unify(a, b)
    out = list(first)
    out[dim] = ctx.spaces.cat([ctx.dims(t)[dim] for t in tensors])
    ctx.set_output(out)


@register_rule(aten.stack)
def stack_rule(ctx: RuleContext, node: fx.Node) -> None:
    tensors = list(node.args[0])
    first = ctx.dims(tensors[0])
    for t in tensors[1:]:
        for a, b in zip(first, ctx.dims(t), strict=True):
            ctx.unify(a, b)
    dim = ctx.norm_dim(ctx.arg(1, "dim", 0), len(first) + 1)
    out = list(first)
    out.insert(dim, ctx.fresh(len(tensors), "stacked tensors"))
    ctx.set_output(out)


def _split_outputs(ctx: RuleContext, node: fx.Node, dim: int, sizes: list[int]) -> list[int]:
    atoms = ctx.dims(node.args[0])
    pieces = [ctx.spaces.new(s) for s in sizes]
    ctx.unify(atoms[dim], ctx.spaces.cat(pieces))
    outs = []
    for p in pieces:
        o = list(atoms)
        o[dim] = p
        outs.append(o)
    ctx.set_outputs(outs)
    return pieces


@register_rule(aten.split, aten.split_with_sizes, aten.chunk, aten.tensor_split)
def split_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Pieces of a split are sub-ranges. Pieces of an equal-size split (``split(n)``,
    ``chunk``) are also tied to each other, index by index, so they stay equal in size after
    pruning (the forward code recomputes the split from the size)."""
    op = node.target.overloadpacket
    rank = len(ctx.shape(node.args[0]))
    dim = ctx.norm_dim(ctx.arg(2, "dim", 0), rank)
    sizes = [ctx.out_shape(i)[dim] for i in range(len(node.meta["val"]))]
    pieces = _split_outputs(ctx, node, dim, sizes)
    if op is not aten.split_with_sizes:
        equal = [p for p in pieces if ctx.spaces.size(p) == sizes[0]]
        if len(equal) < len(pieces):
            ctx.block(ctx.dims(node.args[0])[dim], "uneven equal-size split")
        for p in equal[1:]:
            ctx.unify(equal[0], p)


@register_rule(aten.unbind)
def unbind_rule(ctx: RuleContext, node: fx.Node) -> None:
    atoms = ctx.dims(node.args[0])
    dim = ctx.norm_dim(ctx.arg(1, "dim", 0), len(atoms))
    ctx.block(atoms[dim], "unbound into separate tensors")
    rest = atoms[:dim] + atoms[dim + 1 :]
    ctx.set_outputs([list(rest) for _ in range(len(node.meta["val"]))])


@register_rule(aten.slice)
def slice_rule(ctx: RuleContext, node: fx.Node) -> None:
    """A slice with step 1 takes a sub-range: the sliced dim is the concatenation (before,
    piece, after), as for a split, and the output is the piece, so a fused projection sliced
    into parts (``qkv[..., :q_size]``) prunes part by part. The bounds must follow the pruned
    sizes: the trial prune of :func:`geta.trace` checks every slice's bounds and blocks the
    groups whose slices the code hard-codes. A strided slice blocks the dim."""
    atoms = ctx.dims(node.args[0])
    shape = ctx.shape(node.args[0])
    dim = ctx.norm_dim(ctx.arg(1, "dim", 0), len(atoms))
    start, end = slice_bounds(ctx.arg(2, "start", None), ctx.arg(3, "end", None), shape[dim])
    step = ctx.arg(4, "step", 1)
    if step != 1 or (start == 0 and end == shape[dim]):
        _sub_range(ctx, atoms, dim, step == 1, "sliced with a stride")
        return
    spaces = ctx.spaces
    piece = spaces.new(end - start)
    ctx.unify(atoms[dim], spaces.cat([spaces.new(start), piece, spaces.new(shape[dim] - end)]))
    out = list(atoms)
    out[dim] = piece
    ctx.set_output(out)


def slice_bounds(start: int | None, end: int | None, n: int) -> tuple[int, int]:
    """``(start, end)`` of ``x[start:end]`` on a dim of ``n``, as non-negative ints."""
    start = 0 if start is None else start
    end = n if end is None or end >= n else end
    start = max(start + n, 0) if start < 0 else min(start, n)
    end = max(end + n, 0) if end < 0 else end
    return start, max(start, end)


def _sub_range(ctx: RuleContext, atoms: list[int], dim: int, full: bool, reason: str) -> None:
    out = list(atoms)
    if not full:
        ctx.block(atoms[dim], reason)
        out[dim] = ctx.fresh(ctx.out_shape()[dim], reason)
    ctx.set_output(out)


@register_rule(aten.narrow)
def narrow_rule(ctx: RuleContext, node: fx.Node) -> None:
    atoms = ctx.dims(node.args[0])
    dim = ctx.norm_dim(node.args[1], len(atoms))
    full = ctx.out_shape()[dim] == ctx.shape(node.args[0])[dim]
    _sub_range(ctx, atoms, dim, full, "narrowed at fixed positions")


@register_rule(aten.select)
def select_rule(ctx: RuleContext, node: fx.Node) -> None:
    """A hard-coded index: the selected dimension is blocked, the others pass through."""
    atoms = ctx.dims(node.args[0])
    dim = ctx.norm_dim(node.args[1], len(atoms))
    ctx.block(atoms[dim], "indexed at a fixed position")
    ctx.set_output(atoms[:dim] + atoms[dim + 1 :])


@register_rule(aten.index_select)
def index_select_rule(ctx: RuleContext, node: fx.Node) -> None:
    atoms = ctx.dims(node.args[0])
    dim = ctx.norm_dim(node.args[1], len(atoms))
    ctx.block(atoms[dim], "gathered by index")
    idx = ctx.dims(node.args[2])
    atoms[dim] = idx[0] if idx else ctx.fresh(ctx.out_shape()[dim])
    ctx.set_output(atoms)


@register_rule(aten.gather)
def gather_rule(ctx: RuleContext, node: fx.Node) -> None:
    """``out[..i..] = x[..index[..i..]..]`` along ``dim``: that dim is blocked; elsewhere the
    output follows the index, and ties to ``x`` where the sizes agree."""
    xa, xs = ctx.dims(node.args[0]), ctx.shape(node.args[0])
    dim = ctx.norm_dim(node.args[1], len(xa))
    ia, ishape = ctx.dims(node.args[2]), ctx.shape(node.args[2])
    ctx.block(xa[dim], "gathered by index")
    for d in range(len(xa)):
        if d != dim:
            if xs[d] == ishape[d]:
                ctx.unify(xa[d], ia[d])
            else:
                ctx.block(xa[d], "partly gathered")
    ctx.set_output(list(ia))


@register_rule(aten.index)
def index_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Advanced indexing ``x[idx0, idx1, ...]``: indexed dims are blocked, the others pass
    through, and the result's indexed dims follow the (broadcast) index tensors."""
    atoms = ctx.dims(node.args[0])
    indices = list(node.args[1])
    used = [k for k, t in enumerate(indices) if t is not None]
    if not used or any(ctx.dims(indices[k]) is None for k in used):
        raise NotImplementedError("index with non-tensor indices")
    for k in used:
        ctx.block(atoms[k], "indexed by a tensor")
    idx_rank = max(len(ctx.shape(indices[k])) for k in used)
    if used == list(range(used[0], used[-1] + 1)):  # result dims go where the indices were
        lead, rest = atoms[: used[0]], atoms[used[-1] + 1 :]
    else:  # numpy rule: separated index dims go first
        lead, rest = [], [a for k, a in enumerate(atoms) if k not in used]
    window = ctx.out_shape()[len(lead) : len(lead) + idx_rank]
    idx_atoms = broadcast_unify(ctx, [indices[k] for k in used], window)
    ctx.set_output([*lead, *idx_atoms, *rest])


@register_rule(aten.constant_pad_nd, aten.pad)
def pad_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Zero padding: a padded dim is the concatenation (pad_before, x, pad_after); the padding
    itself is fixed and never pruned, the original positions stay prunable."""
    mode = ctx.arg(2, "mode", "constant")
    atoms = ctx.dims(node.args[0])
    pad = list(node.args[1])
    out = list(atoms)
    for k in range(len(pad) // 2):
        d = len(atoms) - 1 - k
        before, after = pad[2 * k], pad[2 * k + 1]
        if before == 0 and after == 0:
            continue
        if before < 0 or after < 0 or mode != "constant":
            ctx.block(atoms[d], "cropped or non-constant padding")
            out[d] = ctx.fresh(ctx.out_shape()[d])
            continue
        parts = [ctx.fresh(before, "padding"), atoms[d], ctx.fresh(after, "padding")]
        out[d] = ctx.spaces.cat(parts)
    ctx.set_output(out)


@register_rule(operator.getitem)
def getitem_rule(ctx: RuleContext, node: fx.Node) -> None:
    src, idx = node.args
    outs = ctx.atoms_of.get(src)
    if isinstance(outs, list) and isinstance(idx, int) and idx < len(outs):
        item = outs[idx]
        if isinstance(item, list):
            ctx.set_output(item)
