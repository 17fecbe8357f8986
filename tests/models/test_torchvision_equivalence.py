"""The invariant on every torchvision classification model (random weights, eval mode)."""

import pytest

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models.torchvision_zoo import build_small, classification_models, small_input


@pytest.mark.parametrize("name", classification_models())
def test_torchvision_model_prunes_exactly(name):
    model = build_small(name)
    x = small_input(name)
    graph = geta.trace(model, x)
    assert graph.groups, f"{name}: no prunable group"
    result = check_prune_equivalence(model, graph, (x,))
    assert result.max_abs_diff <= result.tolerance, result
    assert result.params_after < result.params_before
