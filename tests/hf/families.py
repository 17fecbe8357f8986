"""Tiny random configs (2 layers, hidden 48, 3-6 heads, vocab 100) of every covered family."""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as T
from torch import nn

import geta

V = 100
TEXT = dict(vocab_size=V, max_position_embeddings=32)
SIZES = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40)
LAYERS = {k: SIZES[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
SEQ2SEQ = dict(layers=2, attention_heads=3, ffn_dim=40)  # each side of an encoder-decoder


def _decoder(config_cls, **extra):
    return config_cls(**{**SIZES, "num_attention_heads": 6}, num_key_value_heads=3, **TEXT, **extra)


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "bert": lambda: T.BertModel(T.BertConfig(**SIZES, **TEXT)),
    "roberta": lambda: T.RobertaForMaskedLM(
        T.RobertaConfig(**SIZES, vocab_size=V, max_position_embeddings=40, pad_token_id=1)
    ),
    "distilbert": lambda: T.DistilBertModel(
        T.DistilBertConfig(dim=48, n_layers=2, n_heads=3, hidden_dim=40, **TEXT)
    ),
    "albert": lambda: T.AlbertModel(T.AlbertConfig(**SIZES, embedding_size=16, **TEXT)),
    "gpt2": lambda: T.GPT2LMHeadModel(
        T.GPT2Config(n_embd=48, n_layer=2, n_head=3, n_inner=40, vocab_size=V, n_positions=32)
    ),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**SIZES, **TEXT)),
    "llama": lambda: T.LlamaForCausalLM(_decoder(T.LlamaConfig)),
    "mistral": lambda: T.MistralForCausalLM(_decoder(T.MistralConfig)),
    "qwen2": lambda: T.Qwen2ForCausalLM(_decoder(T.Qwen2Config)),
    "phi3": lambda: T.Phi3ForCausalLM(_decoder(T.Phi3Config, pad_token_id=0)),
    "gemma": lambda: T.GemmaForCausalLM(_decoder(T.GemmaConfig, head_dim=8)),
    "t5": lambda: T.T5ForConditionalGeneration(
        T.T5Config(
            d_model=48,
            d_kv=8,
            d_ff=40,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=3,
            relative_attention_num_buckets=8,
            vocab_size=V,
            decoder_start_token_id=0,
        )
    ),
    "vit": lambda: T.ViTForImageClassification(
        T.ViTConfig(**SIZES, image_size=16, patch_size=4, num_labels=5)
    ),
    "swin": lambda: T.SwinForImageClassification(
        T.SwinConfig(
            image_size=16,
            patch_size=2,
            embed_dim=24,
            depths=[1, 1],
            num_heads=[3, 3],
            window_size=4,
            mlp_ratio=2.0,
            num_labels=5,
        )
    ),
    "clip": lambda: T.CLIPModel(
        T.CLIPConfig(
            text_config=dict(**SIZES, vocab_size=V, max_position_embeddings=16),
            vision_config=dict(**SIZES, image_size=16, patch_size=4),
            projection_dim=16,
        )
    ),
    "whisper": lambda: T.WhisperForConditionalGeneration(
        T.WhisperConfig(
            d_model=48,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=3,
            decoder_attention_heads=3,
            encoder_ffn_dim=40,
            decoder_ffn_dim=40,
            num_mel_bins=8,
            max_source_positions=6,
            max_target_positions=16,
            vocab_size=V,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=2,
            suppress_tokens=None,
            begin_suppress_tokens=None,
        )
    ),
}


# Families without a family adapter in geta (encoder, decoder, encoder-decoder, vision): their
# heads prune through the sizes the trial prune rewrites, or through the tensors alone.
OTHER_FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "electra": lambda: T.ElectraModel(T.ElectraConfig(**SIZES, embedding_size=48, **TEXT)),
    "roformer": lambda: T.RoFormerModel(T.RoFormerConfig(**SIZES, embedding_size=48, **TEXT)),
    "megatron_bert": lambda: T.MegatronBertModel(T.MegatronBertConfig(**SIZES, **TEXT)),
    "opt": lambda: T.OPTForCausalLM(
        T.OPTConfig(**LAYERS, ffn_dim=40, word_embed_proj_dim=48, **TEXT)
    ),
    "gpt_neo": lambda: T.GPTNeoForCausalLM(
        T.GPTNeoConfig(
            hidden_size=48,
            num_layers=2,
            num_heads=3,
            attention_types=[[["global", "local"], 1]],
            intermediate_size=40,
            window_size=4,
            **TEXT,
        )
    ),
    "falcon": lambda: T.FalconForCausalLM(
        T.FalconConfig(**LAYERS, vocab_size=V, new_decoder_architecture=False, multi_query=False)
    ),
    "stablelm": lambda: T.StableLmForCausalLM(_decoder(T.StableLmConfig)),
    "olmo": lambda: T.OlmoForCausalLM(_decoder(T.OlmoConfig, pad_token_id=0, eos_token_id=1)),
    "qwen3": lambda: T.Qwen3ForCausalLM(_decoder(T.Qwen3Config, head_dim=8)),
    "bart": lambda: T.BartModel(
        T.BartConfig(
            d_model=48,
            **{f"{side}_{k}": v for side in ("encoder", "decoder") for k, v in SEQ2SEQ.items()},
            **TEXT,
        )
    ),
    "deit": lambda: T.DeiTForImageClassification(
        T.DeiTConfig(**SIZES, image_size=16, patch_size=4, num_labels=5)
    ),
    "yolos": lambda: T.YolosModel(
        T.YolosConfig(**SIZES, image_size=[16, 16], patch_size=4, num_detection_tokens=2)
    ),
}


def compress_llama(budget: str, steps: int, device: str = "cpu"):
    """A tiny Llama compressed straight with geta.Compressor (its KV cache left on) and
    trained ``steps`` causal-LM steps on its example inputs. Returns the model, the inputs,
    the compressor and the zeroed model's logits (eval mode, before ``finalize``)."""
    torch.manual_seed(0)
    model = FAMILIES["llama"]().to(device)
    model.config.use_cache = True
    inputs = geta.hf.example_inputs(model)
    c = geta.Compressor(model, (), budget, example_kwargs=inputs)
    opt = c.optimizer(base="adamw", lr=1e-3, total_steps=steps)
    for _ in range(steps):
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        zeroed = model(**inputs, use_cache=False).logits
    return model, inputs, c, zeroed
