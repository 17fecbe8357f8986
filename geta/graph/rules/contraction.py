"""Ops that contract a dimension: convolutions (grouped, depthwise, transposed), linear
layers and matrix products, einsum, embedding lookups and scaled-dot-product attention.

A contracted dimension sums over channels, so a zeroed channel contributes nothing and can be
removed from both operands: contraction couples the two operands' dimensions without blocking.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule

aten = torch.ops.aten


def _conv(ctx: RuleContext, x, w, b, transposed: bool, groups: int) -> None:
    xa, wa = ctx.dims(x), ctx.dims(w)
    out_shape = ctx.out_shape()
    batched = len(xa) == len(wa)
    c = 1 if batched else 0
    spaces = ctx.spaces
    if groups == 1:
        in_part, out_part = (wa[0], wa[1]) if transposed else (wa[1], wa[0])
        ctx.unify(xa[c], in_part)
        out_ch = out_part
    else:
        g = spaces.new(groups)
        ctx.bind("groups", g)
        if transposed:  # weight [Cin, Cout/g, k...]
            in_part = spaces.new(spaces.size(wa[0]) // groups)
            ctx.unify(wa[0], spaces.prod([g, in_part]))
            out_ch = spaces.prod([g, wa[1]])
        else:  # weight [Cout, Cin/g, k...]
            in_part = wa[1]
            out_ch = wa[0]
            ctx.unify(wa[0], spaces.prod([g, spaces.new(spaces.size(wa[0]) // groups)]))
        ctx.unify(xa[c], spaces.prod([g, in_part]))
    ctx.mark_contracted(w, in_part)
    ctx.mark_contracted(w, wa[0] if transposed else in_part)
    for k in wa[2:]:
        ctx.block(k, "convolution kernel window")
    if b is not None and ctx.dims(b) is not None:
        ctx.unify(ctx.dims(b)[0], out_ch)
    out = [xa[0]] if batched else []
    out.append(out_ch)
    out += [ctx.fresh(s, "convolution output position") for s in out_shape[c + 1 :]]
    ctx.set_output(out)


@register_rule(aten.conv1d, aten.conv2d, aten.conv3d)
def conv_rule(ctx: RuleContext, node: fx.Node) -> None:
    groups = ctx.arg(6, "groups", 1)
    if not isinstance(groups, int):
        raise NotImplementedError("symbolic groups")
    _conv(ctx, node.args[0], node.args[1], ctx.arg(2, "bias"), False, groups)


@register_rule(aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d)
def conv_transpose_rule(ctx: RuleContext, node: fx.Node) -> None:
    _conv(ctx, node.args[0], node.args[1], ctx.arg(2, "bias"), True, ctx.arg(6, "groups", 1))


@register_rule(aten.convolution, aten._convolution)
def convolution_rule(ctx: RuleContext, node: fx.Node) -> None:
    transposed = bool(ctx.arg(6, "transposed", False))
    groups = ctx.arg(8, "groups", 1)
    _conv(ctx, node.args[0], node.args[1], ctx.arg(2, "bias"), transposed, groups)


@register_rule(aten.linear)
def linear_rule(ctx: RuleContext, node: fx.Node) -> None:
    xa, wa = ctx.dims(node.args[0]), ctx.dims(node.args[1])
    b = ctx.arg(2, "bias")
    ctx.unify(xa[-1], wa[-1])
    ctx.mark_contracted(node.args[1], wa[-1])
    out_ch = wa[0] if len(wa) == 2 else None
    if b is not None and ctx.dims(b) is not None:
        ctx.unify(ctx.dims(b)[-1], out_ch)
    ctx.set_output([*xa[:-1], out_ch] if out_ch is not None else xa[:-1])


def _matmul(ctx: RuleContext, a: fx.Node, b: fx.Node) -> list[int]:
    """torch.matmul semantics, including 1-D operands and broadcast batch dims."""
    aa, ba = ctx.dims(a), ctx.dims(b)
    sa, sb = ctx.shape(a), ctx.shape(b)
    ka = aa[-1]
    kb = ba[0] if len(ba) == 1 else ba[-2]
    ctx.unify(ka, kb)
    ctx.mark_contracted(a, ka)
    ctx.mark_contracted(b, kb)
    rows = [aa[-2]] if len(aa) >= 2 else []
    cols = [ba[-1]] if len(ba) >= 2 else []
    batch_a, batch_b = aa[:-2], ba[:-2]
    shape_a, shape_b = sa[:-2], sb[:-2]
    n = max(len(batch_a), len(batch_b))
    batch: list[int] = []
    for d in range(n):
        i, j = d - (n - len(batch_a)), d - (n - len(batch_b))
        cands = []
        if i >= 0:
            cands.append((batch_a[i], shape_a[i]))
        if j >= 0:
            cands.append((batch_b[j], shape_b[j]))
        size = max(s for _, s in cands)
        same = [x for x, s in cands if s == size]
        for other in same[1:]:
            ctx.unify(same[0], other)
        batch.append(same[0])
    return batch + rows + cols


@register_rule(aten.matmul, aten.mm, aten.bmm)
def matmul_rule(ctx: RuleContext, node: fx.Node) -> None:
    ctx.set_output(_matmul(ctx, node.args[0], node.args[1]))


@register_rule(aten.addmm, aten.baddbmm, aten.addbmm)
def addmm_rule(ctx: RuleContext, node: fx.Node) -> None:
    """``beta * input + alpha * (m1 @ m2)``: a matmul plus a broadcast add."""
    prod = _matmul(ctx, node.args[1], node.args[2])
    bias = node.args[0]
    if ctx.dims(bias) is not None:
        rank = len(prod)
        for k, (a, s) in enumerate(zip(ctx.dims(bias), ctx.shape(bias), strict=True)):
            d = rank - len(ctx.dims(bias)) + k
            if s == ctx.out_shape()[d]:
                ctx.unify(a, prod[d])
    ctx.set_output(prod)


@register_rule(aten.einsum)
def einsum_rule(ctx: RuleContext, node: fx.Node) -> None:
    """Same letter, same axis; letters missing from the output are contracted."""
    equation = node.args[0].replace(" ", "")
    operands = list(node.args[1])
    if "..." in equation or "->" not in equation:
        raise NotImplementedError("einsum with ellipsis or implicit output")
    lhs, rhs = equation.split("->")
    letter_atom: dict[str, int] = {}
    for spec, t in zip(lhs.split(","), operands, strict=True):
        for letter, atom, size in zip(spec, ctx.dims(t), ctx.shape(t), strict=True):
            if size == 1:
                continue
            if letter in letter_atom:
                ctx.unify(letter_atom[letter], atom)
            else:
                letter_atom[letter] = atom
            if letter not in rhs:
                ctx.mark_contracted(t, atom)
    out_shape = ctx.out_shape()
    ctx.set_output(
        [
            letter_atom.get(ch, ctx.spaces.new(1)) if s != 1 else ctx.spaces.new(1)
            for ch, s in zip(rhs, out_shape, strict=True)
        ]
    )


@register_rule(aten.embedding)
def embedding_rule(ctx: RuleContext, node: fx.Node) -> None:
    wa = ctx.dims(node.args[0])
    idx = ctx.dims(node.args[1])
    ctx.block(wa[0], "rows looked up by index")
    ctx.set_output([*idx, wa[1]])


_SDPA_OPS = [
    aten.scaled_dot_product_attention,
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention,
]


@register_rule(*_SDPA_OPS)
def sdpa_rule(ctx: RuleContext, node: fx.Node) -> None:
    """q [..., Hq, L, E], k [..., Hkv, S, E], v [..., Hkv, S, Ev] -> [..., Hq, L, Ev].

    Heads pass through (with grouped-query attention a key/value head is tied to its block of
    query heads); E is contracted, but it is blocked when the softmax scale is left to its
    default, which depends on E. S is softmaxed over, so it is blocked.
    """
    q, k, v = node.args[:3]
    qa, ka, va = ctx.dims(q), ctx.dims(k), ctx.dims(v)
    sq, sk = ctx.shape(q), ctx.shape(k)
    scale = node.kwargs.get("scale")
    mask = node.kwargs.get("attn_mask", node.kwargs.get("attn_bias"))
    if mask is None and len(node.args) > 3 and isinstance(node.args[3], fx.Node):
        mask = node.args[3]
    if node.target.overloadpacket is aten.scaled_dot_product_attention and len(node.args) > 6:
        scale = node.args[6]
    lead_q, lead_k = qa[:-2], ka[:-2]
    if len(lead_q) >= 1 and len(lead_k) >= 1 and sq[-3] != sk[-3]:
        rep = ctx.fresh(sq[-3] // sk[-3], "grouped-query head copies")
        ctx.unify(lead_q[-1], ctx.spaces.prod([lead_k[-1], rep]))
        lead_q, lead_k = lead_q[:-1], lead_k[:-1]
        heads = [qa[-3]]
    else:
        heads = []
    for a, b, c in zip(reversed(lead_q), reversed(lead_k), reversed(va[:-2]), strict=False):
        ctx.unify(a, b)
        ctx.unify(b, c)
    batch = qa[: len(lead_q)] + heads
    if len(qa) >= 3:
        ctx.tag(qa[-3], "head")
    ctx.tag(qa[-1], "head_dim")
    ctx.tag(va[-1], "head_dim")
    ctx.unify(qa[-1], ka[-1])
    ctx.mark_contracted(q, qa[-1])
    ctx.mark_contracted(k, ka[-1])
    if scale is None:
        ctx.block(qa[-1], "attention scale derived from head_dim")
    ctx.unify(ka[-2], va[-2])
    ctx.block(ka[-2], "softmax over keys")
    out = [*batch, qa[-2], va[-1]]
    if mask is not None and ctx.dims(mask) is not None:
        target = [*batch, qa[-2], ka[-2]]
        mask_atoms, mask_shape = ctx.dims(mask), ctx.shape(mask)
        for k in range(1, min(len(mask_atoms), len(target)) + 1):
            if mask_shape[-k] == ctx.spaces.size(target[-k]):
                ctx.unify(mask_atoms[-k], target[-k])
    if isinstance(node.meta.get("val"), (tuple, list)):
        ctx.set_outputs([out])
    else:
        ctx.set_output(out)
