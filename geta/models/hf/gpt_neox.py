"""GPT-NeoX: the fused ``query_key_value`` is laid out head by head, so whole heads prune
through it; partial rotary embeddings keep the head dims fixed."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.num_attention_heads = heads(m.dense.in_features, m.head_size)
    return {"num_attention_heads": m.num_attention_heads}


register_family(
    "gpt_neox",
    "transformers.models.gpt_neox.modeling_gpt_neox",
    GPTNeoXAttention=attention,
    GPTNeoXMLP=lambda m: {"intermediate_size": m.dense_h_to_4h.out_features},
)
