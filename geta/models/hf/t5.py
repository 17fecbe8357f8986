"""T5: the attention keeps ``n_heads`` (it builds a zero position bias of that many heads) and
``inner_dim``; the FFN is ``wi`` or the gated ``wi_0`` / ``wi_1``."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.inner_dim = m.o.in_features
    m.n_heads = heads(m.inner_dim, m.key_value_proj_dim)
    return {"num_heads": m.n_heads}


register_family(
    "t5",
    "transformers.models.t5.modeling_t5",
    T5Attention=attention,
    T5DenseActDense=lambda m: {"d_ff": m.wi.out_features},
    T5DenseGatedActDense=lambda m: {"d_ff": m.wi_0.out_features},
)
