"""The latency table: one row per quantizable layer, the kernels geta.deploy gives each width,
a calibration that reproduces the measured dense model, narrowed layers that run, a cache."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from geta.deployment import DeployConfig
from geta.deployment.latency import (
    FLOAT_WIDTH,
    VERSION,
    LatencyTable,
    LayerLatency,
    _calibrate,
    _fastest_weights,
    _fit,
    _narrowing,
    kernel_width,
    timed_inputs,
)


class Net(nn.Module):
    """Conv, depthwise conv, grouped conv, two linear layers: every narrowing rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.grouped = nn.Conv2d(16, 16, 1, groups=4)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        x = self.grouped(self.depthwise(self.conv(x).relu()).relu()).mean((2, 3))
        return self.fc2(self.fc1(x).relu())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))


def measure(**kwargs):
    """Timed with geta.deploy's default settings (no choosing int8 over int4)."""
    torch.manual_seed(0)
    model = Net().eval()
    kwargs.setdefault("config", DeployConfig())
    return model, LatencyTable.measure(model, (torch.randn(2, 3, 8, 8),), repeats=3, **kwargs)


def test_rows_kernels_and_calibration():
    model, table = measure(bit_options=(2, 8), activations=True, per_channel=True)
    assert set(table.layers) == {"conv", "depthwise", "grouped", "fc1", "fc2"}
    for row in table.layers.values():
        assert sorted(row.slope) == [4, 8, FLOAT_WIDTH]
        assert all(v > 0 for v in row.slope.values())
        assert all(v >= 0 for v in row.intercept.values())
        assert row.calls == 1
    # linear layers with quantized inputs run int8 dynamic at both widths (one timing)
    assert table.layers["fc1"].kernels == {4: "int8-dynamic", 8: "int8-dynamic", 32: "float"}
    assert table.layers["fc1"].slope[4] == table.layers["fc1"].slope[8]
    assert table.layers["conv"].kernels[4] == "int4-storage"
    # the calibration: the dense model at full width predicts the measured dense time
    full = {name: row.numel for name, row in table.layers.items()}
    dense = table.predict(full, {})
    assert dense == pytest.approx(table.dense_ms, rel=1e-9)
    assert 0 < table.scale[FLOAT_WIDTH] <= 1 and table.fixed_ms >= 0
    assert sorted(table.scale) == [4, 8, FLOAT_WIDTH] and min(table.scale.values()) > 0
    # and the whole model with its layers on the 8-bit kernels predicts what it measured
    if table.scale[8] != 1.0:  # 1.0: the fallback when the rest left no time to scale to
        at8 = table.predict(full, {name: 8 for name in full})
        assert at8 == pytest.approx(table.model_ms[8], rel=1e-9)
    # fewer weights never predict more time
    half = {name: n / 2 for name, n in full.items()}
    assert table.predict(half, {}) < dense


def test_only_reachable_widths_are_timed():
    _, table = measure(bit_options=(5, 8))
    assert all(sorted(row.slope) == [8, FLOAT_WIDTH] for row in table.layers.values())
    assert table.slope("fc1", 6) == table.layers["fc1"].slope[8]
    assert table.slope("fc1", 16) == table.layers["fc1"].slope[FLOAT_WIDTH]


def test_embeddings_left_float_are_timed_in_float_only():
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4))
    table = LatencyTable.measure(
        model, (torch.randint(0, 50, (2, 6)),), repeats=2, config=DeployConfig()
    )
    assert sorted(table.layers["0"].slope) == [FLOAT_WIDTH]
    assert sorted(table.layers["1"].slope) == [4, 8, FLOAT_WIDTH]


def test_cache_round_trip(tmp_path):
    _, first = measure()
    files = list((tmp_path / "cache" / "latency").glob("*.json"))
    assert len(files) == 1
    _, second = measure()  # read back, not measured again
    assert second.to_dict() == first.to_dict()
    # another batch is another entry
    model = Net()
    LatencyTable.measure(model, (torch.randn(2, 3, 8, 8),), batch=3, repeats=2)
    assert len(list((tmp_path / "cache" / "latency").glob("*.json"))) == 2
    # a broken entry is measured again, not trusted
    files[0].write_text("{not json")
    _, third = measure()
    assert sorted(third.layers) == sorted(first.layers)
    assert json.loads(files[0].read_text())["version"] == VERSION


def test_save_load(tmp_path):
    _, table = measure(cache=False)
    path = tmp_path / "t.json"
    table.save(path)
    assert LatencyTable.load(path).to_dict() == table.to_dict()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("fraction", [0.5, 0.25])
@pytest.mark.parametrize(
    "module,shape",
    [
        (nn.Linear(64, 32), (4, 7, 64)),
        (nn.Conv2d(8, 16, 3), (2, 8, 9, 9)),
        (nn.Conv2d(16, 16, 3, groups=16), (2, 16, 9, 9)),
        (nn.Conv2d(16, 32, 1, groups=4), (2, 16, 5, 5)),
        (nn.Conv1d(6, 12, 3), (2, 6, 10)),
        (nn.ConvTranspose2d(8, 4, 2, stride=2), (1, 8, 4, 4)),
        (nn.Embedding(30, 64), (3, 5)),
    ],
)
def test_narrowed_layers_run_on_cut_inputs(module, shape, fraction):
    x = torch.randint(0, 30, shape) if isinstance(module, nn.Embedding) else torch.randn(shape)
    small, cut = _narrowing(module)(module, fraction, x)
    small(cut)  # runs
    share = small.weight.numel() / module.weight.numel()
    assert share == pytest.approx(fraction, rel=0.35)


