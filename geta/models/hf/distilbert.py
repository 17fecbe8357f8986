"""DistilBERT: the attention keeps ``n_heads``; the FFN width is ``hidden_dim``."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.n_heads = heads(m.q_lin.out_features, m.attention_head_size)
    return {"n_heads": m.n_heads}


register_family(
    "distilbert",
    "transformers.models.distilbert.modeling_distilbert",
    DistilBertSelfAttention=attention,
    FFN=lambda m: {"hidden_dim": m.lin1.out_features},
)
