"""The model zoo: paper models (LeNet-5, LeNet-300-100, ResNet-20/56, VGG7-BN) and small
"tricky" models for tests. ``get_model(name)`` builds one, ``example_inputs(name)`` gives
inputs for it."""

from geta.models import lenet, resnet_cifar, tricky, vgg
from geta.models.lenet import lenet5, lenet5_caffe, lenet300_100
from geta.models.registry import (
    ModelSpec,
    example_inputs,
    get_model,
    list_models,
    model_spec,
    register_model,
)
from geta.models.resnet_cifar import CifarResNet, resnet20, resnet56
from geta.models.vgg import vgg7_bn

__all__ = [
    "CifarResNet",
    "ModelSpec",
    "example_inputs",
    "get_model",
    "lenet",
    "lenet5",
    "lenet5_caffe",
    "lenet300_100",
    "list_models",
    "model_spec",
    "register_model",
    "resnet20",
    "resnet56",
    "resnet_cifar",
    "tricky",
    "vgg",
    "vgg7_bn",
]
