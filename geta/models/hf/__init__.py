"""HuggingFace transformers model families: adapters that keep each family's module
attributes in line with its pruned weights (see :mod:`geta.models.hf.registry`)."""

from geta.models.hf import (
    albert,
    bert,
    clip,
    distilbert,
    gemma,
    gpt_neox,
    llama,
    mistral,
    phi3,
    qwen2,
    swin,
    t5,
    vit,
    whisper,
)
from geta.models.hf.registry import (
    Family,
    LayerFields,
    adapt,
    families,
    family_of,
    register_family,
)

__all__ = [
    "Family",
    "LayerFields",
    "adapt",
    "albert",
    "bert",
    "clip",
    "distilbert",
    "families",
    "family_of",
    "gemma",
    "gpt_neox",
    "llama",
    "mistral",
    "phi3",
    "qwen2",
    "register_family",
    "swin",
    "t5",
    "vit",
    "whisper",
]
