"""Mutated artifacts, and the oracle that judges how the reader takes them.

Shared by ``tests/export/test_fuzz.py`` (a few hundred fixed cases on every run) and
``benchmarks/artifact_fuzz.py`` (as many as asked), which puts the repository root on the path
to import it: the mutations and the oracle are test code, so they live with the tests.

A case is a mutation kind and a seed: the same pair always writes the same artifact. Kinds that
leave the checksum alone must be rejected (or change nothing); kinds that recompute it make a
new, "crafted" artifact, which the SHA-256 cannot tell from a genuine one. The format holds no
other redundancy (a flipped bit of a packed code is another code), so such an artifact may also
load as other weights: the oracle then checks that what loaded is what its index declares (the
names, shapes, dtypes and module sizes). Any other exception, a warning, a case that takes
longer than its deadline, or a difference without a valid checksum is a bug of the reader.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import lzma
import random
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from torch import nn

import geta
import geta.export as export
import geta.quant as quant
from geta.export import artifact as artifact_format
from geta.graph.equivalence import random_plan

OUTCOMES = ("rejected", "identical", "changed")  # anything else is a bug
DEADLINE = 5.0  # seconds a case may take; the base artifact loads in milliseconds


# ---------------------------------------------------------------------------- the base artifact
def float_model() -> nn.Module:
    """The unpruned float architecture of the base artifact (its factory for ``load``)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),  # mixed bits per channel: the channels coder
        nn.BatchNorm2d(16),  # raw float32 and int64
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 64),  # 3% nonzero, 3 bits: the sparse layout, rANS-coded values
        nn.ReLU(),
        nn.Linear(64, 64),  # 30% nonzero, per tensor: dense, rANS
        nn.ReLU(),
        nn.Linear(64, 32),  # 5% nonzero, mixed bits, a dead channel: sparse, values by channel
        nn.ReLU(),
        nn.Linear(32, 10),  # per tensor, all zero: no code bytes at all
        nn.ReLU(),
        nn.Linear(10, 10),  # uniform weights: dense, packed
    )
    model.register_buffer("scale", torch.randn(5).half())
    model.register_buffer("mask", torch.tensor([True, False, True]))
    model.register_buffer("table", torch.arange(-3, 4, dtype=torch.int8))
    return model.eval()


def _mixed_bits(layer: nn.Module, bits: tuple[float, ...]) -> None:
    """Calibrate ``layer``'s per-channel quantizer to ``bits`` by channel, cyclically."""
    n = layer.weight.shape[0]
    per_channel = torch.tensor(bits)[torch.arange(n) % len(bits)]
    quantizer = layer.parametrizations.weight[0]
    quantizer.calibrate(layer.parametrizations.weight.original, per_channel)


def build(path: str | Path) -> Path:
    """Write the base artifact: :func:`float_model` pruned (30% of its channel groups) and
    quantized, with every layout, coder and raw dtype the format has."""
    model = float_model()
    with torch.no_grad():
        for i, density in ((4, 0.03), (6, 0.3)):  # bell-shaped, as trained weights are
            model[i].weight.normal_().mul_(torch.rand_like(model[i].weight) < density)
        model[8].weight.mul_(torch.rand_like(model[8].weight) < 0.05)
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    quant.prepare(model[6], init_bits=4)
    quant.prepare(model[10], init_bits=4)
    quant.prepare(model[4], init_bits=3, per_channel=True)
    quant.prepare(model, init_bits=4, per_channel=True)
    graph = geta.trace(model, torch.randn(1, 3, 4, 4))
    geta.prune(model, graph, random_plan(graph, 0.3))
    _mixed_bits(model[0], (2.0, 3.0, 4.0, 8.0))
    _mixed_bits(model[8], (2.0, 8.0))
    with torch.no_grad():
        model[8].parametrizations.weight.original[1].zero_()
        model[10].parametrizations.weight.original.zero_()
    return export.save(model, path)


# ---------------------------------------------------------------------------- taking apart
@dataclasses.dataclass(frozen=True)
class Artifact:
    """The two files of an artifact, as bytes."""

    manifest: bytes
    weights: bytes

    @classmethod
    def read(cls, path: Path) -> Artifact:
        return cls(
            (path / "manifest.json").read_bytes(), (path / "weights.safetensors").read_bytes()
        )

    def write(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "manifest.json").write_bytes(self.manifest)
        (path / "weights.safetensors").write_bytes(self.weights)


