"""Attribute rewrites: the integer sizes a module's forward reads, kept in line with a group.

Attention code often reads head counts from attributes instead of from its tensors
(``x.view(b, s, self.num_heads, self.head_dim)``, ``config.num_attention_heads`` at run time,
a fused projection split by ``self.split_size``). Pruning heads then breaks the forward, and the
trial prune (:mod:`geta.graph.validate`) blocks the group. Instead of a hand-written adapter per
model family, the trial looks for the attributes that track the failing group: integers on the
modules inside the group's scope (the deepest module holding all its layers) and on their
``config`` objects whose value is the group's unit count times a width the group's members
remove per unit (1, ``head_dim``, ...). It retries the trial with the fewest of them rewritten to
``kept units x that width``; a group that then passes records its rewrites
(``graph.rewrites``), and :func:`geta.prune` applies them with the group.

Only the attributes the forward reads are candidates: the trial's unpruned fake run records
every integer read from a module or its config (:class:`SizeReads`), which keeps the search to
a few trials where a scope holds many sizes (a 7B model's layer and its shared config).

A rewrite of a config field gives the module its own (shallow) copy of the config, so layers
pruned to different head counts each keep their own count; :func:`geta.hf.save_pretrained`
stores such per-module values.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

from torch import nn

from geta.graph.groups import PruningGroup

__all__ = [
    "AttributeRewrite",
    "SizeReads",
    "apply_rewrites",
    "candidate_rewrites",
    "config_sizes",
    "set_size",
    "group_scope",
    "relocate",
    "smallest_passing",
]

CONFIG = "config"
_MAX_TRIED = 64  # subsets of candidates tried per group


@dataclass(frozen=True)
class AttributeRewrite:
    """Set ``attr`` of the module at ``module`` to ``kept units x per_unit`` when the group is
    pruned; ``attr`` is ``"config.<field>"`` for a field of the module's config."""

    module: str
    attr: str
    per_unit: int

    def set(self, model: nn.Module, value: int) -> None:
        set_size(model.get_submodule(self.module), self.attr, value)


def config_of(module: nn.Module) -> object | None:
    """The plain config object a module keeps as ``config`` (a transformers config), if any."""
    config = vars(module).get(CONFIG)
    if config is None or isinstance(config, (nn.Module, type)) or not hasattr(config, "__dict__"):
        return None
    return config


def config_sizes(module: nn.Module) -> dict[str, int]:
    """``{"config.<field>": value}`` for the integer fields of the module's config."""
    config = config_of(module)
    return {} if config is None else {f"{CONFIG}.{k}": v for k, v in _sizes(config).items()}


def set_size(module: nn.Module, attr: str, value: int) -> None:
    """Set ``module.<attr>``; ``"config.<field>"`` sets the field on a copy of the module's
    config that the module alone keeps from then on (layers may differ)."""
    if attr.startswith(CONFIG + "."):
        config = copy.copy(config_of(module))
        setattr(config, attr.partition(".")[2], value)
        setattr(module, CONFIG, config)
    else:
        setattr(module, attr, value)


def apply_rewrites(model: nn.Module, rewrites: Iterable[tuple[AttributeRewrite, int, int]]) -> None:
    """Apply each ``(rewrite, units, kept units)`` of the groups pruned together. A size two
    groups rewrite (GPT-2's ``split_size``: heads x head_dim) becomes its value times each
    group's kept share."""
    values: dict[tuple[str, str], tuple[AttributeRewrite, Fraction]] = {}
    for rewrite, units, kept in rewrites:
        key = (rewrite.module, rewrite.attr)
        _, value = values.get(key, (rewrite, Fraction(units * rewrite.per_unit)))
        values[key] = (rewrite, value * Fraction(kept, units))
    for rewrite, value in values.values():
        rewrite.set(model, int(value))


def group_scope(group: PruningGroup) -> str:
    """The deepest module holding every layer of ``group`` (``""``: the model itself)."""
    paths = [layer.split(".") if layer else [] for layer in group.layers]
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common)


