"""A compression mode is one registered class: a toy mode defined here, outside geta, runs end
to end through the Compressor and the CLI's runner."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import geta
from geta.cli.compress import run_compress
from geta.cli.methods import run_methods
from geta.cli.spec import CompressSpec
from geta.optim.mode import CompressionMode, ModeOptimizer, register_mode
from geta.optim.wrapped import WrappedOptimizer
from geta.quant.prepare import weight_quantizers


@dataclass(frozen=True)
class FixedBitsConfig:
    """The toy mode's settings: every weight quantizer at ``bits``, nothing removed."""

    bits: int = 4


class FixedBitsOptimizer(WrappedOptimizer):
    """Trains the weights as they are; ``finish`` sets every weight quantizer to ``bits``."""

    def __init__(self, params, problem, model: nn.Module, bits: int, **kwargs: Any) -> None:
        super().__init__(params, kwargs.pop("base", "sgd"), **kwargs)
        self.problem, self.model, self.bits = problem, model, bits
        self.history: list[dict[str, float]] = []
        self.done = False

    def step(self, closure=None):
        loss = self.base.step(closure)
        self.history.append({"step": float(len(self.history))})
        return loss

    @property
    def stage(self) -> str:
        return "done" if self.done else "train"

    @property
    def zeroed(self) -> np.ndarray:
        return np.zeros(self.problem.units.count, dtype=bool)

    @torch.no_grad()
    def finish(self) -> None:
        for q in weight_quantizers(self.model).values():
            q.set_bits(float(self.bits))
        self.done = True

    def removal_counts(self) -> tuple[int, int]:
        return 0, self.problem.units.count


@register_mode
class FixedBitsMode(CompressionMode):
    name = "fixed-bits-test"
    config_type = FixedBitsConfig

    def learned_quantizer_params(self, compressor):
        return []  # the quantizers stay as prepared until finish() sets their bits

    def optimizer(self, compressor, groups, total_steps, **kwargs):
        cfg = self.settings(compressor)
        bits = cfg.bits if isinstance(cfg, FixedBitsConfig) else FixedBitsConfig().bits
        kwargs.pop("check_finite", None)
        return FixedBitsOptimizer(groups, compressor.problem, compressor.model, bits, **kwargs)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_a_mode_registered_outside_geta_runs_end_to_end(tmp_path):
    model = mlp()
    x = torch.randn(64, 16)
    c = geta.Compressor(model, (x[:2],), "6x", config=FixedBitsConfig(bits=4))
    assert c.mode == "fixed-bits-test" and c.mode_config == FixedBitsConfig(4)
    opt = c.optimizer(lr=0.01, total_steps=5)
    assert isinstance(opt, ModeOptimizer)
    for _ in range(5):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    c.finalize()
    report = c.report()
    assert report.mode == "fixed-bits-test" and report.within_budget
    assert {r.bits for r in report.layers} == {4} and opt.stage == "done"
    assert len(report.extra["history"]) == 5
    c.export(tmp_path / "a")
    loaded = geta.export.load(tmp_path / "a", model=mlp)
    torch.testing.assert_close(loaded(x), model(x))


def test_the_cli_runs_a_registered_mode(tmp_path):
    assert "fixed-bits-test" in run_methods() and "geta" in run_methods()
    spec = CompressSpec(
        mode="fixed-bits-test",
        budget="6x",
        data="synthetic",
        limit=256,
        batch_size=32,
        dense_epochs=1,
        epochs=1,
        validation=32,
    )
    run_compress(spec, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "report.json").exists()


def test_config_types_select_modes_and_mismatches_are_config_errors():
    x = (torch.randn(2, 16),)
    assert geta.Compressor(mlp(), x, "20x", config=geta.AdmmConfig()).mode == "admm"
    c = geta.Compressor(mlp(), x, "20x", mode="admm-progressive", config=geta.AdmmConfig())
    assert c.mode == "admm-progressive" and c.config.admm == geta.AdmmConfig()
    assert geta.Compressor(mlp(), x, "20x").mode == "geta"
    with pytest.raises(geta.ConfigError, match="selects none"):
        geta.Compressor(mlp(), x, "20x", config={"bits": 4})
    with pytest.raises(geta.ConfigError, match="takes a AdmmConfig"):
        geta.Compressor(mlp(), x, "20x", mode="admm", config=FixedBitsConfig())
    with pytest.raises(geta.ConfigError, match="unknown mode"):
        geta.Compressor(mlp(), x, "20x", mode="nope")
