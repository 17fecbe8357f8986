"""ViT: the attention keeps ``num_attention_heads``; the config reads ``head_dim`` when it has
one, so recording it keeps pruned heads expressible."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.num_attention_heads = heads(m.o_proj.in_features, m.head_dim)
    return {"num_attention_heads": m.num_attention_heads, "head_dim": m.head_dim}


register_family(
    "vit",
    "transformers.models.vit.modeling_vit",
    ViTAttention=attention,
    ViTMLP=lambda m: {"intermediate_size": m.fc1.out_features},
)
