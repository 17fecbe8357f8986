"""The artifact reader on damaged and crafted artifacts: a few hundred fixed mutations of one
small artifact (``tests/export/fuzzing.py``; ``benchmarks/artifact_fuzz.py`` runs more), and the
bounds that keep a crafted index from allocating what its bytes cannot hold."""

import json
import time
import tracemalloc

import pytest

import geta
import geta.export as export
from geta.export.bounds import decoded_bytes
from tests.export import fuzzing

CASES_PER_KIND = 25


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fuzzing.build(tmp_path_factory.mktemp("fuzz") / "base")


def coders(entry):
    spec = entry.get("codes") or entry.get("values")
    return entry["layout"], spec["coder"], spec.get("width")


def test_the_base_artifact_has_every_layout_and_coder(base):
    tensors = export.read_manifest(base)["tensors"]
    quantized = {coders(e) for e in tensors.values() if e["encoding"] == "quantized"}
    assert {layout for layout, _, _ in quantized} == {"dense", "sparse"}
    assert {coder for _, coder, _ in quantized} == {"packed", "rans", "channels"}
    assert ("dense", "packed", 0) in quantized  # a weight with no code bytes at all
    assert {e["per_channel"] for e in tensors.values() if "per_channel" in e} == {True, False}
    raw = {e["dtype"] for e in tensors.values() if e["encoding"] == "raw"}
    assert raw == {"float32", "float16", "int64", "int8", "bool"}


def test_every_mutation_is_rejected_or_loads_as_its_index_says(base, tmp_path):
    cases = {kind: range(CASES_PER_KIND) for kind in fuzzing.KINDS}
    report = fuzzing.run(base, tmp_path / "case", cases)
    bugs = "\n".join(f"{kind} seed {seed}: {outcome}" for kind, seed, outcome in report.bugs)
    assert not report.bugs, f"{report.table()}\n{bugs}"
    assert report.slowest[0] < 2.0, report.table()  # no case comes near a hang
    # damage without a new checksum never gets past it
    for kind in ("flip-weights", "truncate-weights"):
        assert report.counts[kind]["rejected"] == CASES_PER_KIND, report.table()
    # the crafted cases reach the decoders: some load as other weights
    changed = sum(counts["changed"] for counts in report.counts.values())
    assert changed >= 10, report.table()


def rewrite(path, edit):
    """Apply ``edit`` to the stored index, recompress it and recompute the checksum."""
    artifact = fuzzing.Artifact.read(path)
    parts = fuzzing.Parts.of(artifact)
    edit(parts.index["tensors"])
    parts.pack().write(path)


def copy_of(base, tmp_path):
    path = tmp_path / "artifact"
    fuzzing.Artifact.read(base).write(path)
    return path


def width_zero(entry, shape):
    entry.update(shape=shape, per_channel=False, layout="dense")
    entry["codes"] = {"coder": "packed", "lo": 0, "width": 0}
    entry["streams"] = {"step": 4, "clip_exponent": 8}


def rejected_fast(path, match, **kw):
    """Load ``path``: an ArtifactError matching ``match``, within a second and a megabyte."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(geta.ArtifactError, match=match):
            export.load_tensors(path, **kw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**62, 3], [2**20] * 8])
def test_a_huge_declared_shape_is_rejected_before_anything_is_allocated(base, tmp_path, shape):
    path = copy_of(base, tmp_path)
    rewrite(path, lambda tensors: width_zero(tensors["10.weight"], shape))
    rejected_fast(
        path, r"tensor 10.weight declares .* bytes, more than max_bytes=.*pass max_bytes="
    )


@pytest.mark.parametrize(
    "name, edit, message",
    [
        # rANS: 4 bytes of lane states code at most 2048 values
        (
            "6.weight",
            lambda e: e.update(shape=[2**20, 2**10]),
            r"codes.states holds 4 bytes, 2,097,152 needed for 1,073,741,824 values",
        ),
        # Rice: each position costs a 0 bit of the unary stream
        (
            "4.weight",
            lambda e: e.update(marks="zero"),
            "unary holds 43 bytes, 967 to 968 needed for 7,732 positions",
        ),
        # packed: every value its width
        (
            "12.weight",
            lambda e: e.update(shape=[10, 2**40]),
            r"codes holds 35 bytes, 5.5e\+12 needed for 1.1e\+13 values of 4 bits",
        ),
        # per-channel steps: 4 bytes a channel
        (
            "12.weight",
            lambda e: e.update(shape=[2**40, 7]),
            r"step holds 40 bytes, 4.4e\+12 needed",
        ),
        # the sparse layout: at most one nonzero a value
        ("6.weight", lambda e: e.update(nonzeros=2**40), r"nonzeros is 1099511627776, not an"),
    ],
)
def test_a_small_stream_that_claims_a_huge_count_is_rejected(base, tmp_path, name, edit, message):
    path = copy_of(base, tmp_path)
    rewrite(path, lambda tensors: edit(tensors[name]))
    rejected_fast(path, f"tensor {name} cannot be decoded: {message}", max_bytes=1 << 62)


def test_max_bytes_bounds_what_is_decoded(base):
    tensors = export.read_manifest(base)["tensors"]
    total = sum(decoded_bytes(e) for e in tensors.values())
    assert set(export.load_tensors(base, max_bytes=total)) == set(tensors)
    with pytest.raises(geta.ArtifactError, match=f"more than max_bytes={total - 1:,}: .* crafted"):
        export.load(base, model=fuzzing.float_model, max_bytes=total - 1)
    with pytest.raises(ValueError, match="max_bytes is -1"):
        export.load_tensors(base, max_bytes=-1)


@pytest.mark.parametrize(
    "key", ["forward", "training", "weight", "_parameters", "config.forward", "config._x"]
)
def test_an_attribute_that_is_not_a_size_is_never_set(base, tmp_path, key):
    path = copy_of(base, tmp_path)
    artifact = fuzzing.Artifact.read(path)
    parts = fuzzing.Parts.of(artifact)
    parts.index["modules"]["4"][key] = 3
    parts.pack().write(path)
    with pytest.raises(geta.ArtifactError, match=f"4\\.{key}|attribute named '{key}'"):
        export.load(path, model=fuzzing.float_model)


def test_a_manifest_that_is_too_deep_or_too_large_is_one_clear_error(base, tmp_path):
    path = copy_of(base, tmp_path)
    (path / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(geta.ArtifactError, match="manifest.json is corrupted"):
        export.read_manifest(path)
    (path / "manifest.json").write_text(json.dumps({"format": "x" * (2 << 20)}))
    with pytest.raises(geta.ArtifactError, match="not a geta manifest"):
        export.read_manifest(path)
