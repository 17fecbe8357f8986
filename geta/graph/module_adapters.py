"""Module adapters: after surgery slices a module's parameters and buffers, its adapter
brings the module's own attributes (``in_channels``, ``num_features``, ...) in line, so the
result is an ordinary, smaller module.

Adapters are looked up by module type (``isinstance``), never by name. Register one for your
own module type with :func:`register_module_adapter`; ``quantities`` carries structural sizes
recorded by op rules (a convolution's ``groups``, a group norm's ``num_groups``) after pruning.

Some attributes live above the resized modules (an attention module's head count, read from
its projections' new shapes). :func:`register_model_adapter` adds a hook that surgery runs on
the whole model after the module adapters, in a real prune and in the trial prune of
:func:`geta.trace` alike, so a hook that makes a group prunable also makes it pass the trial.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from geta.lazy_types import LazyTypes

__all__ = [
    "register_module_adapter",
    "register_lazy_module_adapter",
    "register_model_adapter",
    "adapt_module",
    "adapt_model",
]

ModuleAdapter = Callable[[nn.Module, dict[str, int]], None]
_ADAPTERS: list[tuple[type, ModuleAdapter]] = []


def register_module_adapter(module_type: type) -> Callable[[ModuleAdapter], ModuleAdapter]:
    def deco(fn: ModuleAdapter) -> ModuleAdapter:
        _ADAPTERS.insert(0, (module_type, fn))
        return fn

    return deco


_LAZY: LazyTypes[ModuleAdapter] = LazyTypes()


def register_lazy_module_adapter(
    module_path: str, type_name: str
) -> Callable[[ModuleAdapter], ModuleAdapter]:
    """Register an adapter for a type of an optional library without importing it: the type
    is resolved only once its module has been imported (by the user's model)."""

    def deco(fn: ModuleAdapter) -> ModuleAdapter:
        _LAZY.add(module_path, type_name, fn)
        return fn

    return deco


def adapt_module(module: nn.Module, quantities: dict[str, int]) -> bool:
    """Run the adapter for ``module``'s type; False if there is none."""
    if _LAZY:
        _LAZY.resolve(lambda module_type, fn: register_module_adapter(module_type)(fn))
    for module_type, fn in _ADAPTERS:
        if isinstance(module, module_type):
            fn(module, quantities)
            return True
    return False


ModelAdapter = Callable[[nn.Module], None]
_MODEL_ADAPTERS: list[ModelAdapter] = []


def register_model_adapter(fn: ModelAdapter) -> ModelAdapter:
    """Register ``fn(model)``, run after every surgery once the module adapters are done.

    It must only read shapes (the trial prune runs it on fake and meta tensors) and must be
    idempotent (it runs after every prune, on the whole model).

    Example:
        >>> @register_model_adapter                                   # doctest: +SKIP
        ... def _(model):
        ...     for m in model.modules():
        ...         if isinstance(m, MyAttention):
        ...             m.num_heads = m.out.in_features // m.head_dim
    """
    if fn not in _MODEL_ADAPTERS:
        _MODEL_ADAPTERS.append(fn)
    return fn


def adapt_model(model: nn.Module) -> None:
    """Run every registered model adapter on ``model``."""
    for fn in list(_MODEL_ADAPTERS):
        fn(model)


@register_module_adapter(nn.modules.conv._ConvNd)
def _conv(m: nn.modules.conv._ConvNd, q: dict[str, int]) -> None:
    m.groups = q.get("groups", m.groups)
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    else:
        m.out_channels, m.in_channels = w.shape[0], w.shape[1] * m.groups


@register_module_adapter(nn.Linear)
def _linear(m: nn.Linear, q: dict[str, int]) -> None:
    m.out_features, m.in_features = m.weight.shape


@register_module_adapter(nn.Bilinear)
def _bilinear(m: nn.Bilinear, q: dict[str, int]) -> None:
    m.out_features, m.in1_features, m.in2_features = m.weight.shape


@register_module_adapter(nn.modules.batchnorm._NormBase)
def _batch_norm(m: nn.modules.batchnorm._NormBase, q: dict[str, int]) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]


@register_module_adapter(nn.GroupNorm)
def _group_norm(m: nn.GroupNorm, q: dict[str, int]) -> None:
    m.num_groups = q.get("num_groups", m.num_groups)
    if m.weight is not None:
        m.num_channels = m.weight.shape[0]


@register_module_adapter(nn.LayerNorm)
def _layer_norm(m: nn.LayerNorm, q: dict[str, int]) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


@register_module_adapter(nn.RMSNorm)
def _rms_norm(m: nn.RMSNorm, q: dict[str, int]) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


@register_module_adapter(nn.Embedding)
def _embedding(m: nn.Embedding, q: dict[str, int]) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


@register_module_adapter(nn.EmbeddingBag)
def _embedding_bag(m: nn.EmbeddingBag, q: dict[str, int]) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


@register_module_adapter(nn.PReLU)
def _prelu(m: nn.PReLU, q: dict[str, int]) -> None:
    m.num_parameters = m.weight.numel()


@register_module_adapter(nn.MultiheadAttention)
def _mha(m: nn.MultiheadAttention, q: dict[str, int]) -> None:
    m.embed_dim = m.out_proj.weight.shape[0]
    if m._qkv_same_embed_dim:
        m.kdim = m.vdim = m.embed_dim
    else:
        m.kdim, m.vdim = m.k_proj_weight.shape[1], m.v_proj_weight.shape[1]
    m.num_heads = q.get("num_heads", m.num_heads)
    m.head_dim = m.embed_dim // m.num_heads


@register_lazy_module_adapter("transformers.pytorch_utils", "Conv1D")
def _hf_conv1d(m: nn.Module, q: dict[str, int]) -> None:
    """HF's GPT-2-style Conv1D: a linear layer with weight [in, out] that reshapes to ``nf``."""
    m.nf = m.weight.shape[1]
