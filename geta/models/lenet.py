"""LeNet-5 and LeNet-300-100 for 28x28 single-channel images (MNIST, Fashion-MNIST)."""

from __future__ import annotations

from torch import nn

from geta.models.registry import image_inputs, register_model

__all__ = ["lenet5", "lenet5_caffe", "lenet300_100"]


@register_model("lenet5", image_inputs(1, 28), tags=("cnn", "zoo"))
def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 in LeCun's layout: 6-16 conv, 120-84 fc, 61.5k conv/linear weights.

    The compression papers' "LeNet-5" is the larger :func:`lenet5_caffe`.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@register_model("lenet5_caffe", image_inputs(1, 28), tags=("cnn", "zoo"))
def lenet5_caffe(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 as Caffe's MNIST example defines it: 20-50 conv, one 500-unit fc, 430.5k
    conv/linear weights.

    This is the network Deep Compression (431K weights), Yang et al. (2020) and GETA report
    their LeNet-5 ratios on; a ratio is relative to the model's own size, so compare their
    numbers with this model, not with the 7x smaller :func:`lenet5`.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )


@register_model("lenet300_100", image_inputs(1, 28), tags=("mlp", "zoo"))
def lenet300_100(num_classes: int = 10, in_features: int = 784) -> nn.Module:
    """The fully connected LeNet-300-100."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )
