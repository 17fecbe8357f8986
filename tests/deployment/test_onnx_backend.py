"""The ONNX backend: integer weights in the file (MatMulNBits for linear layers, int8 QDQ for
the others), outputs from onnxruntime equal to the fake-quantized model."""

import onnx
import torch
from torch import nn

from geta.deployment import DeployConfig, deploy
from tests.deployment.test_torch_backend import close, quantized


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc1 = nn.Linear(8 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 20)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def test_onnx_matches_fake_quantized_model(tmp_path):
    model = quantized(ConvNet(), {"conv": 6, "fc1": 3, "fc2": 8})
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    deployed = deploy(model, "onnx", example_inputs=(x,), out=tmp_path / "m.onnx")
    assert close(deployed(x), expected)
    kinds = {r.name: r.kernel for r in deployed.deploy_report.layers}
    assert kinds == {"conv": "int8-storage", "fc1": "int4", "fc2": "int8"}
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 2 and "DequantizeLinear" in ops and "Gemm" not in ops
    # no float copy of a quantized weight is left in the file
    names = {t.name for t in graph.initializer}
    assert not names & {"conv.weight", "fc1.weight", "fc2.weight"}
    assert deployed.deploy_report.weight_bytes < deployed.deploy_report.float_bytes / 3


def test_onnx_float_weights_on_request(tmp_path):
    model = quantized(ConvNet(), {"conv": 4, "fc1": 4, "fc2": 4})
    x = torch.randn(2, 1, 8, 8)
    deployed = deploy(
        model,
        "onnx",
        config=DeployConfig(weights="float"),
        example_inputs=(x,),
        out=tmp_path / "f.onnx",
    )
    assert deployed.deploy_report.kernels() == {"float": 3}
    with torch.no_grad():
        assert close(deployed(x), model(x))
