"""Normalisation layers. Batch and instance norm treat each channel on its own (the channel
passes through and ties the per-channel parameters and statistics to it). Layer and RMS norm
average over their normalised dims, so those dims are blocked (or, with
``geta.trace(..., through_norms=True)``, kept prunable as inexact ``hidden`` groups). Group norm averages inside
each group of channels: whole groups can go, single channels cannot."""

from __future__ import annotations

import torch
import torch.fx as fx

from geta.graph.rules.base import RuleContext, register_rule

aten = torch.ops.aten


def _tie(ctx: RuleContext, channel: int, tensors: list) -> None:
    for t in tensors:
        atoms = ctx.dims(t)
        if atoms:
            ctx.unify(atoms[0], channel)


def _tuple_outputs(ctx: RuleContext, node: fx.Node, out: list[int], channel: int | None):
    val = node.meta.get("val")
    if not isinstance(val, (tuple, list)):
        ctx.set_output(out)
        return
    outs: list[list[int] | None] = [out]
    for i in range(1, len(val)):
        shape = ctx.out_shape(i)
        if channel is not None and shape == (ctx.spaces.size(channel),):
            outs.append([channel])
        else:
            outs.append([ctx.fresh(s) for s in shape])
    ctx.set_outputs(outs)


@register_rule(
    aten.batch_norm,
    aten.native_batch_norm,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training,
    aten._native_batch_norm_legit_functional,
    aten.instance_norm,
    aten.cudnn_batch_norm,
    aten.miopen_batch_norm,
)
def batch_norm_rule(ctx: RuleContext, node: fx.Node) -> None:
    xa = ctx.dims(node.args[0])
    channel = xa[1] if len(xa) > 1 else xa[0]
    _tie(ctx, channel, [a for a in node.args[1:5] if isinstance(a, fx.Node)])
    _tuple_outputs(ctx, node, xa, channel)


@register_rule(aten.layer_norm, aten.native_layer_norm, aten.rms_norm, aten._fused_rms_norm)
def layer_norm_rule(ctx: RuleContext, node: fx.Node) -> None:
    xa = ctx.dims(node.args[0])
    k = len(node.args[1])
    normed = xa[len(xa) - k :]
    ctx.normalised(normed, "normalised over")
    for t in node.args[2:4]:
        if isinstance(t, fx.Node) and ctx.dims(t) is not None:
            for a, b in zip(ctx.dims(t), normed, strict=True):
                ctx.unify(a, b)
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        outs: list[list[int] | None] = [xa]
        outs += [[ctx.fresh(s) for s in ctx.out_shape(i)] for i in range(1, len(val))]
        ctx.set_outputs(outs)
    else:
        ctx.set_output(xa)


@register_rule(aten.group_norm, aten.native_group_norm)
def group_norm_rule(ctx: RuleContext, node: fx.Node) -> None:
    xa = ctx.dims(node.args[0])
    if node.target.overloadpacket is aten.group_norm:
        num_groups, params = node.args[1], node.args[2:4]
    else:  # native_group_norm(input, weight, bias, N, C, HxW, group, eps)
        num_groups, params = node.args[6], node.args[1:3]
    channel = xa[1]
    spaces = ctx.spaces
    groups = spaces.new(num_groups)
    inner = ctx.fresh(spaces.size(channel) // num_groups, "normalised over within a group")
    ctx.unify(channel, spaces.prod([groups, inner]))
    ctx.bind("num_groups", groups)
    _tie(ctx, channel, [p for p in params if isinstance(p, fx.Node)])
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        ctx.set_outputs(
            [xa, *[[ctx.fresh(s) for s in ctx.out_shape(i)] for i in range(1, len(val))]]
        )
    else:
        ctx.set_output(xa)


@register_rule(aten.prelu, aten._prelu_kernel)
def prelu_rule(ctx: RuleContext, node: fx.Node) -> None:
    """PReLU's weight has one slope per channel (dim 1), or a single shared slope."""
    xa = ctx.dims(node.args[0])
    wa = ctx.dims(node.args[1])
    if wa and ctx.shape(node.args[1])[0] > 1:
        ctx.unify(wa[0], xa[1] if len(xa) > 1 else xa[0])
    ctx.set_output(xa)
