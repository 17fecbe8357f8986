"""The baselines train in geta's runner and are measured as geta is: budget met, physically
smaller, artifact exact."""

import json

import baselines  # noqa: F401  (registers the methods)
import pytest
from torch.utils.data import DataLoader

import geta
from geta.cli.compress import run_compress
from geta.cli.data import load_data
from geta.cli.spec import CompressSpec
from geta.training import evaluate

TINY = dict(data="synthetic", limit=512, batch_size=32, dense_epochs=3, epochs=6, validation=64)
CASES = {
    "prune-then-qat uniform": ("prune-then-qat", "40x", {"bits": 3}),
    "prune-then-qat global taylor": (
        "prune-then-qat",
        "40x",
        {"bits": 2, "importance": "taylor", "global_pruning": True},
    ),
    "qat-only": ("qat-only", "10x", {"bits": 3}),
    "magnitude-qat": ("magnitude-qat", "60x", {"bits": 2}),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GETA_CACHE", str(tmp_path_factory.getbasetemp() / "geta-cache"))


@pytest.mark.parametrize("case", CASES)
def test_baseline_meets_the_budget_and_exports_exactly(tmp_path, case):
    mode, budget, method = CASES[case]
    spec = CompressSpec(mode=mode, budget=budget, method=method, **TINY)
    result = run_compress(spec, tmp_path / "out", progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    c = report["compressed"]
    assert c["within_budget"] and c["papers_ratio"] >= float(budget[:-1])
    assert report["run"]["method"] == method and report["run"]["mode"] == mode
    bits = {row["bits"] for row in c["layers"]}
    assert bits == {method["bits"]}  # uniform: one bit-width everywhere
    if mode == "prune-then-qat":
        assert any(row["shape"] != row["dense_shape"] for row in c["layers"])  # physically
    if mode == "magnitude-qat":
        assert all(row["shape"] == row["dense_shape"] for row in c["layers"])
        assert sum(row["nonzeros"] for row in c["layers"]) < 0.3 * sum(
            row["dense_numel"] for row in c["layers"]
        )
    test = load_data("synthetic", limit=512).test
    loaded = geta.export.load(tmp_path / "out" / "artifact")
    assert evaluate(loaded, DataLoader(test, batch_size=128)) == c["accuracy"]
    assert result.accuracy > 0.5


def test_qat_alone_refuses_a_budget_that_needs_pruning(tmp_path):
    spec = CompressSpec(mode="qat-only", budget="100x", method={"bits": 3}, **TINY)
    with pytest.raises(geta.BudgetError, match="needs pruning"):
        run_compress(spec, tmp_path / "out", progress=False)


def test_unknown_baseline_settings_are_config_errors(tmp_path):
    spec = CompressSpec(mode="prune-then-qat", budget="40x", method={"bitz": 3}, **TINY)
    with pytest.raises(geta.ConfigError, match="unknown setting\\(s\\) bitz"):
        run_compress(spec, tmp_path / "out", progress=False)


def test_torch_pruning_leaves_a_zero_padded_shortcut_alone():
    """Option-A ResNets pad channels by a constant in their shortcuts, which Torch-Pruning
    cannot narrow: the residual streams (stem and each block's last conv) are left alone,
    the blocks' inner channels are pruned, and the pruned model still runs."""
    import torch
    from baselines.prune_then_qat import _pruner, unprunable_layers

    from geta.models import lenet5, resnet20

    model = resnet20(in_channels=1)
    example = (torch.randn(2, 1, 28, 28),)
    blocked = unprunable_layers(model, example)
    streams = {"conv1"} | {f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in (0, 1, 2)}
    assert set(blocked) == streams
    inner = [model.get_submodule(f"layer{s}.{b}.conv1") for s in (1, 2, 3) for b in (0, 1, 2)]
    before = [m.out_channels for m in inner]
    _pruner(model, example, "magnitude", 0.5, False, 1, blocked).step()
    assert model(*example).shape == (2, 10)
    assert all(m.out_channels < b for m, b in zip(inner, before, strict=True))
    assert model.conv1.out_channels == 16  # the stream kept its width
    assert unprunable_layers(lenet5(), example) == []  # nothing blocks a plain chain


def test_a_diverging_qat_stops_at_the_step_it_diverges():
    import torch
    from baselines.quantization import attach_fixed_bits, step_parameters
    from baselines.staged import StagedOptimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    attach_fixed_bits(model, 3)
    opt = StagedOptimizer(model, {}, lr=0.1, quantizer_params=step_parameters)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # a finite step passes
    opt.zero_grad()
    model(torch.full((2, 4), float("nan"))).sum().backward()
    with pytest.raises(geta.errors.DivergenceError, match="step 1: a quantizer step"):
        opt.step()