def test_fit_recovers_a_line_and_stays_non_negative():
    slope, intercept = _fit([100, 50, 25], [0.003, 0.002, 0.0015])  # seconds
    assert slope == pytest.approx(0.02, rel=1e-6) and intercept == pytest.approx(1.0, rel=1e-6)
    slope, intercept = _fit([100, 50, 25], [0.001, 0.002, 0.003])  # noise: time falls
    assert slope == pytest.approx(275 / 13125) and intercept == 0.0  # through the origin
    assert _fit([10], [0.001]) == (pytest.approx(0.1), 0.0)


def row(name, t4, t8):
    return LayerLatency(name, 100, 1, {4: t4, 8: t8, 32: 1.0}, {4: 0.0, 8: 0.0, 32: 0.0},
                        {4: "int4-storage", 8: "int8-storage", 32: "float"})  # fmt: skip


@pytest.mark.parametrize("t4,chosen", [(3.0, "int8"), (1.0, "auto")])
def test_slower_int4_kernels_deploy_on_int8(t4, chosen):
    rows = {"a": row("a", t4, 2.0), "b": row("b", t4, 2.0)}
    whole = {32: 5.0, 8: 4.0, 4: 4.5}
    table = LatencyTable("cpu", 1, 1, asdict(DeployConfig()), 5.0, 0.0, {4: 1, 8: 1, 32: 1},
                         rows, model_ms=whole)  # fmt: skip
    table = _fastest_weights(table)
    assert table.config["weights"] == chosen
    assert table.deploy_config.weights == chosen
    assert (4 in table.layers["a"].slope) == (chosen == "auto")
    assert table.slope("a", 3) == min(t4, 2.0)  # a 3-bit layer on the faster kernel


def test_weight_only_kernels_slower_than_float_deploy_float_weights():
    rows = {"a": row("a", 3.0, 2.0)}
    table = LatencyTable("cpu", 1, 1, asdict(DeployConfig()), 5.0, 0.0, {4: 1, 8: 1, 32: 1},
                         rows, model_ms={32: 5.0, 8: 6.0, 4: 7.0})  # fmt: skip
    table = _fastest_weights(table)
    assert table.deploy_config.weights == "float"
    assert sorted(table.layers["a"].slope) == [32] and sorted(table.model_ms) == [32]
    assert table.slope("a", 3) == table.slope("a", 8) == 1.0  # bits buy no time


def test_kernel_width_follows_the_deploy_config():
    assert [kernel_width(b) for b in (2, 4, 5, 8, 9, 16)] == [4, 4, 8, 8, 32, 32]
    assert kernel_width(3, DeployConfig(weights="int8")) == 8
    assert kernel_width(3, DeployConfig(weights="float")) == 32


def test_timed_inputs_cycle_the_batch():
    x, mask = torch.arange(6).reshape(2, 3), torch.ones(2, 3)
    (big,), kwargs = timed_inputs((x,), {"mask": mask, "flag": 1}, 5)
    assert big.shape == (5, 3) and torch.equal(big[2], x[0]) and torch.equal(big[3], x[1])
    assert kwargs["mask"].shape == (5, 3) and kwargs["flag"] == 1


def test_unknown_device_is_a_config_error():
    from geta import ConfigError

    with pytest.raises(ConfigError, match="cpu"):
        LatencyTable.measure(Net(), (torch.randn(1, 3, 8, 8),), device="tpu")
    assert np.isfinite(measure()[1].dense_ms)


def test_the_rest_that_shrinks_with_the_layers_counts_per_output_feature():
    """Dense 5 ms with 2 ms of layers; at half the units 3.5 ms with 1 ms of layers: 0.5 ms of
    the 3 ms rest shrank with the outputs, so it is time per kept output feature (by output
    elements: layer b's features are 3x larger), and both models are predicted exactly."""
    rows = {
        n: LayerLatency(
            n, 1000, 1, {32: 1e-3, 8: 5e-4}, {32: 0.0, 8: 0.0}, {32: "float", 8: "k"}, outputs=10
        )
        for n in ("a", "b")
    }
    half = ({"a": 500, "b": 500}, {"a": 5, "b": 5}, 3.5)
    fixed, scale = _calibrate(rows, {32: 5.0, 8: 4.0}, half, {"a": 1.0, "b": 3.0})
    assert fixed == pytest.approx(2.0)
    assert rows["b"].output_ms == pytest.approx(3 * rows["a"].output_ms)
    assert 10 * (rows["a"].output_ms + rows["b"].output_ms) == pytest.approx(1.0)
    assert rows["a"].slope[32] == pytest.approx(1e-3)  # the weights' own time is untouched
    table = LatencyTable("cpu", 1, 1, asdict(DeployConfig()), 5.0, fixed, scale, rows)
    assert table.predict({"a": 1000, "b": 1000}, {}) == pytest.approx(5.0)
    assert table.predict({"a": 500, "b": 500}, {}, {"a": 5, "b": 5}) == pytest.approx(3.5)
    # a layer cut on its input side only loses weight time, not output time
    inputs_cut = table.predict({"a": 500, "b": 1000}, {})
    assert inputs_cut == pytest.approx(5.0 - 500 * 1e-3)
    # the 8-bit kernels are scaled to their whole-model time on top of the same rest
    assert table.predict({"a": 1000, "b": 1000}, {"a": 8, "b": 8}) == pytest.approx(4.0)
    # a rest that grew when the layers shrank (noise) stays fixed: nothing counts per feature
    rows = {
        n: LayerLatency(n, 1000, 1, {32: 1e-3}, {32: 0.0}, {32: "float"}, outputs=10) for n in "ab"
    }
    fixed, _ = _calibrate(rows, {32: 5.0}, ({"a": 500, "b": 500}, {"a": 5, "b": 5}, 4.5))
    assert fixed == pytest.approx(3.0) and rows["a"].output_ms == 0.0
