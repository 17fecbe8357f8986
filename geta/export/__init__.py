"""Export: the bit-packed artifact (save / load), and size accounting."""

from geta.export.artifact import StoredCodes, load, load_codes, load_tensors, read_manifest, save
from geta.export.packing import pack_bits, unpack_bits
from geta.export.size import LayerSize, SizeReport, size_report
from geta.export.summary import ArtifactSummary, TensorSummary, summarize

__all__ = [
    "ArtifactSummary",
    "LayerSize",
    "SizeReport",
    "load",
    "load_codes",
    "load_tensors",
    "StoredCodes",
    "pack_bits",
    "read_manifest",
    "save",
    "size_report",
    "summarize",
    "TensorSummary",
    "unpack_bits",
]
