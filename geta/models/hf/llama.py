"""Llama and the models built like it (grouped-query attention, rotary embeddings, gated MLP):
a key/value head prunes with its query heads, so ``num_key_value_groups`` is unchanged; the
config records both head counts and ``head_dim`` (which otherwise follows hidden / heads)."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    q_heads = heads(m.q_proj.out_features, m.head_dim)
    kv_heads = heads(m.k_proj.out_features, m.head_dim)
    m.num_key_value_groups = q_heads // kv_heads
    for attr, value in (("num_heads", q_heads), ("num_key_value_heads", kv_heads)):
        if hasattr(m, attr):
            setattr(m, attr, value)
    return {"num_attention_heads": q_heads, "num_key_value_heads": kv_heads, "head_dim": m.head_dim}


def mlp(m: nn.Module) -> dict[str, int]:
    m.intermediate_size = m.gate_proj.out_features
    return {"intermediate_size": m.intermediate_size}


def register_llama_like(model_type: str, prefix: str) -> None:
    """Register a family whose ``{prefix}Attention`` / ``{prefix}MLP`` are Llama's."""
    register_family(
        model_type,
        f"transformers.models.{model_type}.modeling_{model_type}",
        **{f"{prefix}Attention": attention, f"{prefix}MLP": mlp},
    )


register_llama_like("llama", "Llama")
