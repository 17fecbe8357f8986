"""The delivered ratio lands on the budget: within [1.0, 1.1] x the asked ratio (unused budget
is accuracy given away), in GETA mode and in both ADMM granularities."""

import pytest
import torch

import geta
from tests.optim.conftest import Blobs, mlp, train

CASES = {
    "geta": ("geta", {}),
    "admm-unstructured": ("admm", {"granularity": "weight", "update_every": 20}),
    "admm-structured": ("admm", {"granularity": "group", "update_every": 20}),
}


@pytest.mark.parametrize("ratio", [20, 60])
@pytest.mark.parametrize("case", CASES)
def test_delivered_ratio_is_within_ten_percent_of_the_budget(case, ratio):
    mode, admm = CASES[case]
    model = mlp()
    config = geta.CompressorConfig(admm=geta.AdmmConfig(**admm))
    c = geta.Compressor(model, (torch.randn(2, 16),), f"{ratio}x", mode=mode, config=config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=200)
    train(model, opt, Blobs(), 200)
    c.finalize()
    report = c.report()
    assert report.within_budget
    assert 1.0 <= report.ratio / ratio <= 1.1, f"asked {ratio}x, delivered {report.ratio:.1f}x"
