"""Trial pruning: check that the model's own forward code accepts the pruned shapes.

The captured graph records shapes as numbers; it cannot tell whether the Python forward
computed a size from the tensor (``x.view(b, s, -1, self.head_dim)``) or hard-coded it
(``x.view(b, s, 12, 64)``, ``embed_dim // num_heads``). So after the groups are found, one unit
of every group is removed from a fake-tensor copy of the model (no weights are copied or
computed), the copy's forward runs, and every node's shape is compared with the shape the
channel analysis predicts: the shapes are read from the run's aten calls
(:mod:`geta.graph.dispatch_shapes`), or, where those cannot be matched with the graph, from a
second capture of a meta-device copy. A group that makes the copy fail, or that makes a shape
come out differently, is blocked, unless rewriting the sizes its forward reads makes it pass
(:mod:`geta.graph.rewrites`). Groups with the same structure in modules of the same type
(every attention layer of a transformer) are judged together, since they run the same code.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import traceback
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from geta.errors import TraceError
from geta.graph.capture import export_program
from geta.graph.dependency_graph import DependencyGraph
from geta.graph.dispatch_shapes import Call, CallRecorder, DispatchShapes
from geta.graph.groups import PruningGroup
from geta.graph.rewrites import SizeReads, candidate_rewrites, relocate, smallest_passing
from geta.graph.rules.indexing import slice_bounds

logger = logging.getLogger(__name__)

__all__ = ["validate_groups", "meta_copy"]

_MAX_ROUNDS = 64


def _copy_with(model: nn.Module, convert) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are ``convert(tensor)`` (no data
    is copied for them)."""
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        new = convert(t)
        memo[id(t)] = (
            nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        )
    return copy.deepcopy(model, memo)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device."""
    return _copy_with(model, lambda t: torch.empty_like(t, device="meta"))


def _to_meta(value: Any) -> Any:
    return pytree.tree_map(lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x, value)


def _signature(graph: DependencyGraph, model: nn.Module, group: PruningGroup) -> tuple:
    """Structure of a group up to module names: its kind and size, and member (module type,
    attribute, dim, role, width)."""
    parts = []
    for m in group.members:
        module_name, _, attr = m.name.rpartition(".")
        module = model.get_submodule(module_name)
        parts.append((type(module).__qualname__, attr, m.dim, m.role, m.width))
    return (group.kind, group.size, tuple(sorted(parts)))


@dataclass
class _FakeRun:
    """A pruned fake-tensor copy of the model, the exception its forward raised (if any) and
    the aten calls it made (see :mod:`geta.graph.dispatch_shapes`)."""

    trial: nn.Module
    error: BaseException | None
    calls: list[Call]
    reads: SizeReads | None = None


def _fake_run(
    model: nn.Module, graph: DependencyGraph, resolved, *, record_reads: bool = False
) -> _FakeRun:
    """Prune a fake-tensor copy of ``model`` and run it eagerly (no data: shapes only, about a
    second for a 7B model), in the grad mode of the capture (a forward may take another path
    without grad, as ``nn.MultiheadAttention``'s fast path does). With ``record_reads`` the
    integer attributes the forward reads are recorded too."""
    from geta.graph.surgery import apply_plan

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    trial = _copy_with(model, mode.from_tensor)
    args, kwargs = pytree.tree_map(
        lambda x: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x, graph.example_inputs
    )
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # a failing trial is expected; torch logs it as an error
    recorder = CallRecorder()  # the forward's calls only, not the surgery's
    reads = None
    try:
        with mode:
            if resolved:  # a plan the surgery refuses is a failing trial too
                with torch.no_grad():
                    apply_plan(trial, graph, resolved)
            reading = SizeReads.record(trial) if record_reads else contextlib.nullcontext()
            with reading as reads, recorder:
                trial(*args, **kwargs)
    except MemoryError:
        raise
    except Exception as err:
        return _FakeRun(trial, err, recorder.calls)
    finally:
        fake_log.setLevel(level)
    return _FakeRun(trial, None, recorder.calls, reads)


def _trial_failure(
    model: nn.Module,
    graph: DependencyGraph,
    groups: list[PruningGroup],
    inputs,
    *,
    eager: bool,
    capture: bool = True,
    shapes: DispatchShapes | None = None,
) -> set[int] | None:
    """Prune one unit of each of ``groups`` on a meta copy; return the suspect group ids
    (an empty set when the copy runs and, with ``capture``, comes out with exactly the
    predicted shapes; None when even the unpruned copy cannot be captured on meta).

    With ``eager`` a fake-tensor copy is first run eagerly, which finds crashes far faster
    than a capture; with ``shapes`` too, the shapes are read from that run's aten calls and
    the copy is captured only when they cannot be (see :mod:`geta.graph.dispatch_shapes`)."""
    from geta.graph.surgery import apply_plan

    resolved = [(g, np.array([g.size - 1])) for g in groups]
    removed = {graph.spaces.find(g.leaf): idx for g, idx in resolved}
    if eager:
        run = _fake_run(model, graph, resolved)
        if run.error is not None:
            return _suspects_from_error(run.error, run.trial, graph, groups) if groups else None
        if not capture:
            return set()
        twins = shapes.trial_nodes(run.calls) if shapes is not None else None
        if twins is not None:
            return _suspects_from_shapes(graph, twins, removed, groups, complete=False)
    trial = meta_copy(model)
    if resolved:
        apply_plan(trial, graph, resolved)
    args, kwargs = inputs
    try:
        program = export_program(trial, args, kwargs)
    except TraceError as err:
        if not groups:
            return None
        if isinstance(err.__cause__, MemoryError):
            raise err.__cause__ from None
        return _suspects_from_error(err.__cause__, trial, graph, groups)
    old = [n for n in graph.program.graph.nodes if n.op == "call_function"]
    new = [n for n in program.graph.nodes if n.op == "call_function"]
    trial_nodes = dict(zip(_node_keys(new), new, strict=True))
    twins = {n.name: trial_nodes.get(key) for key, n in zip(_node_keys(old), old, strict=True)}
    return _suspects_from_shapes(graph, twins, removed, groups, complete=True)


@dataclass(frozen=True)
class _Trials:
    """What every trial prune of one validation shares: the model and its graph, the meta
    inputs, whether fake-tensor runs of the model work (``eager``), and the unpruned run's
    aten calls to read trial shapes from (``shapes``)."""

    model: nn.Module
    graph: DependencyGraph
    inputs: Any
    eager: bool
    shapes: DispatchShapes | None

    def failure(self, groups: list[PruningGroup], *, capture: bool = True) -> set[int] | None:
        """:func:`_trial_failure` of ``groups`` with these settings."""
        return _trial_failure(
            self.model,
            self.graph,
            groups,
            self.inputs,
            eager=self.eager,
            capture=capture,
            shapes=self.shapes,
        )


def _groups_in_nodes(
    graph: DependencyGraph, nodes: list[fx.Node], among: list[PruningGroup]
) -> set[int]:
    spaces = graph.spaces
    leaf_to_group = {spaces.find(g.leaf): g.id for g in among}
    found: set[int] = set()
    for node in nodes:
        atoms = graph.analysis.node_atoms.get(node.name)
        for a in pytree.tree_leaves(atoms) if atoms is not None else []:
            for leaf in spaces.leaves(a):
                gid = leaf_to_group.get(leaf)
                if gid is not None:
                    found.add(gid)
    return found


def _suspects_from_error(
    err: BaseException | None, trial: nn.Module, graph: DependencyGraph, groups
) -> set[int]:
    names = {id(m): n for n, m in trial.named_modules()}
    failing: str | None = None
    if err is not None:
        for frame, _ in traceback.walk_tb(err.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                failing = names[id(owner)]
    if failing is None:
        return {g.id for g in groups}
    from geta.graph.analysis import _module_path

    scope = [
        n
        for n in graph.program.graph.nodes
        if n.op == "call_function"
        and (
            failing == "" or _module_path(n) == failing or _module_path(n).startswith(failing + ".")
        )
    ]
    suspects = _groups_in_nodes(graph, scope, groups)
    return suspects or {g.id for g in groups}


def _predicted_shape(
    graph: DependencyGraph, atoms: list[int], removed: dict[int, np.ndarray]
) -> tuple[int, ...]:
    out = []
    for a in atoms:
        mask = graph.spaces.keep_mask(a, removed)
        out.append(graph.spaces.size(a) if mask is None else int(mask.sum()))
    return tuple(out)


def _node_keys(nodes: list[fx.Node]) -> list[tuple[str, str, int]]:
    """Match nodes across captures by (module, op, occurrence within that module): the layers
    are captured the same way even where, say, mask preparation takes another path on meta."""
    from geta.graph.analysis import _module_path

    seen: dict[tuple[str, str], int] = {}
    keys = []
    for n in nodes:
        base = (_module_path(n), str(n.target))
        seen[base] = seen.get(base, 0) + 1
        keys.append((*base, seen[base]))
    return keys


def _slice_follows(
    graph: DependencyGraph, node: fx.Node, twin: fx.Node, removed: dict[int, np.ndarray]
) -> bool:
    """For a slice: do the trial's bounds select the same kept positions as the original?
    (A hard-coded start can give the predicted size at the wrong offset.)"""
    if getattr(node.target, "overloadpacket", None) is not torch.ops.aten.slice:
        return True
    atoms = graph.analysis.node_atoms.get(node.args[0].name)
    source = getattr(twin.args[0], "meta", {}).get("val") if twin.args else None
    if not isinstance(atoms, list) or not isinstance(source, torch.Tensor):
        return True
    dim = node.args[1] if len(node.args) > 1 else 0
    dim = dim + len(atoms) if dim < 0 else dim
    mask = graph.spaces.keep_mask(atoms[dim], removed)
    if mask is None:
        return True
    start, end = slice_bounds(*_slice_args(node), len(mask))
    kept = np.concatenate([[0], np.cumsum(mask)])
    return slice_bounds(*_slice_args(twin), int(source.shape[dim])) == (
        int(kept[start]),
        int(kept[end]),
    )


def _slice_args(node: fx.Node) -> tuple[int | None, int | None]:
    args = list(node.args) + [None] * 4
    return node.kwargs.get("start", args[2]), node.kwargs.get("end", args[3])


def _suspects_from_shapes(
    graph: DependencyGraph,
    twins: dict[str, Any],
    removed: dict[int, np.ndarray],
    groups: list[PruningGroup],
    *,
    complete: bool,
) -> set[int]:
    """The groups whose trial made a node come out with another shape than predicted.

    ``twins`` maps a node of the captured graph to its trial counterpart (a node of the
    pruned copy's capture, or a :class:`TrialNode`; None where it vanished). With
    ``complete`` every node must have one; otherwise nodes without an entry are not read."""
    spaces = graph.spaces
    candidates = {spaces.find(g.leaf) for g in groups}
    for node in graph.program.graph.nodes:
        if node.op != "call_function" or (not complete and node.name not in twins):
            continue
        atoms = graph.analysis.node_atoms.get(node.name)
        flat = (
            [a for a in pytree.tree_leaves(atoms) if isinstance(a, int)]
            if atoms is not None
            else []
        )
        if getattr(node.target, "overloadpacket", None) is torch.ops.aten.slice:
            source = graph.analysis.node_atoms.get(node.args[0].name)  # its bounds may move
            flat += [a for a in pytree.tree_leaves(source) if isinstance(a, int)]
        if not any(leaf in candidates for a in flat for leaf in spaces.leaves(a)):
            continue
        twin = twins.get(node.name)
        suspects = _groups_in_nodes(graph, [node, *node.all_input_nodes], groups) or {
            g.id for g in groups
        }
        if twin is None or not _slice_follows(graph, node, twin, removed):
            return suspects
        olds = atoms if atoms and isinstance(atoms[0], list) else [atoms]
        vals = twin.meta.get("val")
        news = vals if isinstance(vals, (tuple, list)) else [vals]
        for a, v in zip(olds, news, strict=False):
            if (
                not isinstance(a, list)
                or not isinstance(v, torch.Tensor)
                or any(not isinstance(x, int) for x in a)
            ):
                continue
            if _predicted_shape(graph, a, removed) != tuple(v.shape):
                return suspects
    return set()


def validate_groups(model: nn.Module, graph: DependencyGraph) -> None:
    """Block the groups the model's forward code cannot be pruned along (see module doc)."""
    inputs = _to_meta(graph.example_inputs)
    unpruned = _fake_run(model, graph, [], record_reads=True)
    if unpruned.error is not None:  # perhaps the recording's: try without
        unpruned = _fake_run(model, graph, [])
    eager = unpruned.error is None
    shapes = DispatchShapes.build(graph.program, unpruned.calls) if eager else None
    trials = _Trials(model, graph, inputs, eager, shapes)
    capturable: bool | None = True if eager else None
    blocked: dict[int, str] = {}
    verified: set[int] = set()
    signature = {g.id: _signature(graph, model, g) for g in graph.groups}
    rescued_classes: list[list[int]] = []
    for _ in range(_MAX_ROUNDS):
        candidates = [
            g for g in graph.groups if g.size >= 2 and g.id not in blocked and g.id not in verified
        ]
        if not candidates:
            break
        suspects = trials.failure(candidates)
        if suspects and capturable is None:  # is a failure ours, or does meta capture fail anyway?
            capturable = replace(trials, eager=False).failure([]) is not None
        if suspects and not capturable:
            warnings.warn(
                "geta: the model cannot be captured on the meta device, so groups were not "
                "trial-pruned; check pruned models on real inputs",
                stacklevel=3,
            )
            break
        if not suspects:
            verified |= {g.id for g in candidates}
            break
        logger.debug("trial of %d groups: suspects %s", len(candidates), sorted(suspects))
        by_id = {g.id: g for g in candidates}
        guilty: set[int] = set()
        # Alone, a crash convicts (cheap, eager); only if no suspect crashes alone are they
        # captured one by one, to catch shapes that come out wrong without a crash.
        for capture in [False, True] if eager else [True]:
            for gid in sorted(suspects):
                if gid in guilty:
                    continue
                alone = trials.failure([by_id[gid]], capture=capture)
                logger.debug(
                    "group %d alone (capture=%s): %s", gid, capture, "fails" if alone else "passes"
                )
                if alone:
                    guilty |= {o for o in by_id if signature[o] == signature[gid]}
            if guilty:
                break
        if not guilty:  # each passes alone: they only fail together, so block them all
            guilty = set(suspects)
        classes = _rescue(trials, [by_id[g] for g in sorted(guilty)], signature, unpruned.reads)
        rescued_classes += classes
        rescued = {gid for c in classes for gid in c}
        verified |= rescued
        for gid in guilty - rescued:
            blocked[gid] = (
                "the forward code does not accept a pruned size here (trial prune failed)"
            )
    else:
        warnings.warn(
            "geta: trial pruning did not settle; unverified groups were blocked", stacklevel=3
        )
        for g in graph.groups:
            if g.id not in verified:
                blocked.setdefault(g.id, "trial pruning did not settle")
    # Groups rescued apart (a layer's heads and its head dims) must pass pruned together too:
    # the last rescued are given up until they do.
    by_id = {g.id: g for g in graph.groups}
    while rescued_classes and trials.failure([by_id[gid] for c in rescued_classes for gid in c]):
        for gid in rescued_classes.pop():
            graph.rewrites.pop(graph.spaces.find(by_id[gid].leaf), None)
            blocked[gid] = "its size attributes cannot follow it with the groups around it"
    # The parts of a slice may follow the pruned sizes only when they shrink together (bounds
    # computed as ``size // 2``): a group that feeds a slice is also tried alone, one per kind.
    tried: dict[tuple, bool] = {}
    sliced = _sliced_groups(graph)
    for g in graph.groups:
        if g.id in verified and g.id not in blocked and g.id in sliced:
            offsets = sorted(
                (m.name.rpartition(".")[2], m.dim, int(m.positions.min())) for m in g.members
            )
            key = (signature[g.id], tuple(offsets))  # the same part of the same kind of layer
            if key not in tried:
                tried[key] = bool(trials.failure([g]))
            if tried[key]:
                blocked[g.id] = "a slice's bounds follow the pruned size only with other groups"
    if blocked:
        graph.block_groups(blocked)
        logger.info("trial pruning blocked %d group(s)", len(blocked))


def _rescue(
    trials: _Trials,
    groups: list[PruningGroup],
    signature: dict[int, tuple],
    reads: SizeReads | None,
) -> list[list[int]]:
    """Try to make failing ``groups`` prunable by rewriting the sizes their forward reads
    (:mod:`geta.graph.rewrites`): per structure, the fewest attributes found on one group are
    carried to the others of that structure, and all of them are trial-pruned together (and
    captured, so every shape comes out as predicted). Returns the ids of the groups that now
    pass, per structure; their rewrites are recorded in ``graph.rewrites``."""
    model, graph = trials.model, trials.graph
    rescued: list[list[int]] = []
    by_structure: dict[tuple, list[PruningGroup]] = {}
    for g in groups:
        by_structure.setdefault(signature[g.id], []).append(g)
    for members in by_structure.values():
        first = members[0]
        candidates = candidate_rewrites(model, first, reads)
        if not candidates:
            continue
        key = graph.spaces.find(first.leaf)

        def passes(subset, first=first, key=key) -> bool:
            graph.rewrites[key] = subset
            return not trials.failure([first])

        found = smallest_passing(candidates, passes)
        graph.rewrites.pop(key, None)
        if found is None:
            continue
        placed = {g.id: relocate(model, found, first, g) for g in members}
        ok = [g for g in members if placed[g.id] is not None]
        for g in ok:
            graph.rewrites[graph.spaces.find(g.leaf)] = placed[g.id]
        if ok and not trials.failure(ok):
            rescued.append([g.id for g in ok])
            logger.debug("rewrites %s make %d group(s) prunable", found, len(ok))
        else:
            for g in ok:
                graph.rewrites.pop(graph.spaces.find(g.leaf), None)
    return rescued


def _sliced_groups(graph: DependencyGraph) -> set[int]:
    """Ids of the groups whose units sit in a dimension that a slice takes part of."""
    spaces = graph.spaces
    leaves: set[int] = set()
    for node in graph.program.graph.nodes:
        if getattr(node.target, "overloadpacket", None) is not torch.ops.aten.slice:
            continue
        atoms = graph.analysis.node_atoms.get(node.args[0].name)
        out = graph.analysis.node_atoms.get(node.name)
        if isinstance(atoms, list) and isinstance(out, list) and atoms != out:
            dim = node.args[1] if len(node.args) > 1 else 0
            leaves |= {spaces.find(leaf) for leaf in spaces.leaves(atoms[dim])}
    return {g.id for g in graph.groups if spaces.find(g.leaf) in leaves}
