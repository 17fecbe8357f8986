"""The one-shot mode: GPTQ rounds with less output error than rounding to nearest, FLAP's bias
compensation keeps a removed constant unit's contribution, the calibrated model lands within
its budget and prunes exactly, and a transformers model goes through to a checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import geta
from geta.optim import OneshotConfig
from geta.optim.oneshot import gptq
from geta.quant.functional import fake_quantize
from tests.hf.families import FAMILIES


def _grid(step: float):
    return lambda column: torch.round(column / step) * step


def test_gptq_rounds_onto_the_grid_with_less_output_error_than_nearest():
    torch.manual_seed(0)
    mix = torch.randn(16, 16)
    x = torch.randn(512, 16) @ mix  # correlated inputs: where error compensation pays
    w = torch.randn(8, 16)
    w[:, 3] = 0  # a removed input: stays zero
    rounded = gptq(w, x.T @ x, _grid(0.5))
    nearest = _grid(0.5)(w)
    assert torch.equal((rounded * 2).round(), rounded * 2)
    assert bool((rounded[:, 3] == 0).all())
    err_gptq = (x @ (rounded - w).T).square().sum()
    err_nearest = (x @ (nearest - w).T).square().sum()
    assert err_gptq < 0.8 * err_nearest


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 5)
    )


def _batches(n: int = 8, offset: float = 0.0) -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 12, generator=g) + offset,) for _ in range(n)]


@pytest.mark.parametrize("cfg", [OneshotConfig(), OneshotConfig(saliency="wanda", gptq=False)])
def test_calibrated_model_is_within_budget_and_prunes_exactly(cfg):
    model = _mlp()
    settings = geta.CompressorConfig(bit_range=(4, 8), oneshot=cfg)  # 12x needs pruning
    c = geta.Compressor(model, (torch.randn(2, 12),), "12x", mode="oneshot", config=settings)
    result = c.search(_batches(), [])
    assert result.removed.any() and set(result.bits) <= set(range(4, 9))
    x = torch.randn(16, 12)
    with torch.no_grad():
        zeroed = model(x)
    small = c.finalize()
    report = c.report()
    assert report.within_budget and report.mode == "oneshot"
    assert small[0].out_features + small[2].out_features < 48
    with torch.no_grad():
        torch.testing.assert_close(small(x), zeroed, rtol=1e-5, atol=1e-5)


def test_flap_moves_a_constant_unit_into_the_next_bias():
    """A hidden unit whose value never varies carries no information: FLAP removes it first
    and adds its constant contribution to the next layer's bias, so outputs do not move."""
    model = _mlp()
    with torch.no_grad():
        model[0].weight[7] = 0
        model[0].bias[7] = 3.0  # unit 7 of the first hidden layer is always 3
    x = torch.randn(16, 12)
    with torch.no_grad():
        dense = model(x)
    cfg = OneshotConfig(gptq=False)
    c = geta.Compressor(model, (x[:2],), "4.2x", config=cfg)  # a little beyond 8 bits
    removed = c.search(_batches(), []).removed
    first = c.problem.units.offsets[0]
    assert removed[first + 7]
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense, rtol=0.05, atol=0.05)


def test_oneshot_needs_calibration_and_a_budget():
    with pytest.raises(geta.ConfigError, match="needs a budget"):
        geta.Compressor(_mlp(), (torch.randn(2, 12),), None, config=OneshotConfig())
    c = geta.Compressor(_mlp(), (torch.randn(2, 12),), "4x", mode="oneshot")
    with pytest.raises(geta.ConfigError, match="calibrates first"):
        c.finalize()
    with pytest.raises(geta.ConfigError, match="saliency is one of"):
        OneshotConfig(saliency="magnitude")
    assert OneshotConfig.from_dict(OneshotConfig(damp=0.1).to_dict()) == OneshotConfig(damp=0.1)


def test_a_transformer_is_calibrated_and_saved(tmp_path):
    torch.manual_seed(0)
    model = FAMILIES["llama"]().eval()
    inputs = geta.hf.example_inputs(model)
    c = geta.Compressor(model, (), "6x", example_kwargs=inputs, mode="oneshot")
    calibration = [geta.hf.example_inputs(model, seq_len=8) for _ in range(4)]
    c.search(calibration, [])
    small = c.finalize()
    assert c.report().within_budget
    with torch.no_grad():
        logits = small(**inputs).logits
    geta.hf.save_pretrained(small, tmp_path)
    loaded = geta.hf.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, logits)


def test_rounded_weights_are_fixed_points_of_their_quantizers():
    """GPTQ's grid is the quantizer's: the stored weight comes back unchanged through it."""
    model = _mlp()
    c = geta.Compressor(model, (torch.randn(2, 12),), "6x", mode="oneshot")
    c.search(_batches(), [])
    for layer in c.problem.cost_model.layers:
        q, w = layer.quantizer, layer.weight.detach()
        shape = (-1, 1)
        again = fake_quantize(w, *(p.detach().reshape(shape) for p in (q.d, q.q_m, q.t)))
        torch.testing.assert_close(again, w, rtol=0, atol=1e-6)
