"""What a ``geta compress`` run is: its settings, with the defaults of the embedded demo."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from geta.errors import ConfigError
from geta.optim.budget import Budget

__all__ = ["CompressSpec"]


@dataclass(frozen=True)
class CompressSpec:
    """The settings of one run; everything that decides its result (the output directory and
    the progress display do not).

    The defaults are the embedded demo: LeNet-5 on Fashion-MNIST, a dense baseline of 4 epochs
    (SGD, one-cycle lr 0.05), then 4 epochs of GETA-mode compression to 30x smaller (SGD,
    cosine lr from 0.025): about 2 minutes on 2 idle CPU cores.

    Example:
        >>> CompressSpec(budget="50x").with_options({"epochs": 2}).epochs
        2
    """

    model: str = "lenet5"
    data: str = "fashion-mnist"
    budget: str = "30x"
    mode: str = "geta"
    epochs: int = 4
    dense_epochs: int = 4
    lr: float = 0.025
    dense_lr: float = 0.05
    batch_size: int = 128
    limit: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        Budget.parse(self.budget)  # ConfigError when it cannot be read
        for name, low in (("epochs", 1), ("dense_epochs", 0), ("batch_size", 1)):
            if getattr(self, name) < low:
                option = name.replace("_", "-")
                raise ConfigError(f"--{option} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "dense_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        _check_device(self.device)

    @property
    def parsed_budget(self) -> Budget:
        return Budget.parse(self.budget)

    def with_options(self, options: dict[str, Any]) -> CompressSpec:
        """A copy with the given settings (``None`` values are left out)."""
        return CompressSpec(**{**asdict(self), **_given(options)})

    def check_resumable_with(self, options: dict[str, Any], where: str) -> None:
        """Raise :class:`ConfigError` when an option given to ``--resume`` differs from the run
        being resumed."""
        for key, value in _given(options).items():
            if getattr(self, key) != value:
                option = key.replace("_", "-")
                raise ConfigError(
                    f"--{option} {value} differs from the run in {where} (started with "
                    f"{getattr(self, key)}); leave it out to resume, or use another --out"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _check_device(name: str) -> None:
    """A device torch can train on here: ``cpu``, or ``cuda`` / ``cuda:N`` with CUDA present."""
    try:
        kind = torch.device(name).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this torch sees no CUDA device; use --device cpu")


def _given(options: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(CompressSpec)}
    return {k: v for k, v in options.items() if k in known and v is not None}
