"""Whisper: the attention reshapes keys and values by ``num_heads``; encoder and decoder have
their own head counts and FFN widths in the config."""

from __future__ import annotations

from torch import nn

from geta.models.hf.registry import heads, register_family


def attention(m: nn.Module) -> dict[str, int]:
    m.num_heads = heads(m.out_proj.in_features, m.head_dim)
    side = "decoder" if m.is_decoder else "encoder"
    return {f"{side}_attention_heads": m.num_heads}


register_family(
    "whisper",
    "transformers.models.whisper.modeling_whisper",
    WhisperAttention=attention,
    WhisperEncoderLayer=lambda m: {"encoder_ffn_dim": m.fc1.out_features},
    WhisperDecoderLayer=lambda m: {"decoder_ffn_dim": m.fc1.out_features},
)
