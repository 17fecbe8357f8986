"""Qwen2: built like Llama (grouped-query attention, rotary embeddings, gated MLP)."""

from geta.models.hf.llama import register_llama_like

register_llama_like("qwen2", "Qwen2")
