"""What the one-shot benchmarks share: the methods' Compressor settings, and one compression
from calibration batches to a reloaded ``geta.hf`` checkpoint with its sizes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from minilm_bbc import dir_bytes

import geta
from geta.optim import OneshotConfig

METHODS = ("rtn", "gptq", "geta-bits", "geta")


def settings(method: str, ratio: float, batches: int = 32) -> geta.CompressorConfig:
    """The Compressor settings of ``method`` at a papers' budget of ``ratio``: ``rtn`` and
    ``gptq`` at a uniform ``round(32 / ratio)`` bits, ``geta-bits`` with bits in 2..8 by the
    budget projection, ``geta`` also removing heads and MLP channels (FLAP)."""
    bits = round(32 / ratio)
    fixed = method in ("rtn", "gptq")
    return geta.CompressorConfig(
        bit_range=(bits, bits) if fixed else (2, 8),
        quantize_embeddings=True,
        max_group_sparsity=0.0 if method != "geta" else 0.5,
        oneshot=OneshotConfig(calibration_batches=batches, gptq=method != "rtn"),
    )


def compress(model, method: str, ratio: float, batches: list, example: dict):
    """``model`` compressed in place by ``method`` on the calibration ``batches``, saved with
    ``geta.hf.save_pretrained`` and loaded back: the reloaded model and the run's sizes."""
    start = time.perf_counter()
    c = geta.Compressor(
        model,
        (),
        f"{ratio}x",
        mode="oneshot",
        config=settings(method, ratio, len(batches)),
        example_kwargs=example,
    )
    c.search(batches, [])
    student = c.finalize()
    seconds = time.perf_counter() - start
    report = c.report()
    with tempfile.TemporaryDirectory() as tmp:
        geta.hf.save_pretrained(student, Path(tmp) / "s")
        files = dir_bytes(Path(tmp) / "s")
        reloaded = geta.hf.from_pretrained(Path(tmp) / "s")
    return reloaded, {
        "papers_ratio": report.ratio,
        "within_budget": report.within_budget,
        "removed_units": report.removed_units,
        "total_units": report.total_units,
        "bits": sorted({layer.bits for layer in report.layers}),
        "checkpoint_bytes": sum(files.values()),
        "seconds": round(seconds, 1),
    }
