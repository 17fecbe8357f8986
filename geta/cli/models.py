"""The models the command line builds from a name: a geta zoo model, a torchvision classifier,
``module:callable``, or ``hf:PATH`` (a local HuggingFace directory)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from geta.errors import ConfigError

__all__ = ["LoadedModel", "load_model"]

HF_PREFIX = "hf:"


@dataclass
class LoadedModel:
    """A model built from a ``--model`` spec.

    ``factory`` builds a fresh copy with the same settings (to load an artifact into);
    ``architecture`` is the ``module:callable`` that rebuilds it with no arguments, when there
    is one (stored in artifacts); ``args`` / ``kwargs`` are example inputs when the source
    knows them (zoo and HF models); ``hf`` says it is a transformers model.
    """

    model: nn.Module
    spec: str
    factory: Callable[[], nn.Module]
    architecture: str | None = None
    args: tuple | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    hf: bool = False


def _changed_kwargs(factory: Callable[..., nn.Module], wanted: dict[str, Any]) -> dict[str, Any]:
    """The ``wanted`` keyword arguments the factory takes and whose value is not its default
    (so a model built with its defaults keeps a plain ``module:callable`` architecture)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {
        k: v for k, v in wanted.items() if v is not None and k in params and params[k].default != v
    }


def _from_callable(spec: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"cannot load {spec!r}: {err}") from None
    if not callable(factory):
        raise ConfigError(f"{spec!r} is not callable")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec!r} returned a {type(model).__name__}, not an nn.Module")
    return LoadedModel(model, spec, factory, architecture=spec)


def _hf_class(config: Any) -> Any:
    """The transformers class the config names (``architectures``), or ``AutoModel``."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _from_hf(spec: str) -> LoadedModel:
    import transformers
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

    import geta.hf

    path = Path(spec[len(HF_PREFIX) :]).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{spec}: {path} is not a directory (hf:PATH names a local directory)")
    if (path / geta.hf.checkpoint.META).exists():

        def factory() -> nn.Module:
            return geta.hf.from_pretrained(path)

    else:
        try:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        except Exception as err:
            raise ConfigError(f"{spec}: cannot read a HuggingFace config: {err}") from None
        cls = _hf_class(config)
        weights = any((path / n).exists() for n in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME))
        weights = weights or (path / WEIGHTS_NAME).exists()

        def factory() -> nn.Module:
            if weights:
                return cls.from_pretrained(str(path), local_files_only=True)
            if cls is transformers.AutoModel:
                return cls.from_config(config)
            return cls(config)

    try:
        model = factory().eval()
    except Exception as err:
        raise ConfigError(f"{spec}: cannot build the model: {err}") from None
    return LoadedModel(
        model, spec, factory, kwargs=geta.hf.example_inputs(model, batch_size=2), hf=True
    )


def load_model(
    spec: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> LoadedModel:
    """Build the model ``spec`` names.

    - a geta zoo name (``lenet5``, ``resnet20``, ...): built for ``num_classes``,
      ``in_channels`` and ``image_size`` where its factory takes them;
    - a torchvision classification model name (``resnet18``): random weights,
      ``num_classes`` outputs;
    - ``module:callable``: ``callable()`` (no arguments);
    - ``hf:PATH``: a local HuggingFace directory: a geta checkpoint
      (:func:`geta.hf.from_pretrained`), or ``config.json`` with or without weights (the class
      its ``architectures`` names, else ``AutoModel``; random weights without a weights file).

    Raises:
        ConfigError: the spec names no model, or the model cannot be built.

    Example:
        >>> loaded = load_model("lenet5", num_classes=10)
        >>> loaded.architecture
        'geta.models.lenet:lenet5'
    """
    from geta import models as zoo

    if spec.startswith(HF_PREFIX):
        return _from_hf(spec)
    if ":" in spec:
        return _from_callable(spec)
    if spec in zoo.list_models():
        factory = zoo.model_spec(spec).factory
        wanted = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        kwargs = _changed_kwargs(factory, wanted)
        args = None if kwargs else zoo.example_inputs(spec, batch=2)[0]
        architecture = None if kwargs else f"{factory.__module__}:{factory.__name__}"
        return LoadedModel(
            factory(**kwargs),
            spec,
            lambda: factory(**kwargs),
            architecture=architecture,
            args=args,
        )
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        kwargs = {"num_classes": num_classes} if num_classes else {}

        def build() -> nn.Module:
            return torchvision.models.get_model(spec, weights=None, **kwargs)

        return LoadedModel(build(), spec, build)
    raise ConfigError(
        f"unknown model {spec!r}: use a geta zoo name ({', '.join(zoo.list_models())}), "
        "a torchvision classification model name, module:callable, or hf:PATH"
    )
