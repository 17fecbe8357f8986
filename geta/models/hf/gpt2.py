"""GPT-2: the attention splits its fused ``c_attn`` output by ``split_size``, so that must
follow the pruned heads (Conv1D weights are ``[in, out]``)."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.split_size = m.c_proj.weight.shape[0]
    m.num_heads = heads(m.split_size, m.head_dim)
    return {"n_head": m.num_heads}


register_family(
    "gpt2",
    "transformers.models.gpt2.modeling_gpt2",
    GPT2Attention=attention,
    GPT2MLP=lambda m: {"n_inner": m.c_fc.weight.shape[1]},
)
