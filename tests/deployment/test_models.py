"""Deployment of pruned, quantized zoo models and of artifacts: the deployed model's outputs
equal the fake-quantized model's (weight-only kernels), on every backend."""

import pytest
import torch

import geta
import geta.quant as quant
from geta.deployment import deploy
from geta.graph.equivalence import random_plan
from geta.models import example_inputs, get_model
from tests.deployment.test_torch_backend import close


def compressed(name: str, bits: float) -> tuple[torch.nn.Module, tuple]:
    """A zoo model prepared per channel at ``bits``, 30% of its groups' units pruned."""
    torch.manual_seed(0)
    model = get_model(name).eval()
    args, kwargs = example_inputs(name)
    quant.prepare(model, init_bits=bits, per_channel=True)
    graph = geta.trace(model, args, kwargs)
    geta.prune(model, graph, random_plan(graph, 0.3))
    return model, args


@pytest.mark.parametrize(("name", "bits"), [("lenet5", 4), ("resnet20", 3), ("vgg7_bn", 6)])
def test_torch_backend_on_zoo_models(name, bits):
    model, args = compressed(name, bits)
    with torch.no_grad():
        expected = model(*args)
        fast = deploy(model)
        assert close(fast(*args), expected)
    report = fast.deploy_report
    assert len(report.layers) == len(quant.weight_quantizers(model))
    assert "float" not in report.kernels()
    assert report.weight_bytes < report.float_bytes / 3


def test_onnx_backend_on_resnet20(tmp_path):
    model, args = compressed("resnet20", 4)
    with torch.no_grad():
        expected = model(*args)
    deployed = deploy(model, "onnx", example_inputs=args, out=tmp_path / "r20.onnx")
    assert close(deployed(*args), expected)
    convs = len(quant.weight_quantizers(model)) - 1  # every layer but the classifier
    assert deployed.deploy_report.kernels() == {"int8-storage": convs, "int4": 1}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_deploy_an_artifact(tmp_path, backend):
    from geta.models import lenet5

    model, args = compressed("lenet5", 4)
    for q in quant.weight_quantizers(model).values():  # mixed precision within layers
        bits = torch.tensor([2.0, 3.0, 4.0, 6.0]).repeat(q.d.numel())[: q.d.numel()]
        q.set_bits(bits)
    with torch.no_grad():
        expected = model(*args)
    geta.export.save(model, tmp_path / "a")
    from_model = deploy(model, backend, example_inputs=args)
    deployed = deploy(tmp_path / "a", backend, model=lenet5, example_inputs=args)
    with torch.no_grad():
        assert close(deployed(*args), expected)
    report = deployed.deploy_report
    assert report.file_bytes == geta.deployment.report.artifact_bytes(tmp_path / "a")
    # the artifact's channel histograms give the same report as the live quantizers
    ours = {r.name: (r.kernel, r.learned_bits, r.rounding_bits) for r in report.layers}
    live = {
        r.name: (r.kernel, r.learned_bits, r.rounding_bits) for r in from_model.deploy_report.layers
    }
    assert ours == live


def test_save_with_a_program_leaves_the_model_usable(tmp_path):
    model, args = compressed("lenet5", 4)
    geta.export.save(model, tmp_path / "a", example_inputs=args)
    with torch.no_grad():
        model(*args)  # the parametrized weights are still there
    assert quant.weight_quantizers(model)
