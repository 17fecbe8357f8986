"""BERT and RoBERTa: self- and cross-attention keep ``num_attention_heads`` and
``all_head_size``; the FFN width is ``intermediate_size``."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.all_head_size = m.query.out_features
    m.num_attention_heads = heads(m.all_head_size, m.attention_head_size)
    return {"num_attention_heads": m.num_attention_heads}


def intermediate(m: nn.Module) -> dict[str, int]:
    return {"intermediate_size": m.dense.out_features}


for _prefix, _name in (("Bert", "bert"), ("Roberta", "roberta")):
    register_family(
        _name,
        f"transformers.models.{_name}.modeling_{_name}",
        **{
            f"{_prefix}SelfAttention": attention,
            f"{_prefix}CrossAttention": attention,
            f"{_prefix}Intermediate": intermediate,
        },
    )
