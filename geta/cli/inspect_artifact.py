"""``geta inspect ARTIFACT``: what an artifact holds (per tensor: shape, bits, coder, bytes;
per mixed-precision layer: how many channels have each bit width), where its bytes go, and its
verified checksum. Nothing is unpickled."""

from __future__ import annotations

import argparse

from geta.export.summary import ArtifactSummary, summarize

__all__ = ["add_parser", "format_summary"]


def format_summary(s: ArtifactSummary) -> str:
    """The text ``geta inspect`` prints."""
    lines = [
        f"{s.path}: {s.format} version {s.version}"
        + (f", architecture {s.architecture}" if s.architecture else ""),
        f"sha256 {s.sha256} (matches the manifest"
        + ("; every tensor decodes)" if s.decoded else ")"),
        "",
        f"{'tensor':<32} {'shape':>14} {'dtype':>8} {'bits':>5} {'nonzeros':>9} "
        f"{'coder':>20} {'coded B':>8} {'plain B':>8}",
    ]
    for t in s.tensors:
        shape = "x".join(map(str, t.shape)) or "scalar"
        if t.mixed:  # the range here, the histogram below the table
            bits = f"{min(t.channel_bits)}-{max(t.channel_bits)}"
        else:
            bits = str(t.bits) if t.bits is not None else "-"
        nonzeros = f"{t.nonzeros:,}" if t.nonzeros is not None else "-"
        lines.append(
            f"{t.name:<32} {shape:>14} {t.dtype:>8} {bits:>5} {nonzeros:>9} {t.coder:>20} "
            f"{t.coded_bytes:>8,} {t.plain_bytes:>8,}"
        )
    mixed = [t for t in s.tensors if t.mixed]
    if mixed:
        lines += ["", "channels per bit width (bits:channels), mixed-precision layers:"]
        lines += [
            f"  {t.name:<32} " + " ".join(f"{b}:{n}" for b, n in t.channel_bits.items())
            for t in mixed
        ]
    parts = [
        ("manifest.json", s.manifest_bytes, ""),
        ("safetensors header", s.header_bytes, ""),
        ("index", s.index_bytes, s.index_codec),
        ("plain section", s.plain_bytes, f"{s.plain_codec}, {s.plain_raw_bytes:,} B raw"),
        ("coded section", s.coded_bytes, "quantized codes"),
    ]
    if s.program_bytes:
        parts.append(("model.pt2", s.program_bytes, "torch.export program"))
    lines += ["", "bytes on disk:"]
    lines += [f"  {name:<20} {n:>10,}  {note}".rstrip() for name, n, note in parts]
    lines.append(f"  {'total':<20} {s.total_bytes:>10,}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    print(format_summary(summarize(args.artifact, decode=not args.no_decode)))
    return 0


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser(
        "inspect",
        parents=parents,
        help="show an artifact's tensors, bits, coders, bytes and checksum",
        description=__doc__,
    )
    p.add_argument("artifact", help="an artifact directory (manifest.json + weights.safetensors)")
    p.add_argument(
        "--no-decode", action="store_true", help="check the checksum only, do not decode tensors"
    )
    p.set_defaults(run=_run)
