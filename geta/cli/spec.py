"""What a ``geta compress`` run is: its full description, with the defaults of the embedded
demo. It serializes (``to_dict`` / ``from_dict``, TOML or JSON files), and every run writes it
into its ``report.json``, so a result is re-run from its report alone::

    geta compress --config run.toml            # a description file; flags override it
    geta compress --config old-run/report.json --out again/
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from geta import config
from geta.compressor import CompressorConfig
from geta.errors import ConfigError
from geta.optim.budget import Budget
from geta.optim.wrapped import BASE_OPTIMIZERS

__all__ = ["CompressSpec", "OptimizerSpec", "SCHEDULES", "read_description", "read_spec_file"]

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class OptimizerSpec:
    """The base optimizer and learning-rate schedule of the compression phase (the dense
    phase trains with SGD and a one-cycle schedule). ``lr_quant`` (quantizer parameters;
    ``None``: ``lr / 10``) applies where a method learns quantizers."""

    base: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_quant: float | None = None
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.base not in BASE_OPTIMIZERS:
            raise ConfigError(f"optimizer.base is one of {', '.join(BASE_OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule is one of {', '.join(SCHEDULES)}")

    def kwargs(self, lr: float) -> dict[str, Any]:
        """The arguments of a method's optimizer at learning rate ``lr``."""
        extra = {"momentum": self.momentum} if self.base == "sgd" else {}
        return {
            "base": self.base,
            "lr": lr,
            "lr_quant": self.lr_quant if self.lr_quant is not None else lr / 10,
            "weight_decay": self.weight_decay,
            **extra,
        }


@dataclass(frozen=True)
class CompressSpec:
    """The settings of one run; everything that decides its result (the output directory and
    the progress display do not).

    The defaults are the embedded demo: LeNet-5 on Fashion-MNIST, a dense baseline of 4 epochs
    (SGD, one-cycle lr 0.05), then 4 epochs of GETA-mode compression to 30x smaller (SGD,
    cosine lr from 0.025): about 2 minutes on 2 idle CPU cores.

    - ``mode``: a run method (:func:`geta.cli.methods.run_methods`): geta's modes, set by
      ``config``, or a method registered by other code (the benchmarks' baselines), set by
      ``method``.
    - ``seed`` decides the data order and the compression's randomness; ``dense_seed`` (default:
      ``seed``) the dense baseline's, so several seeds can start from one dense model.
    - ``validation``: that many training images (a fixed draw, the same for every seed) are
      held out of training and scored at the end, for choosing settings without the test set.
    - ``limit``: the first N training and test samples (quick trials); ``train_limit``: train
      on the first N training samples left after the validation split, test on all (a
      training subset for CPU-sized schedules).

    Example:
        >>> CompressSpec(budget="50x").with_options({"epochs": 2}).epochs
        2
        >>> CompressSpec.from_dict(CompressSpec(seed=3).to_dict()).seed
        3
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
    train_limit: int | None = None
    seed: int = 0
    dense_seed: int | None = None
    validation: int = 0
    device: str = "cpu"
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    config: CompressorConfig = field(default_factory=CompressorConfig)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)  # ConfigError when it cannot be read
        for name, low in (("epochs", 1), ("dense_epochs", 0), ("batch_size", 1), ("validation", 0)):
            if getattr(self, name) < low:
                option = name.replace("_", "-")
                raise ConfigError(f"--{option} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "dense_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        for name in ("limit", "train_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        _check_device(self.device)

    @property
    def parsed_budget(self) -> Budget:
        return Budget.parse(self.budget)

    @property
    def dense_seed_or_seed(self) -> int:
        return self.seed if self.dense_seed is None else self.dense_seed

    def with_options(self, options: dict[str, Any]) -> CompressSpec:
        """A copy with the given top-level settings (``None`` values are left out)."""
        return replace(self, **_given(options))

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
        """Plain values with a format version (JSON/TOML); :meth:`from_dict` reads them."""
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressSpec:
        """The description :meth:`to_dict` wrote; unknown keys raise :class:`ConfigError`."""
        return config.from_dict(cls, values, where="run")

    def describe(self) -> dict[str, Any]:
        """The settings as plain values, without the version (for tables)."""
        return asdict(self)


def read_description(path: str | Path) -> dict[str, Any]:
    """The table of settings in a TOML or JSON file, or in a run's ``report.json`` (its
    ``"run"`` entry, or ``"spec"`` for a HuggingFace run).

    Raises:
        ConfigError: the file cannot be read or parsed, or holds no table.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the run description {path}: {err}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {err}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no table of settings")
    for entry in ("run", "spec"):  # a report.json: the image path's, a HuggingFace run's
        if isinstance(data.get(entry), dict):
            return data[entry]
    return data


def read_spec_file(path: str | Path) -> CompressSpec:
    """A run description from a TOML or JSON file, or from a run's ``report.json`` (its
    ``"run"`` entry).

    Raises:
        ConfigError: the file cannot be read, or holds unknown or invalid settings.
    """
    return CompressSpec.from_dict(read_description(path))


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
