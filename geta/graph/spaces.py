"""Channel spaces: the index algebra behind the dependency graph.

Every dimension of every tensor in a captured graph is described by an *atom*: an abstract
axis of ``size`` indices. Op rules say how atoms relate:

* ``unify(a, b)``: the two axes are the same axis, index ``i`` with index ``i`` (a pointwise op,
  the in-channels of a convolution and the channels of its input, ...).
* ``cat([a, b])``: a new axis that is ``a`` followed by ``b`` (concatenation, padding).
* ``prod([a, b])``: a new axis whose index ``i * size(b) + j`` is the pair ``(i, j)`` (a reshape
  that merges dims: ``hidden = heads x head_dim``, ``flatten(C, H, W)``).

Unifying two composite axes refines them to a common structure (splitting an atom into a
concatenation or a product of smaller atoms) so that, at the end, every axis is a tree of
*leaf* atoms. A leaf equivalence class is a set of indices that can be removed together with
exact index bookkeeping everywhere it appears: a pruning group. Leaves are *blocked* when some
use of them cannot be pruned (a model input or output, a reduction over them, an op the engine
does not understand).

Everything here is pure index arithmetic; nothing depends on torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ChannelSpaces", "Incompatible"]


class Incompatible(Exception):
    """Two axes cannot be given a common structure (the caller blocks both)."""


@dataclass(frozen=True)
class _Def:
    kind: str  # "cat" or "prod"
    parts: tuple[int, ...]


class ChannelSpaces:
    """Union-find over atoms with concatenation / product refinement and blocking.

    Example:
        >>> s = ChannelSpaces()
        >>> hidden = s.new(6)
        >>> heads, head_dim = s.new(2), s.new(3)
        >>> s.unify(hidden, s.prod([heads, head_dim]))
        True
        >>> sorted(s.size(x) for x in s.leaves(hidden))
        [2, 3]
    """

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._def: dict[int, _Def] = {}
        self._blocked: dict[int, str] = {}

    # ------------------------------------------------------------------ basics
    def new(self, size: int, blocked: str | None = None) -> int:
        """A fresh leaf atom of ``size`` indices, optionally blocked with a reason."""
        atom = len(self._parent)
        self._parent.append(atom)
        self._size.append(int(size))
        if blocked is not None and size > 1:
            self._blocked[atom] = blocked
        return atom

    def find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def size(self, a: int) -> int:
        return self._size[a]

    def definition(self, a: int) -> _Def | None:
        return self._def.get(self.find(a))

    def __len__(self) -> int:
        return len(self._parent)

    # ------------------------------------------------------------ constructors
    def cat(self, parts: list[int]) -> int:
        """An axis that is ``parts`` concatenated in order."""
        parts = [p for p in parts if self._size[p] > 0]
        if len(parts) == 1:
            return parts[0]
        atom = self.new(sum(self._size[p] for p in parts))
        self._def[atom] = _Def("cat", tuple(parts))
        return atom

    def prod(self, parts: list[int]) -> int:
        """An axis that is the row-major product of ``parts`` (size-1 factors dropped)."""
        if any(self._size[p] == 0 for p in parts):
            return self.new(0)
        parts = [p for p in parts if self._size[p] != 1]
        if not parts:
            return self.new(1)
        if len(parts) == 1:
            return parts[0]
        atom = self.new(math.prod(self._size[p] for p in parts))
        self._def[atom] = _Def("prod", tuple(parts))
        return atom

    # ----------------------------------------------------------------- queries
    def leaves(self, a: int) -> list[int]:
        """The leaf roots an axis is made of (in order, with repeats)."""
        out: list[int] = []
        stack = [a]
        while stack:
            r = self.find(stack.pop())
            d = self._def.get(r)
            if d is None:
                out.append(r)
            else:
                stack.extend(reversed(d.parts))
        return out

    def is_blocked(self, leaf: int) -> bool:
        return self.find(leaf) in self._blocked

    def blocked_reason(self, leaf: int) -> str | None:
        return self._blocked.get(self.find(leaf))

    def coords(self, a: int) -> dict[int, list[np.ndarray]]:
        """For each leaf under ``a``: arrays giving, per position of ``a``, the leaf index there.

        A position not covered by the leaf holds -1. A leaf that occurs several times in a
        product has several arrays (a position belongs to it through any of them).
        """
        r = self.find(a)
        n = self._size[r]
        d = self._def.get(r)
        if d is None:
            return {r: [np.arange(n, dtype=np.int64)]}
        out: dict[int, list[np.ndarray]] = {}
        if d.kind == "cat":
            offset = 0
            for p in d.parts:
                m = self._size[p]
                for leaf, arrays in self.coords(p).items():
                    merged = out.setdefault(leaf, [])
                    for k, arr in enumerate(arrays):
                        full = np.full(n, -1, dtype=np.int64)
                        full[offset : offset + m] = arr
                        if k < len(merged):
                            mask = full >= 0
                            merged[k][mask] = full[mask]
                        else:
                            merged.append(full)
                offset += m
            return out
        sizes = [self._size[p] for p in d.parts]
        pos = np.arange(n, dtype=np.int64)
        stride = n
        for p, m in zip(d.parts, sizes, strict=True):
            stride //= m
            digit = (pos // stride) % m
            for leaf, arrays in self.coords(p).items():
                out.setdefault(leaf, []).extend(arr[digit] for arr in arrays)
        return out

    def keep_mask(self, a: int, removed: dict[int, np.ndarray]) -> np.ndarray | None:
        """Positions of ``a`` that survive removing ``removed[leaf]`` indices of each leaf.

        Returns None when nothing under ``a`` is removed.
        """
        leaves = {self.find(x) for x in self.leaves(a)}
        if not any(leaf in removed for leaf in leaves):
            return None
        keep = np.ones(self._size[self.find(a)], dtype=bool)
        for leaf, arrays in self.coords(a).items():
            gone = removed.get(leaf)
            if gone is None or len(gone) == 0:
                continue
            for arr in arrays:
                keep &= ~np.isin(arr, gone)
        return keep

    # ---------------------------------------------------------------- blocking
    def block(self, a: int, reason: str) -> None:
        """Mark every leaf under ``a`` as not prunable (the first reason is kept)."""
        for leaf in self.leaves(a):
            if self._size[leaf] > 1:
                self._blocked.setdefault(leaf, reason)

    # --------------------------------------------------------------- unifying
    def unify(self, a: int, b: int) -> bool:
        """Declare ``a`` and ``b`` the same axis. Returns False (after blocking both) if their
        structures cannot be reconciled."""
        try:
            self._unify(a, b)
            return True
        except Incompatible as err:
            reason = f"incompatible index layouts ({err})"
            self.block(a, reason)
            self.block(b, reason)
            return False

    def _unify(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] != self._size[rb]:
            raise Incompatible(f"sizes {self._size[ra]} and {self._size[rb]}")
        if self._size[ra] <= 1:
            return
        da, db = self._def.get(ra), self._def.get(rb)
        if da is not None and db is not None:
            if "cat" in (da.kind, db.kind):
                left, right = self._aligned_cat_parts(ra, rb)
            else:
                left, right = self._aligned_prod_factors(ra, rb)
            for x, y in zip(left, right, strict=True):
                self._unify(x, y)
            # Both now expand to the same leaves; keep a's structure.
            ra, rb = self.find(ra), self.find(rb)
            if ra == rb:
                return
            self._def.pop(rb, None)
        elif da is None and db is not None:
            ra, rb = rb, ra
        # rb (undefined, or equivalent to ra) joins ra.
        self._parent[rb] = ra
        reason = self._blocked.pop(rb, None) or self._blocked.get(ra)
        if reason is not None:
            self._blocked.pop(ra, None)
            self.block(ra, reason)

    # ------------------------------------------------------ cat refinement
    def _cat_parts(self, a: int) -> list[int]:
        """Flattened pieces whose concatenation is ``a``."""
        r = self.find(a)
        d = self._def.get(r)
        if d is None:
            return [r]
        if d.kind == "cat":
            return [q for p in d.parts for q in self._cat_parts(p)]
        outer, rest = d.parts[0], d.parts[1:]
        outer_parts = self._cat_parts(outer)
        if len(outer_parts) == 1:
            return [r]
        return [self.prod([p, *rest]) for p in outer_parts]

    def _split(self, a: int, cuts: list[int]) -> None:
        """Refine ``a`` so that its cat pieces have boundaries at ``cuts`` (relative offsets)."""
        offset = 0
        for piece in self._cat_parts(a):
            n = self._size[piece]
            inner = [c - offset for c in cuts if offset < c < offset + n]
            if inner:
                self._split_piece(piece, inner)
            offset += n

    def _split_piece(self, piece: int, cuts: list[int]) -> None:
        r = self.find(piece)
        d = self._def.get(r)
        if d is None:
            bounds = [0, *cuts, self._size[r]]
            reason = self._blocked.get(r)
            parts = [self.new(hi - lo, reason) for lo, hi in zip(bounds, bounds[1:], strict=False)]
            self._def[r] = _Def("cat", tuple(parts))
            self._blocked.pop(r, None)
            return
        assert d.kind == "prod", "cat pieces are never cat-defined"
        inner = math.prod(self._size[p] for p in d.parts[1:])
        if any(c % inner for c in cuts):
            raise Incompatible("a cut falls inside a block of a merged dimension")
        self._split(d.parts[0], [c // inner for c in cuts])

    def _aligned_cat_parts(self, a: int, b: int) -> tuple[list[int], list[int]]:
        def bounds(x: int) -> list[int]:
            out, offset = [], 0
            for p in self._cat_parts(x)[:-1]:
                offset += self._size[p]
                out.append(offset)
            return out

        cuts = sorted(set(bounds(a)) | set(bounds(b)))
        self._split(a, cuts)
        self._split(b, cuts)
        left, right = self._cat_parts(a), self._cat_parts(b)
        if [self._size[p] for p in left] != [self._size[p] for p in right]:
            raise Incompatible("concatenations do not align")
        return left, right

    # --------------------------------------------------- product refinement
    def _factors(self, a: int) -> list[int]:
        r = self.find(a)
        d = self._def.get(r)
        if d is None or d.kind == "cat":
            return [r]
        return [q for p in d.parts for q in self._factors(p)]

    def _aligned_prod_factors(self, a: int, b: int) -> tuple[list[int], list[int]]:
        fa, fb = self._factors(a), self._factors(b)
        total = self._size[self.find(a)]

        def strides(factors: list[int]) -> set[int]:
            out, acc = set(), total
            for f in factors:
                acc //= self._size[f]
                out.add(acc)
            return out

        common = sorted(strides(fa) | strides(fb), reverse=True)
        # Each factor's stride range must be divisible by the common strides inside it.
        for factors in (fa, fb):
            acc = total
            for f in factors:
                hi, lo = acc, acc // self._size[f]
                inner = [s for s in common if lo < s < hi]
                chain = [hi, *inner, lo]
                if any(x % y for x, y in zip(chain, chain[1:], strict=False)):
                    raise Incompatible("merged dimensions do not share a factorisation")
                if inner:
                    self._factor_leaf(f, [x // y for x, y in zip(chain, chain[1:], strict=False)])
                acc = lo
        left, right = self._factors(a), self._factors(b)
        if [self._size[p] for p in left] != [self._size[p] for p in right]:
            raise Incompatible("merged dimensions do not align")
        return left, right

    def _factor_leaf(self, f: int, sizes: list[int]) -> None:
        r = self.find(f)
        if r in self._def:  # a concatenation cannot be split into a product
            raise Incompatible("a concatenated dimension cannot be reshaped into factors")
        reason = self._blocked.pop(r, None)
        parts = [self.new(s, reason) for s in sizes]
        self._def[r] = _Def("prod", tuple(parts))
