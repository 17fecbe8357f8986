"""Phi-3: one fused ``qkv_proj`` sliced at ``config.num_attention_heads * head_dim``, and one
fused ``gate_up_proj`` chunked in two (each FFN unit is a gate row with its up row).

The query size is read from the config the model shares between its layers, so an attention
whose heads were pruned gets its own shallow copy of the config with its head count (a later
``set_attn_implementation`` does not reach those copies)."""

from __future__ import annotations

import copy

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    q_heads = heads(m.o_proj.in_features, m.head_dim)
    kv_heads = (m.qkv_proj.out_features - m.o_proj.in_features) // (2 * m.head_dim)
    if m.config.num_attention_heads != q_heads:
        m.config = copy.copy(m.config)
        m.config.num_attention_heads = q_heads
    m.num_key_value_heads = kv_heads
    m.num_key_value_groups = q_heads // kv_heads
    return {"num_attention_heads": q_heads, "num_key_value_heads": kv_heads, "head_dim": m.head_dim}


register_family(
    "phi3",
    "transformers.models.phi3.modeling_phi3",
    Phi3Attention=attention,
    Phi3MLP=lambda m: {"intermediate_size": m.down_proj.in_features},
)
