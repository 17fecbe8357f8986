"""Compressing on a GPU: every mode trains, meets its budget, finalizes to the zeroed model's
outputs and exports an artifact that loads back on the CPU (skipped where no CUDA device
exists, as on CI)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import geta
from geta.models import example_inputs, get_model
from tests.hf.families import compress_llama
from tests.optim.conftest import Blobs, mlp

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

MODES = {  # name: (mode, budget, ADMM settings)
    "geta": ("geta", "20x", geta.AdmmConfig()),
    "admm": ("admm", "20x", geta.AdmmConfig(update_every=10)),
    "admm-structured": ("admm", "20x", geta.AdmmConfig(update_every=10, granularity="group")),
    "admm-binary": (
        "admm-progressive",
        None,
        geta.AdmmConfig(update_every=10, targets=geta.LayerTarget.binary()),
    ),
}


@pytest.mark.parametrize("name", MODES)
def test_every_mode_compresses_on_the_gpu(name, tmp_path):
    blobs = Blobs()
    model = mlp().cuda()
    mode, budget, admm = MODES[name]
    config = geta.CompressorConfig(admm=admm)
    c = geta.Compressor(model, (torch.randn(2, 16, device="cuda"),), budget, mode, config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=120)
    for _ in range(120):
        x, y = blobs.batch()
        F.cross_entropy(model(x.cuda()), y.cuda()).backward()
        opt.step()
        opt.zero_grad()
    assert all(p.is_cuda for p in model.parameters())
    x = blobs.batch(256)[0].cuda()
    with torch.no_grad():
        zeroed = model(x)
    c.finalize()
    report = c.report()
    assert report.within_budget and report.ratio >= (20 if budget else 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed, rtol=1e-4, atol=1e-4)
    loaded = geta.export.load(c.export(tmp_path / "art"), mlp)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.cpu()), zeroed.cpu(), rtol=1e-4, atol=1e-4)


def test_conv_net_compresses_on_the_gpu():
    model = get_model("resnet20").cuda()
    args = tuple(a.cuda() for a in example_inputs("resnet20")[0])
    c = geta.Compressor(copy.deepcopy(model), args, "30x")
    opt = c.optimizer(base="sgd", lr=0.01, momentum=0.9, total_steps=20)
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(20):
        x = torch.randn(8, *args[0].shape[1:], device="cuda", generator=g)
        y = torch.randint(0, 10, (8,), device="cuda", generator=g)
        F.cross_entropy(c.model(x), y).backward()
        opt.step()
        opt.zero_grad()
    c.model.eval()
    with torch.no_grad():
        zeroed = c.model(args[0])
    c.finalize()
    assert c.report().within_budget
    with torch.no_grad():
        torch.testing.assert_close(c.model(args[0]), zeroed, rtol=1e-4, atol=1e-4)


def test_hf_decoder_compresses_on_the_gpu(tmp_path):
    model, inputs, c, zeroed = compress_llama("4x", steps=20, device="cuda")
    c.finalize()
    assert c.report().within_budget
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, zeroed, rtol=1e-4, atol=1e-4)
    geta.hf.save_pretrained(model, tmp_path / "small")
    loaded = geta.hf.from_pretrained(tmp_path / "small")
    cpu_inputs = {k: v.cpu() for k, v in inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**cpu_inputs).logits, zeroed.cpu(), rtol=1e-4, atol=1e-4)
