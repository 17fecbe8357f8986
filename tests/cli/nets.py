"""Small models for the command-line tests, loaded as ``tests.cli.nets:NAME``."""

from torch import nn


def rgb_net() -> nn.Module:
    """A small CNN for 3-channel images and 10 classes (like a torchvision classifier)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def scalar_net() -> nn.Module:
    """Not a classifier: one output per image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1))
