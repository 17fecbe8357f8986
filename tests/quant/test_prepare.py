import pytest
import torch
from torch import nn

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models import example_inputs, get_model, list_models
from geta.models.torchvision_zoo import build_small, small_input
from geta.quant import Quantizer, bits, input_quantizers, prepare, quantizers, weight_quantizers


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "gqa_block", "conv_decoder"])
def test_sixteen_bits_stays_close_to_float(name):
    model = get_model(name).eval()
    args, _ = example_inputs(name)
    reference = model(*args)
    prepare(model, init_bits=16, embeddings=True)
    out = model(*args)
    assert (out - reference).abs().max() <= 1e-3 * reference.abs().max()


def test_bits_reports_every_quantized_layer():
    model = prepare(get_model("lenet5"), init_bits=6, activations=True)
    b = bits(model)
    layers = {"0", "3", "7", "9", "11"}
    assert set(b) == layers | {f"{n}:input" for n in layers}
    assert all(abs(v - 6) < 1e-4 for v in b.values())


def test_quantizers_lists_weight_and_input_quantizers_once_each():
    model = prepare(get_model("lenet5"), init_bits=6, activations=True)
    listed = quantizers(model)
    expected = [*weight_quantizers(model).values(), *input_quantizers(model).values()]
    assert len(listed) == len(expected) == 10
    assert {id(q) for q in listed} == {id(q) for q in expected}


def test_layer_kinds_come_from_a_registry_not_names():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))
    prepare(model)
    assert set(weight_quantizers(model)) == {"0", "3"}
    assert isinstance(model[0].parametrizations.weight[0], Quantizer)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("name", ["resnet20", "gqa_block", "grouped_depthwise", "lenet5"])
def test_prepared_model_has_the_float_groups_and_prunes_exactly(name, per_channel):
    float_model = get_model(name).eval()
    args, kwargs = example_inputs(name)
    float_graph = geta.trace(float_model, args, kwargs)
    model = prepare(get_model(name).eval(), init_bits=8, per_channel=per_channel)
    graph = geta.trace(model, args, kwargs)
    assert [(g.kind, g.size) for g in graph.groups] == [
        (g.kind, g.size) for g in float_graph.groups
    ]
    for g in graph.groups:
        quantizer_members = [m for m in g.members if m.role == "quantizer"]
        assert bool(quantizer_members) == per_channel
        assert bool(g.attached) != per_channel
    result = check_prune_equivalence(model, graph, args, kwargs)
    assert result.max_abs_diff <= result.tolerance
    for q in weight_quantizers(model).values():  # per-channel quantizers shrank with their channels
        layer_channels = q.d.numel()
        assert layer_channels == 1 or torch.isfinite(q.bits()).all()


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_prepared_zeroed_pruned(name):
    model = prepare(get_model(name).eval(), init_bits=6, per_channel=True, embeddings=True)
    args, kwargs = example_inputs(name)
    graph = geta.trace(model, args, kwargs)
    assert graph.groups and not graph.unsupported_ops
    result = check_prune_equivalence(model, graph, args, kwargs)
    assert result.max_abs_diff <= result.tolerance


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16", "densenet121"])
def test_torchvision_models_prepared_zeroed_pruned(name):
    model = prepare(build_small(name), init_bits=8, per_channel=True)
    x = small_input(name)
    graph = geta.trace(model, x)
    float_graph = geta.trace(build_small(name), x)
    assert [g.size for g in graph.groups] == [g.size for g in float_graph.groups]
    result = check_prune_equivalence(model, graph, (x,))
    assert result.max_abs_diff <= result.tolerance


def test_pruned_prepared_convs_report_their_new_sizes():
    """Bias-free convs own their weight only through the parametrization; their
    in/out_channels must still follow the pruned shapes."""
    model = prepare(get_model("resnet20").eval(), init_bits=8)
    args, kwargs = example_inputs("resnet20")
    graph = geta.trace(model, args, kwargs)
    geta.prune(model, graph, {g.id: [0] for g in graph.groups})
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            w = module.weight
            assert (module.out_channels, module.in_channels) == (w.shape[0], w.shape[1])
    assert model(*args).shape[-1] == 10
