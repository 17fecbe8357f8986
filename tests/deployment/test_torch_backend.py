"""The torch backend: each quantized layer on its integer kernel, outputs equal to the
fake-quantized model, weight memory as the kernel widths say."""

import pytest
import torch
from torch import nn

import geta
import geta.quant as quant
from geta.deployment import DeployConfig, deploy, kernels
from geta.deployment.report import weight_memory_bytes


def quantized(model: nn.Module, bits: dict[str, float | list[float]], activations=False):
    """``model`` prepared per channel, each named layer calibrated at its bits (a list: per
    channel)."""
    torch.manual_seed(0)
    quant.prepare(model, init_bits=8, per_channel=True, activations=activations)
    qs = quant.weight_quantizers(model)
    for name, b in bits.items():
        q = qs[name]
        layer = model.get_submodule(name)
        q.calibrate(layer.parametrizations.weight.original.detach(), torch.as_tensor(b).float())
    return model.eval()


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= tol * max(float(b.abs().max()), 1e-6)


class Mlp(nn.Module):
    def __init__(self, widths=(64, 32, 48, 10)):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = torch.relu(x) if i < len(self.layers) - 1 else x
        return x


@pytest.mark.parametrize(
    ("compute", "int4", "int8"),
    [
        ("kernel", kernels.Int4Linear, kernels.Int8Linear),
        ("dequantize", kernels.StoredLinear, kernels.StoredLinear),
    ],
)
def test_kernels_follow_bits_and_outputs_match(compute, int4, int8):
    # layer 0: 4 bits, [32, 64] int4-capable; layer 1: 6 bits -> int8; layer 2: 12 bits -> float
    model = quantized(Mlp(), {"layers.0": 4, "layers.1": 6, "layers.2": 12})
    x = torch.randn(5, 7, 64)
    with torch.no_grad():
        expected = model(x)
        fast = deploy(model, "torch", config=DeployConfig(compute=compute))
        got = fast(x)
    suffix = "" if compute == "kernel" else "-storage"
    kinds = {r.name: r.kernel for r in fast.deploy_report.layers}
    assert kinds == {"layers.0": "int4" + suffix, "layers.1": "int8" + suffix, "layers.2": "float"}
    assert isinstance(fast.layers[0], int4) and isinstance(fast.layers[1], int8)
    assert close(got, expected)
    # the source model is untouched and still quantized
    assert quant.weight_quantizers(model) and isinstance(model.layers[0], nn.Linear)


def test_rounding_to_kernel_width_is_reported():
    # 3 bits runs on the int4 kernel (1 bit per weight more); 5 and mixed 2/7 on int8
    model = quantized(Mlp(), {"layers.0": 3, "layers.1": [2.0] * 24 + [7.0] * 24, "layers.2": 5})
    fast = deploy(model, "torch")
    rows = {r.name: r for r in fast.deploy_report.layers}
    assert rows["layers.0"].kernel == "int4-storage"
    assert rows["layers.0"].rounding_bits == 1 * 32 * 64
    assert rows["layers.1"].learned_bits == {2: 24, 7: 24}
    assert rows["layers.1"].rounding_bits == (6 * 24 + 1 * 24) * 32
    assert rows["layers.2"].rounding_bits == 3 * 10 * 48
    assert fast.deploy_report.rounding_bits == sum(r.rounding_bits for r in rows.values())
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert close(fast(x), model(x))


def test_int4_kernel_needs_its_shapes():
    # [10, 48]: out not a multiple of 16 -> int8 under auto, an error when int4 is demanded
    model = quantized(Mlp((48, 10)), {"layers.0": 4})
    kernel = DeployConfig(compute="kernel")
    assert deploy(model, config=kernel).deploy_report.kernels() == {"int8": 1}
    with pytest.raises(ValueError, match="int4 kernel does not take"):
        deploy(model, config=DeployConfig(weights="int4", compute="kernel"))
    # stored codes take any shape (an odd count of int4 codes included)
    assert deploy(model).deploy_report.kernels() == {"int4-storage": 1}
    assert deploy(model, config=DeployConfig(weights="float")).deploy_report.kernels() == {
        "float": 1
    }


