"""The invariant on every model of geta.models: zero ~30% of every group, prune, same outputs."""

import pytest
import torch

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models import example_inputs, get_model, list_models

# Models where a zero producer slice gives an exactly zero channel downstream (ReLU/BN CNNs).
PRODUCER_ZERO_INVARIANT = [
    "lenet5",
    "lenet300_100",
    "resnet20",
    "vgg7_bn",
    "flatten_linear",
    "residual_chain",
]


@pytest.mark.parametrize("name", list_models())
def test_zeroed_then_pruned_matches(name):
    model = get_model(name).eval()
    args, kwargs = example_inputs(name)
    graph = geta.trace(model, args, kwargs)
    assert graph.groups, f"{name} has no prunable group"
    assert not graph.unsupported_ops
    result = check_prune_equivalence(model, graph, args, kwargs)
    assert result.max_abs_diff <= result.tolerance, result
    assert result.params_after < result.params_before
    # the pruned model is an ordinary module that traces again
    again = geta.trace(model, args, kwargs, validate=False)
    assert again.groups


@pytest.mark.parametrize("name", PRODUCER_ZERO_INVARIANT)
def test_zeroing_producers_alone_is_enough(name):
    model = get_model(name).eval()
    args, kwargs = example_inputs(name)
    graph = geta.trace(model, args, kwargs)
    result = check_prune_equivalence(model, graph, args, kwargs, producers_only=True)
    assert result.max_abs_diff <= result.tolerance, result


def test_producers_alone_is_not_enough_through_biased_layers():
    # with a non-zero bias after the zeroed producer, only zeroing consumers too is exact:
    # this guards the producers-only test above against passing vacuously
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 3)
    ).eval()
    x = torch.randn(5, 4)
    graph = geta.trace(model, x)
    result = check_prune_equivalence(model, graph, (x,), producers_only=True)
    assert result.max_abs_diff > result.tolerance
