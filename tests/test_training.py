"""geta.training: the loop geta's own tools use (device placement, a custom loss)."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from geta.training import evaluate, fit, model_device


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


def test_loss_fn_replaces_the_cross_entropy_on_every_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    calls = []

    def loss_fn(m, x, y):
        calls.append(len(x))
        return 0.0 * F.cross_entropy(m(x), y)  # no gradient: the weights must not move

    before = model.weight.detach().clone()
    history = fit(model, data(), torch.optim.SGD(model.parameters(), lr=1.0), 2, loss_fn=loss_fn)
    assert calls == [16] * 8 and history.loss == [0.0] * 8
    assert torch.equal(model.weight, before)
    fit(model, data(), torch.optim.SGD(model.parameters(), lr=0.5), 3, progress=False)
    assert evaluate(model, data()) > 0.9


def test_model_device_is_where_the_parameters_are():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # nothing to look at
    meta = nn.Linear(2, 2, device="meta")
    assert model_device(meta) == torch.device("meta")