@dataclasses.dataclass
class Parts:
    """An artifact taken apart: the manifest, the index and the sections after it."""

    manifest: dict
    index: dict
    sections: bytes

    @classmethod
    def of(cls, artifact: Artifact) -> Parts:
        manifest = json.loads(artifact.manifest)
        spec = manifest["index"]
        blob = _blob(artifact.weights)
        text = artifact_format._decompress(
            spec["codec"], blob[: spec["bytes"]], spec["size"], manifest["version"]
        )
        return cls(manifest, json.loads(text), blob[spec["bytes"] :])

    def copy(self) -> Parts:
        return Parts(copy.deepcopy(self.manifest), copy.deepcopy(self.index), self.sections)

    def places(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """Where each stream lies: ``(group, offset, length)`` (group 0: the coded section)."""
        return artifact_format._layout(self.index["tensors"])[0]

    def coded(self) -> list[tuple[str, str]]:
        """The streams of the coded section that hold bytes."""
        return [key for key, (group, _, n) in self.places().items() if group == 0 and n]

    def pack(self, text: bytes | None = None) -> Artifact:
        """The artifact of these parts (the index as ``text`` when given), with its index
        compressed by the codec the manifest names and a valid checksum."""
        if text is None:
            text = json.dumps(self.index, separators=(",", ":")).encode()
        codec = self.manifest["index"]["codec"]
        packed = _compress(codec, text)
        weights = _weights(packed + self.sections)
        manifest = {
            **self.manifest,
            "index": {"codec": codec, "bytes": len(packed), "size": len(text)},
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
        }
        return Artifact(json.dumps(manifest).encode(), weights)


def _blob(weights: bytes) -> bytes:
    return safetensors.numpy.load(weights)["data"].tobytes()


def _weights(blob: bytes) -> bytes:
    return safetensors.numpy.save({"data": np.frombuffer(blob, dtype=np.uint8)})


def _compress(codec: str, text: bytes) -> bytes:
    if codec == "lzma":
        return lzma.compress(text, format=lzma.FORMAT_RAW, filters=artifact_format._LZMA_FILTERS)
    if codec in ("zlib", "zlib-dict"):
        zdict = artifact_format._index_dictionary(artifact_format.VERSION)
        return artifact_format._deflate(text, zdict if codec == "zlib-dict" else None)
    return text


def resum(manifest: dict, weights: bytes) -> Artifact:
    """``weights`` with ``manifest``, its checksum recomputed."""
    manifest = {**manifest, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    return Artifact(json.dumps(manifest).encode(), weights)


def with_blob(parts: Parts, blob: bytes) -> Artifact:
    """The artifact of ``parts``'s manifest and another blob (index and sections as they are)."""
    return resum(parts.manifest, _weights(blob))


# ---------------------------------------------------------------------------- values
# What an edited field becomes: edges of every range the reader checks, and wrong types.
INTERESTING: tuple[Any, ...] = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    12,
    31,
    32,
    33,
    63,
    64,
    255,
    256,
    4096,
    4097,
    2**31,
    2**32,
    2**32 + 1,
    2**40,
    2**62,
    2**63,
    2**64,
    2**80,
    -(2**63),
    0.5,
    1e308,
    float("nan"),
    True,
    False,
    None,
    "",
    "x",
    "packed",
    "rans",
    "channels",
    "dense",
    "sparse",
    "zero",
    "nonzero",
    "raw",
    "quantized",
    "float32",
    "float16",
    "int64",
    "bool",
    "complex64",
    [],
    [0],
    [2**40, 2**40],
    {},
    {"coder": "packed", "lo": 0, "width": 0},
)


def nearby(rng: random.Random, value: Any) -> Any:
    """A value next to ``value`` (an integer off by a little, or by a factor), else one of
    :data:`INTERESTING`: near-valid edits reach the decoders, far ones the checks."""
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.6:
        return rng.choice(
            [value + 1, value - 1, value + 8, value - 8, 2 * value, value // 2, -value]
        )
    return rng.choice(INTERESTING)


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside ``node`` (dict keys and list indices), nodes included."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def _edit(rng: random.Random, root: dict) -> None:
    """Replace, delete or add one field somewhere inside ``root``."""
    path = rng.choice([p for p in _leaves(root) if p])
    parent, key = _get(root, path[:-1]), path[-1]
    action = rng.random()
    if action < 0.75:
        parent[key] = nearby(rng, parent[key])
    elif action < 0.9 and isinstance(parent, dict):
        del parent[key]
    elif isinstance(parent, dict):
        parent[rng.choice(["extra", "streams", "coder", "lo", "width", "shape"])] = nearby(rng, 0)
    else:
        parent.append(nearby(rng, 1))


def _entry(rng: random.Random, parts: Parts, quantized: bool = False) -> tuple[str, dict]:
    names = [
        n
        for n, e in parts.index["tensors"].items()
        if not quantized or e["encoding"] == "quantized"
    ]
    name = rng.choice(sorted(names))
    return name, parts.index["tensors"][name]


# ---------------------------------------------------------------------------- mutations
def flip_weights(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """A few bytes of weights.safetensors flipped, the checksum left as it is."""
    data = bytearray(artifact.weights)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    return Artifact(artifact.manifest, bytes(data))


def truncate_weights(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """weights.safetensors cut short or grown, the checksum left as it is."""
    if rng.random() < 0.7:
        return Artifact(artifact.manifest, artifact.weights[: rng.randrange(len(artifact.weights))])
    return Artifact(artifact.manifest, artifact.weights + rng.randbytes(rng.randint(1, 64)))


def flip_weights_resum(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """A few bytes anywhere in weights.safetensors flipped (header, index, sections), with a
    valid checksum."""
    flipped = flip_weights(rng, artifact, parts)
    return resum(parts.manifest, flipped.weights)


def flip_stream(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """One to three bits flipped inside one region: the compressed index, the compressed plain
    section or one coded stream; valid checksum."""
    end = parts.manifest["index"]["bytes"]
    plain = parts.index["plain"]["bytes"]
    regions = [(0, end), (end, end + plain)]
    for group, start, n in parts.places().values():
        if group == 0 and n:
            regions.append((end + plain + start, end + plain + start + n))
    blob = bytearray(_blob(artifact.weights))
    lo, hi = rng.choice([r for r in regions if r[1] > r[0]])
    for _ in range(rng.randint(1, 3)):
        blob[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    return with_blob(parts, bytes(blob))


def resize_blob(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """The blob cut short, with a slice cut out, or with bytes put in; a valid safetensors
    file and checksum."""
    blob = _blob(artifact.weights)
    at = rng.randrange(len(blob) + 1)
    action = rng.randrange(3)
    if action == 0:
        blob = blob[:at]
    elif action == 1:
        blob = blob[:at] + blob[at + rng.randint(1, 32) :]
    else:
        blob = blob[:at] + rng.randbytes(rng.randint(1, 32)) + blob[at:]
    return with_blob(parts, blob)


def swap_sections(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """The plain and coded sections swapped, or the index and the sections; valid checksum."""
    end, plain = parts.manifest["index"]["bytes"], parts.index["plain"]["bytes"]
    blob = _blob(artifact.weights)
    index, sections = blob[:end], blob[end:]
    if rng.random() < 0.5:
        return with_blob(parts, index + sections[plain:] + sections[:plain])
    return with_blob(parts, sections + index)


def swap_streams(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """Two coded streams (of one tensor or two) swapped, their lengths swapped in the index
    so that every other stream stays in place; valid checksum."""
    parts = parts.copy()
    coded = parts.coded()
    if len(coded) < 2:
        return flip_stream(rng, artifact, parts)
    a, b = sorted(rng.sample(coded, 2), key=lambda key: parts.places()[key][1])
    places = parts.places()
    (_, sa, na), (_, sb, nb) = places[a], places[b]
    plain = parts.index["plain"]["bytes"]
    s = parts.sections[plain:]
    coded_bytes = s[:sa] + s[sb : sb + nb] + s[sa + na : sb] + s[sa : sa + na] + s[sb + nb :]
    parts.sections = parts.sections[:plain] + coded_bytes
    tensors = parts.index["tensors"]
    tensors[a[0]]["streams"][a[1]], tensors[b[0]]["streams"][b[1]] = nb, na
    return parts.pack()


def edit_field(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """One field of one tensor's entry replaced, deleted or added; valid checksum."""
    parts = parts.copy()
    _edit(rng, _entry(rng, parts)[1])
    return parts.pack()


SHAPES: tuple[list, ...] = (
    [2**40, 2**40],
    [2**62],
    [2**63 - 1, 2],
    [0, 2**40],
    [2**40, 0],
    [2**31, 2**31, 2**31],
    [1] * 65,
    [-1, 5],
    [1.5],
    ["3"],
    [],
    [0],
)


def edit_shape(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """One tensor's shape made huge, negative, empty, of the wrong type or rank, or off by a
    little (its streams as they are); valid checksum."""
    parts = parts.copy()
    _, entry = _entry(rng, parts)
    shape = entry["shape"]
    if rng.random() < 0.5 or not shape:
        entry["shape"] = copy.deepcopy(rng.choice(SHAPES))
    elif rng.random() < 0.5:
        i = rng.randrange(len(shape))
        shape[i] = nearby(rng, shape[i]) if rng.random() < 0.5 else shape[i] + rng.choice([-1, 1])
    else:
        entry["shape"] = shape[::-1] if rng.random() < 0.5 else [*shape, 1]
    return parts.pack()


def edit_lengths(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """One stream's declared length changed, or bytes moved from one stream to the next
    (the total kept, so that the sections still add up); valid checksum."""
    parts = parts.copy()
    _, entry = _entry(rng, parts)
    streams = entry["streams"]
    names = list(streams)
    name = rng.choice(names)
    if rng.random() < 0.5 and len(names) > 1:
        other = rng.choice([n for n in names if n != name])
        moved = rng.randint(1, max(1, streams[name]))
        streams[name] -= moved
        streams[other] += moved
    else:
        streams[name] = nearby(rng, streams[name])
    return parts.pack()


def _coder_edit(rng: random.Random, spec: dict) -> None:
    """A near-valid edit of a coder spec: another coder, its width, offset or symbols off by
    one."""
    key = rng.choice([k for k in ("coder", "lo", "width", "symbols", "widths") if k in spec])
    if key == "coder":
        spec["coder"] = rng.choice(["packed", "rans", "channels"])
    elif key == "widths":
        _coder_edit(rng, spec["widths"])
    else:
        spec[key] += rng.choice([-1, 1, 2, 8, -8])


def edit_coder(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """A near-valid edit of one quantized weight: its coder, layout, marks, Rice parameter,
    nonzeros, bits, per_channel or axis; valid checksum."""
    parts = parts.copy()
    _, entry = _entry(rng, parts, quantized=True)
    spec = entry.get("codes", entry.get("values"))
    key = rng.choice(
        ["spec", "spec", "layout", "marks", "rice_k", "nonzeros", "bits", "per_channel", "axis"]
    )
    if key == "spec":
        _coder_edit(rng, spec)
    elif key == "layout":
        entry["layout"] = "sparse" if entry["layout"] == "dense" else "dense"
        entry.setdefault("marks", "nonzero")
        entry.setdefault("rice_k", 1)
        entry.setdefault("values" if entry["layout"] == "sparse" else "codes", spec)
    elif key in ("marks", "per_channel"):
        entry[key] = {"zero": "nonzero", "nonzero": "zero", True: False, False: True}.get(
            entry.get(key), "zero"
        )
    else:
        entry[key] = entry.get(key, 0) + rng.choice([-1, 1, 2, -2, 8])
    return parts.pack()


def edit_plain(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """The plain section's codec, size or groups edited; valid checksum."""
    parts = parts.copy()
    plain = parts.index["plain"]
    action = rng.randrange(4)
    if action == 0:
        plain["codec"] = rng.choice(["none", "zlib", "zlib-dict", "lzma", "brotli", 7])
    elif action == 1:
        plain["bytes"] = nearby(rng, plain["bytes"])
    elif action == 2 and plain["groups"]:
        size = rng.choice(sorted(plain["groups"]))
        plain["groups"][size] = nearby(rng, plain["groups"][size])
    else:
        plain["groups"][rng.choice(["0", "1", "2", "3", "4", "8", "-4", "x"])] = nearby(rng, 8)
    return parts.pack()


def edit_modules(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """A module's size attribute edited, or one that is no size set (a method, a private or
    a flag); valid checksum."""
    parts = parts.copy()
    modules = parts.index["modules"]
    name = rng.choice(sorted(modules))
    if rng.random() < 0.5:
        _edit(rng, modules[name])
    else:
        key = rng.choice(["forward", "_parameters", "training", "weight", "__class__", "new", ""])
        modules[name][key] = nearby(rng, 1)
    return parts.pack()


def edit_manifest(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """manifest.json edited, weights.safetensors as it is: the version, the format, where the
    index ends and how it is compressed, the checksum, the architecture; or not a manifest."""
    manifest = copy.deepcopy(parts.manifest)
    action = rng.randrange(6)
    if action == 0:
        manifest["version"] = rng.choice([1, 2, 4, "3", 3.0, True, None, 2**80])
    elif action == 1:
        manifest["format"] = rng.choice(["geta", None, 3, "geta-artifact "])
    elif action == 2:
        key = rng.choice(["codec", "bytes", "size"])
        if key == "codec":
            manifest["index"]["codec"] = rng.choice(["none", "zlib", "zlib-dict", "lzma", "zip", 1])
        else:
            manifest["index"][key] = nearby(rng, manifest["index"][key])
    elif action == 3:
        del manifest[rng.choice(sorted(manifest))]
    elif action == 4:
        manifest["architecture"] = rng.choice(["os:getcwd", "geta.models:lenet5", 5, "x"])
    else:
        text = rng.choice([b"[", b"[]", b"null", b"\xff\xfe", b"[" * 100_000, b"{" * 3])
        return Artifact(text, artifact.weights)
    return Artifact(json.dumps(manifest).encode(), artifact.weights)


def garbage_index(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """The index replaced by other text (not JSON, truncated, too deep, not a table, no
    tensors); valid checksum."""
    text = json.dumps(parts.index).encode()
    choice = rng.randrange(7)
    if choice == 0:
        text = text[: rng.randrange(len(text))]
    elif choice == 1:
        text = b"[" * 100_000 + b"]" * 100_000
    elif choice == 2:
        text = rng.randbytes(rng.randint(0, 64))
    elif choice == 3:
        text = json.dumps({"tensors": {}, "plain": parts.index["plain"]}).encode()
    elif choice == 4:
        text = json.dumps({"tensors": [], "plain": {}}).encode()
    elif choice == 5:
        text = b'{"tensors": {"a": ' * 5000 + b"1" + b"}" * 10_000
    else:
        text = (
            json.dumps({**parts.index, "tensors": {"x": 1e400}})
            .encode()
            .replace(b"Infinity", b"1e400")
        )
    return parts.pack(text)


def crafted_huge(rng: random.Random, artifact: Artifact, parts: Parts) -> Artifact:
    """An entry crafted to make the reader allocate: a huge shape with streams that look
    right (a packed width of 0, rANS states for a lane, a sparse layout with few marks, raw
    data), or a small stream that claims a huge count; valid checksum."""
    parts = parts.copy()
    name, entry = _entry(rng, parts, quantized=rng.random() < 0.8)
    huge = rng.choice([[2**40, 2**40], [2**20, 2**20], [2**36], [2**31, 3, 3, 3]])
    entry["shape"] = huge
    if entry["encoding"] == "quantized":
        entry["per_channel"] = False
        variant = rng.randrange(4)
        if variant == 0:
            entry.update(layout="dense", codes={"coder": "packed", "lo": 0, "width": 0})
        elif variant == 1:
            entry.update(layout="dense", codes={"coder": "rans", "lo": 0, "symbols": 1})
        elif variant == 2:
            entry.update(layout="sparse", marks="nonzero", nonzeros=2**40, rice_k=0)
        else:
            entry.update(layout="sparse", marks="zero", nonzeros=2**40, rice_k=40)
    return parts.pack()


Mutation = Callable[[random.Random, Artifact, Parts], Artifact]
# kind -> (mutation, whether it recomputes the checksum: only then may the tensors differ)
KINDS: dict[str, tuple[Mutation, bool]] = {
    "flip-weights": (flip_weights, False),
    "truncate-weights": (truncate_weights, False),
    "edit-manifest": (edit_manifest, False),
    "flip-weights-resum": (flip_weights_resum, True),
    "flip-stream": (flip_stream, True),
    "resize-blob": (resize_blob, True),
    "swap-sections": (swap_sections, True),
    "swap-streams": (swap_streams, True),
    "edit-field": (edit_field, True),
    "edit-shape": (edit_shape, True),
    "edit-lengths": (edit_lengths, True),
    "edit-coder": (edit_coder, True),
    "edit-plain": (edit_plain, True),
    "edit-modules": (edit_modules, True),
    "garbage-index": (garbage_index, True),
    "crafted-huge": (crafted_huge, True),
}


# ---------------------------------------------------------------------------- the oracle
class Hang(BaseException):
    """A case ran past its deadline (a BaseException: the reader's handlers cannot catch it)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """A loaded model's tensors and size attributes."""
    names = {name for name, _ in model.named_modules()}
    return dict(model.state_dict()), artifact_format._module_attributes(model, names)


def same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    (ta, ma), (tb, mb) = a, b
    return (
        ma == mb
        and ta.keys() == tb.keys()
        and all(
            ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k])
            for k in ta
        )
    )


def inconsistency(model: nn.Module, path: Path) -> str | None:
    """What in a loaded model differs from its artifact's index (names, shapes, dtypes and
    module sizes), or ``None``."""
    manifest = export.read_manifest(path)
    state = model.state_dict()
    for name, entry in manifest["tensors"].items():
        tensor = state.get(name)
        if tensor is None:
            return f"{name} is not in the model"
        if list(tensor.shape) != entry["shape"] or str(tensor.dtype) != f"torch.{entry['dtype']}":
            return f"{name} is {tensor.dtype} {list(tensor.shape)}, the index says {entry}"
    for name, attrs in manifest["modules"].items():
        module = model.get_submodule(name)
        for key, value in attrs.items():
            if getattr(module, key) != (tuple(value) if isinstance(value, list) else value):
                return f"{name}.{key} is {getattr(module, key)!r}, the index says {value!r}"
    return None


def judge(path: Path, reference: tuple[dict, dict], may_change: bool) -> str:
    """How the reader took the artifact at ``path``: one of :data:`OUTCOMES`, or a bug."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with deadline(DEADLINE):
                model = export.load(path, model=float_model)
    except geta.ArtifactError:
        return "rejected"
    except Hang:
        return "bug: hang"
    except Exception as err:  # the finding: anything but an ArtifactError
        return f"bug: {type(err).__name__}: {str(err)[:200]}"
    try:
        if same(snapshot(model), reference):
            return "identical"
        if not may_change:
            return "bug: other tensors without a valid checksum"
        problem = inconsistency(model, path)
    except Exception as err:  # the model that loaded is broken
        return f"bug: the loaded model is broken: {type(err).__name__}: {str(err)[:200]}"
    return "changed" if problem is None else f"bug: inconsistent: {problem[:200]}"


@dataclasses.dataclass
class Report:
    """Outcomes by mutation kind, the bugs with their cases, and the slowest case."""

    counts: dict[str, Counter] = dataclasses.field(default_factory=dict)
    bugs: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    slowest: tuple[float, str, int] = (0.0, "", 0)

    def add(self, kind: str, seed: int, outcome: str, seconds: float) -> None:
        self.counts.setdefault(kind, Counter())[
            "bug" if outcome.startswith("bug") else outcome
        ] += 1
        if outcome.startswith("bug"):
            self.bugs.append((kind, seed, outcome))
        self.slowest = max(self.slowest, (seconds, kind, seed))

    def table(self) -> str:
        columns = [*OUTCOMES, "bug"]
        lines = [f"{'kind':<20}" + "".join(f"{c:>10}" for c in columns)]
        for kind, counts in self.counts.items():
            lines.append(f"{kind:<20}" + "".join(f"{counts[c]:>10}" for c in columns))
        total = sum(self.counts.values(), Counter())
        lines.append(f"{'total':<20}" + "".join(f"{total[c]:>10}" for c in columns))
        seconds, kind, seed = self.slowest
        lines.append(f"slowest case: {kind} seed {seed}, {seconds:.3f} s")
        return "\n".join(lines)


def run(base: Path, work: Path, cases: dict[str, range]) -> Report:
    """Load the mutations ``cases`` gives (seeds by kind) of the artifact at ``base``, each
    written to ``work``, and judge them."""
    artifact = Artifact.read(base)
    parts = Parts.of(artifact)
    reference = snapshot(export.load(base, model=float_model))
    report = Report()
    for kind, seeds in cases.items():
        mutate, may_change = KINDS[kind]
        for seed in seeds:
            mutate(random.Random(f"{kind}:{seed}"), artifact, parts).write(work)
            start = time.perf_counter()
            outcome = judge(work, reference, may_change)
            report.add(kind, seed, outcome, time.perf_counter() - start)
    return report
