import io

import pytest
import torch
from torch import nn

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models import example_inputs, get_model


def traced(name):
    model = get_model(name).eval()
    args, kwargs = example_inputs(name)
    return model, geta.trace(model, args, kwargs), args


def test_bad_group_id():
    model, graph, _ = traced("lenet5")
    with pytest.raises(geta.PruneError, match="not a prunable group"):
        geta.prune(model, graph, {99: [0]})


def test_index_out_of_range_names_the_group():
    model, graph, _ = traced("lenet5")
    with pytest.raises(geta.PruneError, match="out of range: the group has 6 units"):
        geta.prune(model, graph, {0: [6]})


def test_removing_every_unit_is_refused():
    model, graph, _ = traced("lenet5")
    with pytest.raises(geta.PruneError, match="keep at least one"):
        geta.prune(model, graph, {0: list(range(6))})


def test_repeated_index_is_refused():
    model, graph, _ = traced("lenet5")
    with pytest.raises(geta.PruneError, match="repeats"):
        geta.zero_groups(model, graph, {0: [1, 1]})


def test_graph_is_stale_after_prune():
    model, graph, _ = traced("lenet5")
    geta.prune(model, graph, {0: [1]})
    with pytest.raises(geta.PruneError, match="trace the pruned model again"):
        geta.prune(model, graph, {0: [2]})


def test_module_attributes_follow_the_new_shapes():
    model, graph, args = traced("conv_decoder")
    plan = {g.id: [0] for g in graph.groups}
    geta.prune(model, graph, plan)
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            w = m.weight.shape
            if m.transposed:
                assert (m.in_channels, m.out_channels) == (w[0], w[1] * m.groups)
            else:
                assert (m.out_channels, m.in_channels) == (w[0], w[1] * m.groups)
    assert model.norm.num_channels == model.norm.weight.shape[0] == model.enc.out_channels
    assert model.norm.num_channels % model.norm.num_groups == 0
    assert model.norm.num_groups < 4 or model.dec.groups < 2  # some group count changed
    model(*args)


def test_grouped_conv_groups_attribute_shrinks_with_whole_groups():
    model, graph, args = traced("grouped_depthwise")
    group_axis = next(
        g for g in graph.groups if g.size == 4 and g.member("grouped.weight").width > 1
    )
    geta.prune(model, graph, {group_axis.id: [1]})
    assert model.grouped.groups == 3
    model(*args)


def test_pruned_model_trains_saves_and_reloads():
    model, graph, args = traced("resnet20")
    model.train()
    geta.prune(model, graph, geta.graph.equivalence.random_plan(graph))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(*args).square().mean()
    loss.backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    twin = get_model("resnet20")
    twin_graph = geta.trace(twin.eval(), args)
    geta.prune(twin, twin_graph, geta.graph.equivalence.random_plan(twin_graph))
    buffer.seek(0)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval()
    torch.testing.assert_close(twin(*args), model(*args))


def test_tied_weights_stay_tied():
    model, graph, args = traced("tied_lm")
    result = check_prune_equivalence(model, graph, args)
    assert result.max_abs_diff <= result.tolerance
    assert model.out.weight is model.embed.weight
    assert model.embed.weight.shape[1] < 16


def test_heads_group_spans_q_k_v_and_output_projection():
    model, graph, args = traced("gqa_block")
    heads = next(g for g in graph.groups if g.kind == "head")
    assert heads.size == 2  # key/value heads, each tied to its 4 query heads
    assert heads.member("q.weight").width == 4 * 4
    assert heads.member("k.weight").width == 4
    assert heads.member("o.weight").role == "consumer"
    geta.prune(model, graph, {heads.id: [0]})
    assert model.q.out_features == 16 and model.k.out_features == 4 and model.o.in_features == 16
    model(*args)


def test_zero_groups_only_touches_planned_slices():
    model, graph, _ = traced("lenet5")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    geta.zero_groups(model, graph, {1: [3]})
    assert torch.all(model[3].weight[3] == 0) and model[3].bias[3] == 0
    assert torch.all(model[7].weight[:, 75:100] == 0)  # channel 3 of 16 flattened over 5x5
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"3.weight", "3.bias", "7.weight"}
    assert torch.count_nonzero(model[7].weight[:, :75] == 0) == 0
