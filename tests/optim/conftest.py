"""A tiny classification task and model for the optimizer tests (no data files)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class Blobs:
    """Four Gaussian clusters in 16 dims: an MLP reaches ~100% quickly."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.centers = 2.0 * torch.randn(4, 16, generator=g)
        self.g = g

    def batch(self, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=self.g)
        return self.centers[y] + 0.7 * torch.randn(n, 16, generator=self.g), y


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4)
    )


@pytest.fixture
def blobs() -> Blobs:
    return Blobs()


def train(model, opt, blobs: Blobs, steps: int, on_step=None) -> None:
    """``steps`` cross-entropy steps on fresh blob batches; ``on_step()`` after each."""
    for _ in range(steps):
        x, y = blobs.batch()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if on_step:
            on_step()


def random_plan(policy, rng):
    """An AJPQ policy of random layer actions, as the agent's exploring episodes take."""
    plan = policy.start()
    for layer in policy.order:
        policy.decide(plan, layer, rng.random(2))
    return plan
