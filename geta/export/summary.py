"""What an artifact holds and where its bytes go, read without decoding a pickle (for
``geta inspect``).

Every byte on disk is accounted for: ``manifest.json``, and in ``weights.safetensors`` the
safetensors header, the compressed index, the compressed plain section and the coded section
(the sum of each quantized weight's code streams); plus ``model.pt2`` when there is one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from geta.errors import ArtifactError
from geta.export.artifact import MANIFEST, PROGRAM, WEIGHTS, _itemsize, _read, load_tensors

__all__ = ["TensorSummary", "ArtifactSummary", "summarize"]


@dataclass(frozen=True)
class TensorSummary:
    """One stored tensor: ``coded_bytes`` in the coded section (quantized codes) and
    ``plain_bytes`` before compression in the plain section (steps, clips, raw tensors);
    ``channel_bits``, for a quantized weight of a version 3 artifact, the number of channels
    at each storage bit width (one entry unless the channels have mixed precision)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    bits: int | None
    coder: str
    numel: int
    nonzeros: int | None
    coded_bytes: int
    plain_bytes: int
    channel_bits: dict[int, int] | None = None

    @property
    def mixed(self) -> bool:
        """Whether the channels have different bit widths."""
        return self.channel_bits is not None and len(self.channel_bits) > 1


@dataclass(frozen=True)
class ArtifactSummary:
    """The artifact's manifest fields, its tensors and its bytes by part."""

    path: Path
    format: str
    version: int
    architecture: str | None
    sha256: str
    tensors: tuple[TensorSummary, ...]
    manifest_bytes: int
    weights_bytes: int
    header_bytes: int
    index_bytes: int
    index_codec: str
    plain_bytes: int
    plain_raw_bytes: int
    plain_codec: str
    coded_bytes: int
    program_bytes: int
    decoded: bool

    @property
    def total_bytes(self) -> int:
        """Every file of the artifact."""
        return self.manifest_bytes + self.weights_bytes + self.program_bytes


def _coder(entry: dict, plain_codec: str) -> str:
    if entry["encoding"] != "quantized":
        return f"plain/{plain_codec}"
    if entry["layout"] == "dense":
        return entry["codes"]["coder"]
    return f"sparse/{entry['values']['coder']}+rice"


def _bits_key(item: tuple[str, int]) -> int:
    return int(item[0])


def summarize(path: str | Path, *, decode: bool = True) -> ArtifactSummary:
    """Read ``path``'s manifest and index (format, version and SHA-256 checked) and, with
    ``decode``, decode every tensor as a full check.

    Raises:
        ArtifactError: missing, truncated, corrupted, or of another format version.

    Example:
        >>> s = summarize("out/")                                    # doctest: +SKIP
        >>> s.header_bytes + s.index_bytes + s.plain_bytes + s.coded_bytes == s.weights_bytes
        True
    """
    path = Path(path)
    manifest, sections = _read(path)
    weights = (path / WEIGHTS).read_bytes()
    plain = manifest["plain"]
    tensors = []
    for name, entry in manifest["tensors"].items():
        coded = sum(n for s, n in entry["streams"].items() if _itemsize(entry, s) == 0)
        tensors.append(
            TensorSummary(
                name=name,
                shape=tuple(entry["shape"]),
                dtype=entry["dtype"],
                encoding=entry["encoding"],
                bits=entry.get("bits"),
                coder=_coder(entry, plain["codec"]),
                numel=entry["numel"],
                nonzeros=entry.get("nonzeros"),
                coded_bytes=coded,
                plain_bytes=entry["bytes"] - coded,
                channel_bits=(
                    {int(b): n for b, n in sorted(entry["channel_bits"].items(), key=_bits_key)}
                    if "channel_bits" in entry
                    else None
                ),
            )
        )
    coded_bytes = sum(t.coded_bytes for t in tensors)
    if plain["bytes"] + coded_bytes != len(sections):
        raise ArtifactError(
            f"{path}: {len(sections)} bytes of sections, the index accounts for "
            f"{plain['bytes'] + coded_bytes}"
        )
    if decode:
        load_tensors(path)
    program = path / PROGRAM
    index_bytes = int(manifest["index"]["bytes"])
    return ArtifactSummary(
        path=path,
        format=manifest["format"],
        version=int(manifest["version"]),
        architecture=manifest.get("architecture"),
        sha256=hashlib.sha256(weights).hexdigest(),
        tensors=tuple(tensors),
        manifest_bytes=(path / MANIFEST).stat().st_size,
        weights_bytes=len(weights),
        header_bytes=len(weights) - index_bytes - len(sections),
        index_bytes=index_bytes,
        index_codec=manifest["index"]["codec"],
        plain_bytes=int(plain["bytes"]),
        plain_raw_bytes=sum(int(v) for v in plain["groups"].values()),
        plain_codec=plain["codec"],
        coded_bytes=coded_bytes,
        program_bytes=program.stat().st_size if program.exists() else 0,
        decoded=decode,
    )
