"""CLIP: text and vision towers, each with its own config (``text_config`` /
``vision_config``); the attention keeps ``num_heads``."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.num_heads = heads(m.out_proj.in_features, m.head_dim)
    return {"num_attention_heads": m.num_heads}


register_family(
    ("clip", "clip_text_model", "clip_vision_model"),
    "transformers.models.clip.modeling_clip",
    CLIPAttention=attention,
    CLIPMLP=lambda m: {"intermediate_size": m.fc1.out_features},
)