@pytest.mark.parametrize("compute", ["kernel", "dequantize"])
def test_weight_memory_follows_kernel_widths(compute):
    model = quantized(Mlp((256, 128, 64)), {"layers.0": 4, "layers.1": 8})
    fast = deploy(model, config=DeployConfig(compute=compute))
    report = fast.deploy_report
    assert sorted(report.kernels()) == sorted(
        f"int{b}" + ("" if compute == "kernel" else "-storage") for b in (4, 8)
    )
    weights = 128 * 256 // 2 + 128 * 64  # int4 packed two per byte, int8 one byte
    # plus float32 scales and biases (the int4 kernel keeps a scale and a zero per row)
    extras = 128 * (2 if compute == "kernel" else 1) * 4 + 128 * 4 + 64 * 4 + 64 * 4
    assert report.weight_bytes == weight_memory_bytes(fast) == weights + extras
    assert report.float_bytes == 4 * (256 * 128 + 128 + 128 * 64 + 64)
    assert report.weight_bytes < report.float_bytes / 5


def test_convolutions_and_embeddings_hold_int8_codes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 16)
            self.conv = nn.Conv1d(16, 8, 3, padding=1, groups=2)
            self.deconv = nn.ConvTranspose1d(8, 4, 3)
            self.head = nn.Linear(4 * 10, 16)

        def forward(self, index):
            h = self.embed(index).transpose(1, 2)
            h = self.deconv(torch.relu(self.conv(h)))
            return self.head(h.flatten(1))

    torch.manual_seed(0)
    model = Net()
    quant.prepare(model, init_bits=8, per_channel=True, embeddings=True)
    for q in quant.weight_quantizers(model).values():
        q.set_bits(5.0)
    index = torch.randint(0, 20, (3, 8))
    with torch.no_grad():
        expected = model(index)
        fast = deploy(model)
        got = fast(index)
    kinds = {r.name: r.kernel for r in fast.deploy_report.layers}
    assert set(kinds) == {"embed", "conv", "deconv", "head"}
    assert set(kinds.values()) == {"int8-storage"}
    assert fast.conv.conv.weight is None and fast.conv.weight_codes.codes.dtype == torch.int8
    assert close(got, expected)


def test_input_quantizers_are_kept():
    model = quantized(Mlp(), {"layers.0": 4, "layers.1": 4, "layers.2": 4}, activations=True)
    for q in quant.input_quantizers(model).values():
        q.set_bits(6.0)
    x = torch.randn(16, 64)
    with torch.no_grad():
        expected = model(x)
        weight_only = deploy(model, config=DeployConfig(activations=None))
        assert isinstance(weight_only.layers[0].input_quantizer, quant.Quantizer)
        assert close(weight_only(x), expected)
        dynamic = deploy(model, config=DeployConfig(activations="int8"))
    assert not hasattr(dynamic.layers[0], "input_quantizer")  # the kernel quantizes its inputs


def test_layers_trained_with_quantized_inputs_get_int8_activations_by_default():
    model = quantized(Mlp(), {"layers.0": 4, "layers.1": 4, "layers.2": 4}, activations=True)
    qs = quant.input_quantizers(model)
    qs["layers.0"].set_bits(8.0)
    qs["layers.1"].set_bits(12.0)  # wider than int8: stays a fake-quantized float input
    qs["layers.2"].set_bits(6.0)
    fast = deploy(model)
    kinds = {r.name: r.kernel for r in fast.deploy_report.layers}
    assert kinds == {
        "layers.0": "int8-dynamic",
        "layers.1": "int4-storage",
        "layers.2": "int8-dynamic",
    }
    assert isinstance(fast.layers[1].input_quantizer, quant.Quantizer)
    assert not hasattr(fast.layers[2], "input_quantizer")


def test_dynamic_int8_activations_are_close_to_weight_only():
    model = quantized(Mlp(), {"layers.0": 4, "layers.1": 5, "layers.2": 8})
    x = torch.randn(16, 64)
    with torch.no_grad():
        dynamic = deploy(model, config=DeployConfig(activations="int8"))
        got, expected = dynamic(x), model(x)
    assert dynamic.deploy_report.kernels() == {"int8-dynamic": 3}
    # int8 activations (quantized per call) against float ones: close, not exact
    assert close(got, expected, tol=0.05) and not close(got, expected, tol=1e-6)


def test_model_without_quantizers_is_refused():
    with pytest.raises(ValueError, match="no weight quantizers"):
        deploy(Mlp())
    with pytest.raises(ValueError, match="backend"):
        deploy(quantized(Mlp(), {}), backend="tflite")
    with pytest.raises(geta.ArtifactError, match="not an artifact"):
        deploy("/nonexistent/artifact")