def _widths(group: PruningGroup) -> list[int]:
    """What one unit may stand for in a size: 1, each member's width, and their ratios (a
    fused qkv row block of ``3 x head_dim`` against ``head_dim``)."""
    widths = {1} | {m.width for m in group.members}
    ratios = {a // b for a in widths for b in widths if b and a > b and a % b == 0}
    return sorted(widths | ratios)


def _sizes(holder: object) -> dict[str, int]:
    """The integer (not bool) public attributes of ``holder``."""
    return {
        k: v
        for k, v in vars(holder).items()
        if not k.startswith("_")
        and k != "training"
        and isinstance(v, int)
        and not isinstance(v, bool)
    }


class SizeReads:
    """The integer attributes a forward read, per module path (``"config.<field>"`` for a
    field of the module's config), recorded by :meth:`record` on a model copy.

    Modules whose reads could not be recorded (their class cannot be swapped) count as
    reading everything."""

    def __init__(self) -> None:
        self._reads: set[tuple[int, str]] = set()
        self._paths: dict[str, tuple[int, int | None]] = {}
        self._blind: set[str] = set()

    @classmethod
    @contextlib.contextmanager
    def record(cls, model: nn.Module) -> Iterator[SizeReads]:
        """Record the integer reads of the module objects of ``model`` (a throwaway copy: their
        classes are swapped for recording subclasses, which stay) made inside the block."""
        reads = cls()
        swapped: set[int] = set()
        for path, module in model.named_modules():
            config = config_of(module)
            reads._paths[path] = (id(module), None if config is None else id(config))
            for holder in (module, config):
                if holder is None or id(holder) in swapped:
                    continue
                try:
                    holder.__class__ = _reading_class(type(holder))
                except TypeError:
                    reads._blind.add(path)
                    continue
                swapped.add(id(holder))
        _RECORDERS.append(reads._reads)
        try:
            yield reads
        finally:
            _RECORDERS.remove(reads._reads)

    def was_read(self, path: str, attr: str) -> bool:
        """Whether the forward read ``attr`` of the module at ``path``."""
        if path in self._blind or path not in self._paths:
            return True
        module, config = self._paths[path]
        if attr.startswith(CONFIG + "."):
            return config is not None and (config, attr.partition(".")[2]) in self._reads
        return (module, attr) in self._reads


_RECORDERS: list[set[tuple[int, str]]] = []
_READING_CLASSES: dict[type, type] = {}


def _reading_class(cls: type) -> type:
    """A subclass of ``cls`` (same name) that records each integer attribute read."""
    if cls in _READING_CLASSES.values():
        return cls
    if cls not in _READING_CLASSES:

        def __getattribute__(self, name, _base=cls):
            value = _base.__getattribute__(self, name)
            if type(value) is int and _RECORDERS:
                _RECORDERS[-1].add((id(self), name))
            return value

        _READING_CLASSES[cls] = type(
            cls.__name__,
            (cls,),
            {
                "__getattribute__": __getattribute__,
                "__qualname__": cls.__qualname__,
                "__module__": cls.__module__,
            },
        )
    return _READING_CLASSES[cls]


def candidate_rewrites(
    model: nn.Module, group: PruningGroup, reads: SizeReads | None = None
) -> list[AttributeRewrite]:
    """Integer attributes in the group's scope (modules and their configs) whose value is the
    group's unit count times one of its widths: what its forward may read as a size (listed
    once, with the smallest such width), and with ``reads`` only those the forward read.
    The layers holding the group's tensors are left out: module adapters size them from
    their tensors. None when the scope is the whole model (a rewrite there would reach every
    layer)."""
    scope = group_scope(group)
    if not scope:
        return []
    widths = _widths(group)
    layers = set(group.layers)  # their own sizes follow their tensors (module adapters)
    found: list[AttributeRewrite] = []
    for name, module in model.get_submodule(scope).named_modules(prefix=scope):
        if name in layers:
            continue
        for attr, value in {**_sizes(module), **config_sizes(module)}.items():
            if reads is not None and not reads.was_read(name, attr):
                continue
            for width in widths:
                if value == group.size * width:
                    found.append(AttributeRewrite(name, attr, width))
                    break
    return found


def smallest_passing(
    candidates: list[AttributeRewrite], passes: Callable[[tuple[AttributeRewrite, ...]], bool]
) -> tuple[AttributeRewrite, ...] | None:
    """The first subset of ``candidates`` (singles, then pairs, then all of them, each then
    trimmed of what it does not need) with which ``passes``; None if none does."""
    tried = 0
    subsets = itertools.chain(
        ((c,) for c in candidates),
        itertools.combinations(candidates, 2),
        [tuple(candidates)] if len(candidates) > 2 else [],
    )
    for subset in subsets:
        tried += 1
        if tried > _MAX_TRIED:
            return None
        if passes(subset):
            needed = list(subset)
            for c in subset:
                if len(needed) > 1 and passes(tuple(x for x in needed if x != c)):
                    needed.remove(c)
            return tuple(needed)
    return None


def relocate(
    model: nn.Module,
    rewrites: tuple[AttributeRewrite, ...],
    source: PruningGroup,
    target: PruningGroup,
) -> tuple[AttributeRewrite, ...] | None:
    """``source``'s rewrites for ``target``, a group of the same structure in another layer
    (the same attributes under its own scope), or None where ``target``'s scope lacks one
    of them or holds another value there."""
    old, new = group_scope(source), group_scope(target)
    out = []
    for r in rewrites:
        path = new + r.module[len(old) :]
        try:
            owner = model.get_submodule(path)
        except AttributeError:
            return None
        sizes = {**_sizes(owner), **config_sizes(owner)}
        if sizes.get(r.attr) != target.size * r.per_unit:
            return None
        out.append(AttributeRewrite(path, r.attr, r.per_unit))
    return tuple(out)
