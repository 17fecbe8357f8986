"""geta.hf.distill: zero at the teacher, gradients to the student only, Hinton's temperature
scaling, padding ignored, the task loss mixed in by alpha."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers as T

import geta
from geta.hf.distill import DistillationLoss, hidden_loss, logits_kl, make_teacher, mean_pool
from tests.hf.families import SIZES, TEXT


def tiny_bert(head: bool = True):
    config = T.BertConfig(**SIZES, **TEXT, num_labels=3)
    return T.BertForSequenceClassification(config) if head else T.BertModel(config)


def inputs(labels: bool = False) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (4, 8))
    mask = torch.ones(4, 8, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if labels:
        out["labels"] = torch.tensor([0, 1, 2, 1])
    return out


def perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_zero_when_the_student_is_the_teacher(kind):
    model = tiny_bert().eval()
    kd = DistillationLoss(make_teacher(model), hidden=kind, embedding=kind)
    loss = kd(model, inputs())
    assert set(kd.last) == {"logits", "hidden", "embedding", "loss"}
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_only_the_student():
    model = tiny_bert().train()
    teacher = make_teacher(model)
    perturbed(model)
    kd = DistillationLoss(teacher, hidden="mse", embedding="cosine")
    loss = kd(model, inputs())
    assert float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)


def test_make_teacher_is_an_independent_frozen_copy():
    model = tiny_bert()
    teacher = make_teacher(model)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    geta.quant.prepare(model, init_bits=4)  # what Compressor does to the student, in place
    perturbed(model)
    assert not any(hasattr(m, "parametrizations") for m in teacher.modules())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])


def test_logits_kl_is_t_squared_times_the_softened_kl():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    for temp in (1.0, 2.0, 4.0):
        expected = F.kl_div(
            F.log_softmax(s / temp, -1), F.softmax(t / temp, -1), reduction="batchmean"
        )
        torch.testing.assert_close(logits_kl(s, t, temp), temp**2 * expected)
    assert float(logits_kl(s, s, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(logits_kl(s, t, 3.0)) > 0


def test_high_temperature_gradients_match_logit_matching():
    """Hinton et al.: with T^2 scaling, the gradient tends to (s - t) / N (zero-mean logits)
    as T grows, so its scale does not depend on T."""
    n = 10
    s = torch.randn(3, n) * 0.5
    t = torch.randn(3, n) * 0.5
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    grads = {}
    for temp in (20.0, 80.0):
        x = s.clone().requires_grad_(True)
        logits_kl(x, t, temp).backward()
        grads[temp] = x.grad * s.shape[0]  # undo the mean over samples
    limit = (s - t) / n
    torch.testing.assert_close(grads[80.0], limit, rtol=0.02, atol=1e-4)
    ratio = grads[20.0].norm() / grads[80.0].norm()
    assert float(ratio) == pytest.approx(1.0, abs=0.05)


def test_padding_is_ignored():
    h_t = torch.randn(2, 5, 4)
    h_s = h_t.clone()
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, 3:] = 0
    h_s[0, 3:] += 10.0  # only padded positions differ
    for kind in ("mse", "cosine"):
        assert float(hidden_loss(h_s, h_t, kind, mask)) == pytest.approx(0.0, abs=1e-6)
        assert float(hidden_loss(h_s, h_t, kind)) > 0.1
    torch.testing.assert_close(mean_pool(h_s, mask), mean_pool(h_t, mask))
    torch.testing.assert_close(mean_pool(h_t, mask)[0], h_t[0, :3].mean(0))


def test_labels_mix_the_task_loss_by_alpha():
    model = tiny_bert()
    teacher = make_teacher(model)
    perturbed(model).eval()
    batch = inputs(labels=True)
    kd = DistillationLoss(teacher, alpha=0.3, temperature=2.0)
    loss, out = kd(model, batch, return_outputs=True)
    with torch.no_grad():
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = 0.7 * F.cross_entropy(out.logits, batch["labels"]) + 0.3 * logits_kl(
        out.logits, t_logits, 2.0
    )
    torch.testing.assert_close(loss, expected)


def test_plain_model_outputs_count_as_logits():
    model = torch.nn.Sequential(torch.nn.Linear(6, 4))
    teacher = make_teacher(model)
    perturbed(model)
    x = torch.randn(5, 6)
    kd = DistillationLoss(teacher, temperature=1.0)
    torch.testing.assert_close(kd(model, x), logits_kl(model(x), teacher(x), 1.0))


def test_labels_give_plain_logit_models_their_cross_entropy():
    model = torch.nn.Sequential(torch.nn.Linear(6, 4))
    teacher = make_teacher(model)
    perturbed(model)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 1])
    kd = DistillationLoss(teacher, alpha=0.3, temperature=4.0)
    expected = 0.7 * F.cross_entropy(model(x), y) + 0.3 * logits_kl(model(x), teacher(x), 4.0)
    torch.testing.assert_close(kd(model, x, labels=y), expected)
    assert kd.last["task"] == pytest.approx(F.cross_entropy(model(x), y).item())


def test_bad_settings_and_missing_terms_raise():
    teacher = make_teacher(tiny_bert(head=False))
    with pytest.raises(ValueError, match="nothing to distil"):
        DistillationLoss(teacher, logits=0.0)
    with pytest.raises(ValueError, match="unknown hidden distance"):
        DistillationLoss(teacher, hidden="l1")
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(teacher, temperature=0.0)
    with pytest.raises(ValueError, match="no logits"):
        DistillationLoss(teacher)(tiny_bert(head=False), inputs())
    with pytest.raises(ValueError, match="same hidden size"):
        hidden_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
