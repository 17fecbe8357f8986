"""Compressor settings that shape the search space."""

import pytest
import torch
import torchvision

import geta
from geta.errors import ConfigError

X = torch.randn(2, 3, 32, 32)


def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_kept_layers_keep_their_output_channels_and_nothing_else_changes():
    free = geta.Compressor(resnet(), (X,), "20x")
    config = geta.CompressorConfig(keep_layers=("conv1", "layer2.0.conv1"))
    c = geta.Compressor(resnet(), (X,), "20x", config=config)
    held = [b for b in c.graph.blocked if "keep_layers" in b.reason]
    assert len(held) == 2 and len(c.graph.groups) == len(free.graph.groups) - 2
    producers = {m.name for g in c.graph.groups for m in g.members if m.role == "producer"}
    assert not any(n.startswith(("conv1.", "layer2.0.conv1.")) for n in producers)
    freed = {m.name for g in free.graph.groups for m in g.members if m.role == "producer"}
    assert any(n.startswith("layer2.0.conv1.") for n in freed)
    opt = c.optimizer(lr=0.01, total_steps=4)
    for _ in range(4):
        c.model(X).square().mean().backward()
        opt.step()
        opt.zero_grad()
    small = c.finalize()
    assert small.conv1.out_channels == 64 and small.layer2[0].conv1.out_channels == 128
    assert c.report().within_budget


def test_an_unknown_kept_layer_is_a_config_error():
    config = geta.CompressorConfig(keep_layers=("conv9",))
    with pytest.raises(ConfigError, match="no module named 'conv9'"):
        geta.Compressor(resnet(), (X,), "20x", config=config)
