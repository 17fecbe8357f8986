"""geta inside transformers.Trainer: optimizer steps counted with gradient accumulation, the
budget met, zeros exact, finalize exact, checkpoints resume exactly and compressed models
reload; a two-process DDP launch (accelerate on gloo) keeps every rank identical."""

from __future__ import annotations

import copy
import multiprocessing
import os
import socket

import accelerate
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import transformers as T

import geta
from geta.hf.trainer import GetaCallback, GetaTrainer, with_geta
from tests.hf.families import SIZES, TEXT

SEQ = 12
CONFIG = geta.CompressorConfig(quantize_embeddings=True, bit_range=(4, 8))
BUDGET = "12x"  # 4 bits at the least: about half of the heads and FFN channels must go


def tiny_bert() -> T.BertForSequenceClassification:
    torch.manual_seed(0)
    return T.BertForSequenceClassification(T.BertConfig(**SIZES, **TEXT, num_labels=3))


def dataset(n: int = 48, labels: bool = True) -> list[dict[str, torch.Tensor]]:
    """Token sequences whose class is the first token mod 3; the last quarter of every other
    sequence is padding."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (n, SEQ), generator=g)
    rows = []
    for i in range(n):
        mask = torch.ones(SEQ, dtype=torch.long)
        if i % 2:
            mask[-SEQ // 4 :] = 0
        row = {"input_ids": ids[i], "attention_mask": mask}
        if labels:
            row["labels"] = ids[i, 0] % 3
        rows.append(row)
    return rows


def compressor(model) -> geta.Compressor:
    return geta.Compressor(
        model, (), BUDGET, config=CONFIG, example_kwargs=geta.hf.example_inputs(model)
    )


def args(out, **overrides) -> T.TrainingArguments:
    settings = dict(
        per_device_train_batch_size=4,
        learning_rate=2e-3,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1000,
        seed=0,
        data_seed=0,
    )
    return T.TrainingArguments(str(out), **{**settings, **overrides})


def batch(rows=None) -> dict[str, torch.Tensor]:
    rows = rows or dataset(8)
    return {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}


def outputs(model, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """48 samples, batch 4, 3 micro-batches per optimizer step, 3 epochs: 12 optimizer steps,
    gradient clipping on, a checkpoint at step 6; not finalized yet."""
    out = tmp_path_factory.mktemp("trainer")
    model = tiny_bert()
    c = compressor(model)
    run_args = args(
        out,
        num_train_epochs=3,
        gradient_accumulation_steps=3,
        max_grad_norm=0.5,
        save_strategy="steps",
        save_steps=6,
    )
    trainer = GetaTrainer(
        model=model, args=run_args, train_dataset=dataset(), compressor=c, finalize=False
    )
    trainer.train()
    return model, c, trainer, out


def test_one_optimizer_step_per_accumulated_batch(trained):
    _, c, trainer, _ = trained
    opt = c._optimizer
    assert isinstance(trainer.optimizer, accelerate.optimizer.AcceleratedOptimizer)
    assert trainer.optimizer.optimizer is opt
    assert trainer.state.max_steps == 12 and trainer.state.global_step == 12
    assert opt.schedule.total_steps == 12 and opt.step_count == 12
    # the Trainer's linear schedule ran on the shared param groups: the last lr is ~0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_budget_met_and_removed_groups_exactly_zero(trained):
    model, c, _, _ = trained
    opt = c._optimizer
    report = c.report()
    assert report.within_budget and report.ratio >= 12
    assert opt.zeroed.any()
    plan = c.problem.units.to_plan(opt.zeroed)
    zeroed_again = copy.deepcopy(model)
    geta.zero_groups(zeroed_again, c.graph, plan)
    before, after = state(model), state(zeroed_again)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_resume_from_a_checkpoint_gives_the_same_model(trained):
    model, _, _, out = trained
    again = tiny_bert()
    c = compressor(again)
    run_args = args(out / "resumed", num_train_epochs=3, gradient_accumulation_steps=3)
    run_args.max_grad_norm = 0.5
    trainer = GetaTrainer(
        model=again, args=run_args, train_dataset=dataset(), compressor=c, finalize=False
    )
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-6"))
    assert c._optimizer.step_count == 12
    expected, got = state(model), state(again)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_finalized_model_equals_zeroed_model_and_reloads(trained, tmp_path):
    model, c, trainer, _ = trained
    inputs = batch()
    zeroed = outputs(model, inputs)
    params = sum(p.numel() for p in model.parameters())
    callback = GetaCallback(c, save_dir=tmp_path / "small")
    callback.on_train_end(trainer.args, trainer.state, trainer.control)
    assert c.finalized and sum(p.numel() for p in model.parameters()) < params
    torch.testing.assert_close(outputs(model, inputs), zeroed, rtol=1e-5, atol=1e-5)
    assert c.report().within_budget and c.report().stage == "finalized"
    loaded = geta.hf.from_pretrained(tmp_path / "small")
    assert torch.equal(outputs(loaded, inputs), outputs(model, inputs))
    # the Trainer still evaluates the pruned model
    metrics = trainer.evaluate(dataset(16))
    assert np.isfinite(metrics["eval_loss"])


def test_distillation_trains_a_model_without_a_head(tmp_path):
    """A headless BertModel returns no loss: the Trainer trains it on the distillation loss
    alone (mean-pooled embeddings, cosine), and the teacher stays as it was."""
    torch.manual_seed(0)
    model = tiny_bert().bert
    teacher = geta.hf.distill.make_teacher(model)
    teacher_state = state(teacher)
    c = compressor(model)
    kd = geta.hf.distill.DistillationLoss(teacher, logits=0.0, embedding="cosine", hidden="mse")
    trainer = GetaTrainer(
        model=model,
        args=args(tmp_path, max_steps=8, gradient_accumulation_steps=2),
        train_dataset=dataset(labels=False),
        compressor=c,
        distillation=kd,
        save_dir=tmp_path / "small",
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss) and result.training_loss > 0
    assert set(kd.last) == {"hidden", "embedding", "loss"}
    assert c.finalized and c.report().within_budget
    for name, value in state(teacher).items():
        assert torch.equal(value, teacher_state[name]), name
    inputs = batch()
    loaded = geta.hf.from_pretrained(tmp_path / "small")
    with torch.no_grad():
        assert torch.equal(
            loaded(**inputs).last_hidden_state, model.eval()(**inputs).last_hidden_state
        )


def test_wrong_use_is_refused(trained, tmp_path):
    model, c, _, _ = trained
    run_args = args(tmp_path, max_steps=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizers="):
        GetaTrainer(model=model, args=run_args, compressor=c, optimizers=(opt, None))
    with pytest.raises(ValueError, match="not the compressor's model"):
        GetaTrainer(model=tiny_bert(), args=run_args, compressor=c)
    cls = with_geta(T.Trainer)
    assert cls.__name__ == "GetaTrainer" and issubclass(cls, T.Trainer)


# ---------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    model = tiny_bert()
    c = compressor(model)
    run_args = args(out, max_steps=12, ddp_backend="gloo", max_grad_norm=0.5)
    trainer = GetaTrainer(
        model=model,
        args=run_args,
        train_dataset=dataset(),
        compressor=c,
        save_dir=os.path.join(out, "small"),
    )
    trainer.train()
    opt = c._optimizer
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    np.savez(
        os.path.join(out, f"rank{rank}.npz"),
        world=run_args.world_size,
        ddp=isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel),
        steps=[opt.step_count, trainer.state.global_step, opt.schedule.total_steps],
        zeroed=opt.zeroed,
        weights=weights.numpy(),
        within=c.report().within_budget,
        logits=outputs(model, batch()).numpy(),
    )
    torch.distributed.destroy_process_group()


def test_two_process_ddp_launch_keeps_ranks_identical(tmp_path):
    # workers fork from a server that has imported this module once (a plain fork is unsafe
    # once autograd has run in this process)
    multiprocessing.set_forkserver_preload([__name__])
    mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="forkserver",
    )
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for r in ranks:
        assert int(r["world"]) == 2 and bool(r["ddp"]) and bool(r["within"])
        assert r["steps"].tolist() == [12, 12, 12]  # 48 samples / (4 x 2 ranks): 6 per epoch
        assert r["zeroed"].any()
    np.testing.assert_array_equal(ranks[0]["zeroed"], ranks[1]["zeroed"])
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])
    loaded = geta.hf.from_pretrained(tmp_path / "small")
    np.testing.assert_array_equal(outputs(loaded, batch()).numpy(), ranks[0]["logits"])


@pytest.mark.parametrize("granularity", ["weight", "group"])
def test_admm_modes_drive_the_trainer_too(tmp_path, granularity):
    model = tiny_bert()
    admm = geta.AdmmConfig(granularity=granularity, update_every=4)
    config = geta.CompressorConfig(quantize_embeddings=True, bit_range=(4, 8), admm=admm)
    c = geta.Compressor(
        model, (), BUDGET, "admm", config, example_kwargs=geta.hf.example_inputs(model)
    )
    run_args = args(tmp_path / "run", num_train_epochs=2)
    trainer = GetaTrainer(
        model=model, args=run_args, train_dataset=dataset(), compressor=c, finalize=False
    )
    trainer.train()
    assert c.report().stage == "finetune"  # masked fine-tuning after the hard projection
    inputs = batch()
    zeroed = outputs(model, inputs)
    GetaCallback(c, save_dir=tmp_path / "small").on_train_end(
        trainer.args, trainer.state, trainer.control
    )
    assert c.report().within_budget and c.report().ratio >= 12
    torch.testing.assert_close(outputs(model, inputs), zeroed, rtol=1e-5, atol=1e-5)
    loaded = geta.hf.from_pretrained(tmp_path / "small")
    assert torch.equal(outputs(loaded, inputs), outputs(model, inputs))
