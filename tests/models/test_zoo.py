"""The zoo's paper models have the sizes the papers give for them."""

import pytest

from geta.models import get_model
from geta.quant.prepare import quantizable_layers


@pytest.mark.parametrize(
    "name, counted_weights",
    [
        ("lenet5", 61_470),  # LeCun's layout (61,706 with biases)
        ("lenet5_caffe", 430_500),  # Deep Compression's "431K" LeNet-5
        ("lenet300_100", 266_200),  # Deep Compression's "267K" LeNet-300-100
    ],
)
def test_counted_weights_match_the_papers(name, counted_weights):
    layers = quantizable_layers(get_model(name))
    assert sum(layer.weight.numel() for layer in layers) == counted_weights
