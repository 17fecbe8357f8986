"""The budget a user states: a model size, a BOPs figure or a latency, absolute or as a
ratio."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from geta.errors import ConfigError

__all__ = ["Budget"]

_METRICS = ("size", "bops", "latency")
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


@dataclass(frozen=True)
class Budget:
    """``sum_l bits_l * nonzeros_l <= B`` (``metric="size"``),
    ``sum_l MACs_l * weight_bits_l * activation_bits_l <= B`` (``metric="bops"``) or
    ``sum_l latency_l(kernel of bits_l, nonzeros_l) + rest <= B`` (``metric="latency"``,
    milliseconds on ``device`` at ``batch`` rows, from a per-layer table measured on this
    machine: :mod:`geta.deployment.latency`).

    Give either a ``ratio`` against the dense fp32 model (the papers' compression rate; the
    speed-up for latency) or an absolute ``value`` (bits of weight payload for size,
    operations for BOPs, milliseconds for latency). What counts is the weights of conv, linear
    and (when quantized) embedding layers; see :class:`geta.optim.CostModel`.

    Example:
        >>> Budget.size(ratio=50).target(dense_cost=3.2e6)
        64000.0
        >>> Budget.size(bytes=1000).target(dense_cost=3.2e6)
        8000.0
        >>> Budget.parse("200KB")
        Budget(metric='size', ratio=None, value=1600000.0, device='cpu', batch=1)
        >>> str(Budget.latency(speedup=2, batch=8))
        '2x faster (cpu, batch 8)'
    """

    metric: Literal["size", "bops", "latency"]
    ratio: float | None = None
    value: float | None = None
    device: str = "cpu"
    batch: int = 1

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ConfigError(f"a budget's metric is one of {_METRICS}, not {self.metric!r}")
        if self.batch < 1:
            raise ConfigError(f"a latency budget's batch is at least 1, got {self.batch}")
        if (self.ratio is None) == (self.value is None):
            raise ConfigError("give exactly one of ratio= or an absolute size/value")
        if self.ratio is not None and self.ratio < 1:
            raise ConfigError(f"a compression ratio is at least 1, got {self.ratio}")
        if self.value is not None and self.value <= 0:
            raise ConfigError(f"a budget is positive, got {self.value}")

    @classmethod
    def size(
        cls, ratio: float | None = None, *, bytes: float | None = None, bits: float | None = None
    ) -> Budget:
        """A model-size budget: ``ratio`` x smaller than fp32, or at most ``bytes`` (``bits``)
        of weight payload (index and file overhead not included, as in the papers)."""
        if bytes is not None and bits is not None:
            raise ConfigError("give bytes= or bits=, not both")
        value = bytes * 8 if bytes is not None else bits
        return cls("size", ratio=ratio, value=value)

    @classmethod
    def bops(cls, ratio: float | None = None, *, value: float | None = None) -> Budget:
        """A bit-operations budget: ``ratio`` x fewer BOPs than the fp32 model (32 x 32 bits
        per MAC), or at most ``value`` BOPs per sample."""
        return cls("bops", ratio=ratio, value=value)

    @classmethod
    def latency(
        cls,
        ms: float | None = None,
        *,
        speedup: float | None = None,
        device: str = "cpu",
        batch: int = 1,
    ) -> Budget:
        """A latency budget: at most ``ms`` milliseconds per forward of ``batch`` rows on
        ``device``, or ``speedup`` x faster than the dense fp32 model there, as
        :func:`geta.deploy`'s torch backend runs it. The Compressor times the model and each
        layer on this machine (cached) to build the cost (:mod:`geta.deployment.latency`);
        the report shows predicted and measured latency."""
        return cls("latency", ratio=speedup, value=ms, device=device, batch=batch)

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"50x"``, ``"200KB"``, ``"1.5MiB"``, ``"bops=30x"``, ``"bops=2e9"``,
        ``"latency=2x"`` or ``"latency=5ms"`` (CPU, batch 1)."""
        spec = text.strip().lower().replace(" ", "")
        metric = "size"
        if spec.startswith("bops="):
            metric, spec = "bops", spec[5:]
        elif spec.startswith("latency="):
            metric, spec = "latency", spec[8:]
            if match := re.fullmatch(r"([0-9.e+]+)ms", spec):
                return cls.latency(ms=float(match.group(1)))
        if match := re.fullmatch(r"([0-9.e+]+)x", spec):
            return cls(metric, ratio=float(match.group(1)))
        if metric == "bops" and re.fullmatch(r"[0-9.e+]+", spec):
            return cls("bops", value=float(spec))
        if metric == "size" and (match := re.fullmatch(r"([0-9.e+]+)([kmg]i?b|b)", spec)):
            return cls.size(bytes=float(match.group(1)) * _UNITS[match.group(2)])
        raise ConfigError(
            f"cannot read budget {text!r}; write e.g. '50x', '200KB', 'bops=30x', 'bops=2e9', "
            "'latency=2x' or 'latency=5ms'"
        )

    def target(self, dense_cost: float) -> float:
        """The bound B in the cost model's unit, given the dense fp32 cost."""
        return dense_cost / self.ratio if self.ratio is not None else float(self.value)

    def __str__(self) -> str:
        if self.metric == "latency":
            where = f"({self.device}, batch {self.batch})"
            if self.ratio is not None:
                return f"{self.ratio:g}x faster {where}"
            return f"{self.value:g} ms {where}"
        if self.ratio is not None:
            return f"{self.ratio:g}x {'smaller' if self.metric == 'size' else 'fewer BOPs'}"
        if self.metric == "size":
            return f"{self.value / 8:,.0f} bytes of weights"
        return f"{self.value:.3g} BOPs"
