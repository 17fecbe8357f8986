"""ALBERT: one attention and FFN shared by every layer (so one group each, whatever the
depth); the attention keeps ``num_attention_heads`` and ``all_head_size``."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.all_head_size = m.query.out_features
    m.num_attention_heads = heads(m.all_head_size, m.attention_head_size)
    return {"num_attention_heads": m.num_attention_heads}


register_family(
    "albert",
    "transformers.models.albert.modeling_albert",
    AlbertAttention=attention,
    AlbertLayer=lambda m: {"intermediate_size": m.ffn.out_features},
)
