"""Swin: window attention with a relative position bias table per head (pruned with its head).
Head counts are per stage in the config and the FFN width is a ratio, so a pruned Swin is
described by geta's per-layer shapes only."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.num_attention_heads = heads(m.o_proj.in_features, m.head_dim)
    return {}


register_family("swin", "transformers.models.swin.modeling_swin", SwinAttention=attention)
