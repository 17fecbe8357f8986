"""Settings that serialize: dataclass configs to plain JSON/TOML values and back.

Every config of geta (:class:`geta.CompressorConfig`, :class:`geta.AdmmConfig`, the runner's
run description) is a dataclass whose fields are plain values, tuples, nested configs,
dicts of configs, or unions of those. :func:`to_dict` writes one as a dict with a
``"version"``; :func:`from_dict` reads it back from the field types, and refuses what it does
not know (an unknown key, a value of the wrong type, a newer version) with a
:class:`geta.ConfigError` that names the key: a run description is re-run from its report, so
a setting must never be dropped silently.

Example:
    >>> from geta import AdmmConfig
    >>> data = to_dict(AdmmConfig(granularity="group"))
    >>> data["granularity"], from_dict(AdmmConfig, data) == AdmmConfig(granularity="group")
    ('group', True)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from geta.errors import ConfigError

__all__ = ["to_dict", "from_dict", "CONFIG_VERSION"]

CONFIG_VERSION = 1
_VERSION = "version"
T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """``config`` (a dataclass) as plain values, with the format version."""
    return {_VERSION: CONFIG_VERSION, **_plain(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from :func:`to_dict`'s output (the version key is optional; keys left
    out take their defaults).

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a newer format version.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table of settings, got {data!r}")
    return _build(cls, data, where or cls.__name__)


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    """``cls`` from a table; a nested config's table may carry its own version too (one
    written by its own ``to_dict``)."""
    data = dict(data)
    version = data.pop(_VERSION, CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"{where}: settings version {version!r} is newer than this geta reads "
            f"({CONFIG_VERSION}); upgrade geta"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in data}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in sorted(args, key=_specificity):
            try:
                return _convert(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} fits none of {_name(hint)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing (null), got {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of {hint.__name__} settings")
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(value)
        if len(items) != len(value):
            raise ConfigError(f"{where}: expected {len(items)} values, got {len(value)}")
        return tuple(
            _convert(h, v, f"{where}[{i}]")
            for i, (h, v) in enumerate(zip(items, value, strict=False))
        )
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")


def _specificity(hint: Any) -> int:
    """Order union members so that ``int | float`` keeps an int an int, and ``None`` or a
    config is tried before a catch-all."""
    order = {type(None): 0, bool: 1, int: 2, float: 3, str: 4}
    if dataclasses.is_dataclass(hint):
        return 5
    return order.get(hint, 6)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
