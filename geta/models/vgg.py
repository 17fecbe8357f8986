"""VGG7 with batch norm, the CIFAR model GETA reports (128-128-256-256-512-512, fc 1024)."""

from __future__ import annotations

from torch import nn

from geta.models.registry import image_inputs, register_model

__all__ = ["vgg7_bn"]


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@register_model("vgg7_bn", image_inputs(3, 32), tags=("cnn", "zoo"))
def vgg7_bn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    feat = image_size // 8
    return nn.Sequential(
        *_conv_bn(in_channels, 128),
        *_conv_bn(128, 128),
        nn.MaxPool2d(2),
        *_conv_bn(128, 256),
        *_conv_bn(256, 256),
        nn.MaxPool2d(2),
        *_conv_bn(256, 512),
        *_conv_bn(512, 512),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512 * feat * feat, 1024),
        nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    )
