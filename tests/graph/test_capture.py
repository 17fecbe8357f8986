import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models import example_inputs, get_model


def test_trace_keeps_train_and_eval_mode():
    model = get_model("resnet20")
    model.train()
    model.layer1.eval()
    geta.trace(model, torch.randn(2, 3, 32, 32), validate=False)
    assert model.training and not model.layer1.training and model.layer2.training


def test_trace_on_meta_device_finds_the_same_groups():
    with torch.device("meta"):
        meta_model = get_model("resnet20").eval()
    meta_graph = geta.trace(meta_model, torch.randn(2, 3, 32, 32, device="meta"))
    cpu_graph = geta.trace(get_model("resnet20").eval(), torch.randn(2, 3, 32, 32))
    assert [g.size for g in meta_graph.groups] == [g.size for g in cpu_graph.groups]
    assert all(p.is_meta for p in meta_model.parameters())


def test_parameters_map_back_to_model_names():
    model = get_model("lenet5")
    graph = geta.trace(model, *example_inputs("lenet5")[0])
    names = {m.name for g in graph.groups for m in g.members}
    assert names <= dict(model.named_parameters()).keys()
    first = graph.groups[0]
    assert {(m.name, m.dim, m.role) for m in first.members} == {
        ("0.weight", 0, "producer"),
        ("0.bias", 0, "producer"),
        ("3.weight", 1, "consumer"),
    }


def test_buffers_are_members():
    model = get_model("resnet20").eval()
    graph = geta.trace(model, torch.randn(1, 3, 32, 32))
    names = {m.name for m in graph.groups[0].members}
    assert "bn1.running_mean" in names and "bn1.running_var" in names
    assert all(m.is_buffer for m in graph.groups[0].members if "running" in m.name)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # branches on a value
            return self.fc(x)
        return x


def test_untraceable_model_raises_trace_error_with_hint():
    with pytest.raises(geta.TraceError, match="hint:"):
        geta.trace(DataDependent(), torch.randn(2, 4))


def test_non_module_is_a_trace_error():
    with pytest.raises(geta.TraceError, match="nn.Module"):
        geta.trace(lambda x: x, torch.randn(2))


@torch.library.custom_op("geta_tests::mystery_mix", mutates_args=())
def mystery_mix(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1).clone()


@mystery_mix.register_fake
def _(x):
    return torch.empty_like(x)


class CustomOpNet(nn.Module):
    """fc1 feeds an op geta knows nothing about; fc2's hidden channels stay prunable."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 10)
        self.fc3 = nn.Linear(10, 3)

    def forward(self, x):
        h = mystery_mix(F.relu(self.fc1(x)))
        return self.fc3(F.relu(self.fc2(h)))


def test_unsupported_custom_op_is_blocked_and_reported():
    model = CustomOpNet().eval()
    x = torch.randn(3, 6)
    with pytest.warns(UserWarning, match="without a rule"):
        graph = geta.trace(model, x)
    assert [u.op for u in graph.unsupported_ops] == ["geta_tests.mystery_mix.default"]
    pruned_tensors = {m.name for g in graph.groups for m in g.members}
    assert "fc1.weight" not in pruned_tensors  # its channels are permuted by the unknown op
    assert {g.size for g in graph.groups} == {10}
    result = check_prune_equivalence(model, graph, (x,))
    assert result.max_abs_diff <= result.tolerance


def test_registering_a_rule_makes_the_op_prunable_through():
    from geta.graph.rules import base

    @torch.library.custom_op("geta_tests::scale2", mutates_args=())
    def scale2(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @scale2.register_fake
    def _(x):
        return torch.empty_like(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(scale2(self.fc1(x)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert geta.trace(Net(), torch.randn(2, 4)).groups == []
    geta.graph.register_rule(torch.ops.geta_tests.scale2)(geta.graph.rules.broadcast_rule)
    try:
        graph = geta.trace(Net(), torch.randn(2, 4))
        assert [g.size for g in graph.groups] == [8]
    finally:
        base._RULES.pop(torch.ops.geta_tests.scale2)


def test_summary_and_networkx():
    model = get_model("resnet20")
    graph = geta.trace(model, torch.randn(1, 3, 32, 32))
    table = graph.summary_table()
    assert "group" in table.splitlines()[0] and f"{len(graph.groups)} prunable groups" in table
    nxg = graph.to_networkx()
    conv_nodes = [n for n, d in nxg.nodes(data=True) if "conv2d" in d["op"]]
    assert len(conv_nodes) == 19
    grouped = [d for _, d in nxg.nodes(data=True) if d["groups"]]
    assert grouped and all(d["shape"] for d in grouped)
    for node in graph.program.graph.nodes:
        assert nxg.in_degree(node.name) == len(node.all_input_nodes)


def test_kwargs_and_dict_inputs():
    model = get_model("dict_input")
    args, _ = example_inputs("dict_input")
    graph = geta.trace(model, (), {"batch": args[0]})
    assert [g.size for g in graph.groups] == [8, 12]
