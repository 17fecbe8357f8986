"""The frontier runner's schedule: free choices are picked on the first seed before the seeds
run; a method with nothing to choose runs all its seeds in one batch (in parallel)."""

from types import SimpleNamespace

import frontier


def _batches(monkeypatch, tmp_path, methods, seeds=(0, 1, 2)):
    """The batches of jobs the runner submits, each as (method, seed, choice) triples; every
    run "scores" its bits as validation accuracy, so the most bits win a round of bits."""
    batches = []

    def fake_run(self, jobs):
        batches.append([(j.method.label, j.seed, j.choice) for j in jobs])
        for j in jobs:
            bits = j.choice.get("method", {}).get("bits", 0)
            row = j.row(self.study)
            row["result"] = {"validation_accuracy": bits / 10, "accuracy": 0.5}
            self.rows[frontier.row_key(row)] = row

    monkeypatch.setattr(frontier.Runner, "run", fake_run)
    monkeypatch.setattr(frontier, "train_dense", lambda base, threads, pinned=None: None)
    study = frontier.STUDIES["lenet5-fashion-mnist"]
    study = frontier.replace(study, seeds=seeds)
    runner = frontier.Runner(study, jobs=2, threads=1, out=tmp_path)
    runner.study_methods([frontier.METHODS[m] for m in methods], ["30x"])
    return batches


def test_a_method_without_choices_runs_every_seed_in_one_batch(monkeypatch, tmp_path):
    batches = _batches(monkeypatch, tmp_path, ["geta-allocation"])
    assert batches == [[("geta-allocation", s, {}) for s in (0, 1, 2)]]


def test_choices_are_made_on_the_first_seed_then_every_seed_runs_the_winner(monkeypatch, tmp_path):
    batches = _batches(monkeypatch, tmp_path, ["qat-only", "geta-allocation"])
    first = batches[0]
    assert {seed for _, seed, _ in first} == {0} and {m for m, _, _ in first} == {"qat-only"}
    assert len(first) == len(frontier.METHODS["qat-only"].rounds[0])
    last = batches[-1]
    assert ("geta-allocation", 2, {}) in last
    winner = {"method": {"bits": max(frontier.BITS)}}
    assert [(s, c) for m, s, c in last if m == "qat-only"] == [
        (0, winner),
        (1, winner),
        (2, winner),
    ]


def test_runs_another_runner_wrote_since_are_not_run_again(monkeypatch, tmp_path):
    study = frontier.STUDIES["lenet5-fashion-mnist"]
    runner = frontier.Runner(study, jobs=1, threads=1, out=tmp_path)
    job = frontier.Job(frontier.METHODS["geta"], "30x", 0, {})
    row = job.row(study) | {"result": {"accuracy": 0.9}}
    runner.path.write_text(frontier.json.dumps(row) + "\n")  # after the runner read the file

    def no_pool(*args, **kwargs):
        raise AssertionError("a finished run was submitted again")

    monkeypatch.setattr(frontier.concurrent.futures, "ProcessPoolExecutor", no_pool)
    runner.run([job])
    assert runner._done(job)["result"] == {"accuracy": 0.9}


def test_the_dense_model_is_pinned_in_the_study_and_reused_on_a_fresh_machine(
    monkeypatch, tmp_path
):
    """Retraining the dense model is not bit-exact across CPUs: the first run pins the cached
    dense model in the study; a machine with an empty cache starts from the pinned weights."""
    trained = []

    def fake_compress(spec, out, progress):
        store = frontier.baseline_folder()
        if not (store / "k.pt").exists():  # the runner's cache miss: train
            trained.append(spec.model)
            store.mkdir(parents=True, exist_ok=True)
            (store / "k.pt").write_bytes(b"weights")
            (store / "k.json").write_text("{}")
        return SimpleNamespace(dense={"key": "k"})

    monkeypatch.setattr(frontier, "run_compress", fake_compress)
    base = frontier.STUDIES["lenet5-fashion-mnist"].base
    pinned = tmp_path / "study" / "dense"
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache-1"))
    frontier.train_dense(base, 1, pinned)
    assert sorted(p.name for p in pinned.iterdir()) == ["k.json", "k.pt"]
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache-2"))  # another machine
    frontier.train_dense(base, 1, pinned)
    assert trained == [base.model]
    assert (tmp_path / "cache-2" / "baselines" / "k.pt").read_bytes() == b"weights"


def test_a_later_round_keeps_the_nested_choices_of_the_earlier_ones():
    winner = {"config": {"bit_range": [4, 8], "admm": {"distance": "euclidean"}}}
    candidate = frontier._merge(winner, {"config": {"admm": {"rho": 0.01}}})
    assert candidate == {
        "config": {"bit_range": [4, 8], "admm": {"distance": "euclidean", "rho": 0.01}}
    }
    assert winner["config"]["admm"] == {"distance": "euclidean"}  # the winner is left as it was
    assert frontier._merge(
        {"config": {"bit_range": [2, 8]}}, {"config": {"bit_range": [3, 3]}}
    ) == {"config": {"bit_range": [3, 3]}}


def test_a_run_whose_training_diverges_is_a_row_that_says_so(monkeypatch):
    def diverging(spec, out, progress):
        raise frontier.DivergenceError("step 7: the loss is nan")

    monkeypatch.setattr(frontier, "run_compress", diverging)
    spec = frontier.STUDIES["lenet5-fashion-mnist"].base
    assert frontier.run_one(spec, threads=1) == {"diverged": "step 7: the loss is nan"}


def test_a_diverged_candidate_is_never_chosen_and_the_round_goes_on(monkeypatch, tmp_path):
    most = max(frontier.BITS)
    batches = []

    def fake_run(self, jobs):
        batches.append(jobs)
        for j in jobs:
            bits = j.choice.get("method", {}).get("bits", 0)
            row = j.row(self.study)
            # the most bits would win on validation, but its training diverged
            row["result"] = (
                {"diverged": "nan"}
                if bits == most
                else {"validation_accuracy": bits / 10, "accuracy": 0.5}
            )
            self.rows[frontier.row_key(row)] = row

    monkeypatch.setattr(frontier.Runner, "run", fake_run)
    monkeypatch.setattr(frontier, "train_dense", lambda base, threads, pinned=None: None)
    study = frontier.replace(frontier.STUDIES["lenet5-fashion-mnist"], seeds=(0, 1))
    runner = frontier.Runner(study, jobs=2, threads=1, out=tmp_path)
    runner.study_methods([frontier.METHODS["qat-only"]], ["30x"])
    runner_up = {"method": {"bits": sorted(frontier.BITS)[-2]}}
    assert [(j.seed, j.choice) for j in batches[-1]] == [(0, runner_up), (1, runner_up)]
