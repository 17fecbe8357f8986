"""ViT attention heads outside transformers: timm's ``Attention`` reshapes its fused qkv by
``self.num_heads`` and its output by ``self.attn_dim``, which the trial prune rewrites (no
adapter); torchvision's ``nn.MultiheadAttention`` cannot run narrower than the model, so its
heads stay whole and its MLPs prune."""

import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

import geta
from geta.export import load, save
from geta.graph.equivalence import check_prune_equivalence, random_plan

X = torch.randn(2, 3, 16, 16)


def timm_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return TimmViT(
        img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=3, mlp_ratio=1.0, num_classes=5
    ).eval()


def test_timm_heads_prune_through_rewritten_sizes(tmp_path):
    model = timm_vit()
    graph = geta.trace(model, (X,))
    heads = [g for g in graph.groups if g.kind == "head"]
    assert [g.size for g in heads] == [3, 3]
    assert [(r.module, r.attr) for r in graph.rewrites_of(heads[1])] == [
        ("blocks.1.attn", "num_heads"),
        ("blocks.1.attn", "attn_dim"),
    ]
    plan = random_plan(graph, fraction=0.4, seed=1)
    result = check_prune_equivalence(model, graph, (X,), plan=plan)
    assert result.max_abs_diff <= result.tolerance
    assert result.params_after < result.params_before
    kept = [3 - len(plan.get(g.id, [])) for g in heads]
    assert [b.attn.num_heads for b in model.blocks] == kept
    assert [b.attn.attn_dim for b in model.blocks] == [16 * k for k in kept]

    with torch.no_grad():
        expected = model(X)
    save(model, tmp_path / "vit")
    loaded = load(tmp_path / "vit", timm_vit())  # the dense architecture, shrunk on load
    with torch.no_grad():
        assert torch.equal(loaded(X), expected)

    model.train()
    loss = model(X).square().mean()
    loss.backward()
    assert torch.isfinite(loss) and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_torchvision_heads_stay_whole_and_the_mlp_prunes():
    torch.manual_seed(0)
    model = TorchvisionViT(
        image_size=16, patch_size=4, num_layers=2, num_heads=3, hidden_dim=48, mlp_dim=40,
        num_classes=5,
    ).eval()  # fmt: skip
    graph = geta.trace(model, (X,))
    assert [(g.kind, g.size) for g in graph.groups] == [("channel", 40)] * 2
    assert any(b.size == 3 for b in graph.blocked)  # the heads: found, and blocked
    result = check_prune_equivalence(model, graph, (X,), plan=random_plan(graph, 0.4, seed=1))
    assert result.max_abs_diff <= result.tolerance
