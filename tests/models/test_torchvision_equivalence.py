"""The invariant on every torchvision classification model (random weights, eval mode)."""

import pytest
import torch
import torchvision

import geta
from geta.graph.equivalence import check_prune_equivalence

MODELS = torchvision.models.list_models(module=torchvision.models)

# Smaller inputs keep the suite fast; the architecture is unchanged.
# (ViT: 4x4 patches; MaxViT needs its 224 default; Inception needs >= 75.)
KWARGS = {
    name: {"image_size": 4 * int(name.rsplit("_", 1)[1])}
    for name in MODELS
    if name.startswith("vit_")
}
SIZES = {name: kw["image_size"] for name, kw in KWARGS.items()}
SIZES.update({"inception_v3": 96, "maxvit_t": 224})


def input_size(name: str) -> int:
    return SIZES.get(name, 64)


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_prunes_exactly(name):
    model = torchvision.models.get_model(name, weights=None, **KWARGS.get(name, {})).eval()
    x = torch.randn(1, 3, input_size(name), input_size(name))
    graph = geta.trace(model, x)
    assert graph.groups, f"{name}: no prunable group"
    result = check_prune_equivalence(model, graph, (x,))
    assert result.max_abs_diff <= result.tolerance, result
    assert result.params_after < result.params_before
