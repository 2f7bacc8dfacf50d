"""The streaming runtime: same answers as torch, state owned by the stream, bad samples handled
by policy and counted."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from conftest import (BUNDLED_CHECKPOINT, BUNDLED_MODEL, BUNDLED_MPL, assert_one_line_error,
                      needs_torch, run_cli)
from wavedge.errors import InputError, ManifestError
from wavedge.manifest import load_manifest
from wavedge.runtime import BackendError, available, load_model


def _recording():
    with open(BUNDLED_MODEL / "recording.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    channels = load_model(BUNDLED_MODEL).manifest.channels
    return np.array([[float(r[c]) for c in channels] for r in rows], np.float32)


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def recording():
    return _recording()


@pytest.fixture(scope="module")
def torch_logits(recording):
    """The torch model offline over the whole recording as one stream (never reset)."""
    import torch

    from wavedge.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(BUNDLED_CHECKPOINT)
    mean = np.array(ckpt.meta["normalisation"]["mean"], np.float32)
    std = np.array(ckpt.meta["normalisation"]["std"], np.float32)
    with torch.inference_mode():
        y = ckpt.model(torch.from_numpy((recording - mean) / std)[None])
    return y[0].numpy()


def _tolerance(model) -> float:
    return model.manifest.raw["check"]["tolerance"]


@needs_torch
@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_streaming_the_recording_matches_torch_offline(backend, recording, torch_logits):
    if not available()[backend]:
        pytest.skip(f"{backend} is not installed")
    try:
        model = load_model(BUNDLED_MODEL, backend=backend)
    except ManifestError as exc:
        pytest.skip(f"the bundled model has no {backend} artefact yet: {exc}")
    stream = model.stream()
    logits = np.stack([stream.push(x).logits for x in recording])
    scale = max(1.0, float(np.abs(torch_logits).max()))
    assert (logits.argmax(-1) == torch_logits.argmax(-1)).all()
    assert np.abs(logits - torch_logits).max() / scale <= _tolerance(model)
    chunked = model.stream().push_chunk(recording)
    assert (chunked.class_ids == torch_logits.argmax(-1)).all()
    assert np.abs(chunked.logits - torch_logits).max() / scale <= _tolerance(model)


def test_push_chunk_handles_any_length_across_calls(model, recording):
    """Chunk graph for whole chunks, step graph for the rest, the state carried between."""
    ref = np.stack([r.logits for r in model.stream().push_chunk(recording[:500])])
    stream = model.stream()
    parts = [stream.push_chunk(recording[a:b]) for a, b in ((0, 7), (7, 77), (77, 300),
                                                            (300, 301), (301, 500))]
    got = np.concatenate([p.logits for p in parts])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert parts[-1].steps[-1] == 499 and stream.steps == 500


def test_streams_share_a_model_but_not_state(model, recording):
    a, b = model.stream(), model.stream()
    alone = model.stream()
    solo = [alone.push(x).logits for x in recording[:200]]
    reverse = recording[:200][::-1]
    for i in range(200):  # interleave: b gets other data in between every push of a
        got = a.push(recording[i]).logits
        b.push(reverse[i])
        np.testing.assert_allclose(got, solo[i], atol=1e-6)


def test_reset_returns_to_the_start(model, recording):
    stream = model.stream()
    first = [stream.push(x).logits for x in recording[:50]]
    assert np.abs(stream.state[0]).max() > 0
    stream.reset()
    assert not stream.state[0].any()
    again = [stream.push(x).logits for x in recording[:50]]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


@pytest.mark.parametrize("make,reason", [
    (lambda s: np.full_like(s, np.nan), "not finite"),
    (lambda s: np.full_like(s, np.inf), "not finite"),
    (lambda s: np.zeros((1, 2), np.float32), "expected shape"),
    (lambda s: np.full(s.shape, "a"), "not numeric"),
], ids=["nan", "inf", "shape", "text"])
def test_a_bad_state_is_refused_whole_and_the_stream_carries_on(model, recording, make, reason):
    """A restored snapshot that is not finite, not numeric or not the state's shape is refused
    in one line; the stream goes on from the state it had (two states: test_own_models)."""
    stream = model.stream()
    for x in recording[:20]:
        stream.push(x)
    before = stream.state
    with pytest.raises(InputError, match=f"{reason}.*; the state is unchanged"):
        stream.state = [make(before[0])]
    for now, then in zip(stream.state, before):
        np.testing.assert_array_equal(now, then)
    assert np.isfinite(stream.push(recording[20]).logits).all()


def test_a_snapshot_restores_by_state_name_and_a_bare_array_is_refused(model, recording):
    """A mapping by name had been read as its names ("expected shape ..., got ()"), a bare
    array as its rows."""
    stream = model.stream()
    for x in recording[:20]:
        stream.push(x)
    snap = stream.state
    stream.reset()
    stream.state = {"h": snap[0]}
    np.testing.assert_array_equal(stream.state[0], snap[0])
    stream.reset()
    for bad, message in (({"hh": snap[0]}, "a mapping names the states h, got hh"),
                         (snap[0], "give one array per state (h) in a tuple, or a mapping")):
        with pytest.raises(InputError, match=rf"^state: {re.escape(message)}"):
            stream.state = bad
        assert not stream.state[0].any()


def test_result_carries_label_and_probability(model, recording):
    r = model.stream().push(recording[0])
    assert r.label in model.labels and 0.0 < r.score <= 1.0
    assert np.isclose(r.probabilities.sum(), 1.0, atol=1e-5)
    assert r.step == 0


@pytest.mark.parametrize("classes", [2, 6, 32, 33, 1000])
def test_a_class_heads_top_is_numpys_argmax_and_softmax_at_every_size(model, classes):
    """The class and its probability, as each sink and the bridge write them, computed in
    Python floats for a few classes and by numpy beyond: the same class (the first of equal
    logits) and the same probability to float32's precision."""
    import copy

    from wavedge.runtime.heads import softmax

    head = copy.copy(model.stream().push(np.zeros(6, np.float32)).head)
    head.labels = tuple(f"c{i}" for i in range(classes))  # the bundled model's head, N classes
    rng = np.random.default_rng(classes)
    tied = rng.normal(0, 1, classes).astype(np.float32)
    tied[[classes // 3, classes - 1]] = 9.0  # two equal maxima: the first is the class
    for logits in (rng.normal(0, 3, classes).astype(np.float32),
                   np.full(classes, 2.5, np.float32), tied):
        c, p = head.top([logits])
        assert c == int(logits.argmax())
        assert p == pytest.approx(float(softmax(logits)[c]), rel=1e-6)
        record = head.record([logits])
        assert (record["class_id"], record["score"]) == (c, round(p, 6))


def test_a_sample_keyed_by_channel_name_is_taken_in_channel_order(model, recording):
    """A sensor's JSON object, say: it had been read as a mapping by input and refused for
    lacking the input 'x'. Other keys (a timestamp) are left out."""
    by_name, in_order = model.stream(), model.stream()
    for row in recording[:5]:
        sample = {"timestamp": 12.5, **dict(reversed(list(zip(model.manifest.channels, row))))}
        np.testing.assert_array_equal(by_name.push(sample).logits, in_order.push(row).logits)


@pytest.mark.parametrize("sample,reason", [
    (np.zeros(5, np.float32), "expected 6 values, shape (6,), got shape (5,)"),
    (np.zeros((2, 6), np.float32), "expected 6 values, shape (6,), got shape (2, 6)"),
    (np.zeros((2, 3), np.float32), "got shape (2, 3)"),  # six values, but not one sample
    (["1", "2", "x", "4", "5", "6"], "not numeric"),
    ([1, 2, float("nan"), 4, 5, 6], "NaN/inf in channel(s) [2]"),
    ([1, 2, 3, 4, 5, float("inf")], "NaN/inf in channel(s) [5]"),
    (None, "sample is missing (None)"),  # was stepped as zeros: only noise may be left out
    ({"acc_x": 1.0, "acc_y": 2.0}, "sample lacks channel(s) ['acc_z', 'gyr_x', 'gyr_y', "
                                   "'gyr_z']"),
])
def test_reject_policy_names_the_problem_and_keeps_the_state(model, recording, sample, reason):
    stream = model.stream("reject")
    stream.push(recording[0])
    before = stream.state[0]
    with pytest.raises(InputError, match=reason.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        stream.push(sample)
    np.testing.assert_array_equal(stream.state[0], before)
    assert stream.steps == 1 and sum(stream.stats.dropped.values()) == 1
    stream.push(recording[1])  # the stream carries on
    assert stream.steps == 2


@pytest.mark.parametrize("streams", [0, -1, 2.5, "3"])
def test_a_count_of_streams_that_is_not_one_or_more_is_refused(streams):
    with pytest.raises(InputError, match=r"streams must be a whole number, 1 or more, got "):
        load_model(BUNDLED_MODEL, streams=streams)  # 0 and -1 loaded a batch-1 model


def test_a_missing_chunk_is_refused_not_stepped(model):
    with pytest.raises(InputError, match=r"push_chunk: input 'x' is missing \(None\)"):
        model.stream().push_chunk(None)


@pytest.mark.parametrize("fast", [True, False])
def test_an_empty_buffer_is_a_chunk_of_no_samples(model, fast):
    """A board that collects samples in a list and pushes it each tick pushes an empty one
    when nothing came: that had been "expected shape (N, 6), got (0,)" (an empty array of
    shape (0, 6) was taken). For a group, every member's empty list the same. Without the C
    fast path (a board without a compiler, the pure-Python wheel) the input's range check
    had raised numpy's "zero-size array to reduction operation maximum"."""
    from wavedge.runtime import accel

    previous = accel.use(fast and accel.available())
    try:
        _push_empty_chunks(model)
    finally:
        accel.use(previous)


def _push_empty_chunks(model):
    stream = model.stream()
    for empty in ([], (), np.empty((0, 6), np.float32)):
        assert len(stream.push_chunk(empty)) == 0
    assert stream.steps == 0 and not stream.stats.dropped
    group = load_model(BUNDLED_MODEL, streams=2).group()
    for k in "ab":
        group.add(k)
    for empty in ([[], []], {"a": [], "b": []}, {"a": []}):
        out = group.push_chunk(empty)
        assert [len(out[k]) for k in "ab"] == [0, 0]
    assert [group.member(k).steps for k in "ab"] == [0, 0]
    with pytest.raises(InputError, match=r"expected \[2 streams, N samples, 6\]"):
        group.push_chunk([])  # no members at all: not "no samples"


def test_a_chunk_of_samples_of_unequal_lengths_says_so(model, recording):
    """A list of rows one short had been "input 'x' is not numeric"."""
    rows = [list(r) for r in recording[:5]]
    rows[3] = rows[3][:5]
    stream = model.stream()
    with pytest.raises(InputError, match=r"^push_chunk: input 'x': its samples differ in length "
                                         r"\(sample 0: 6 values, sample 3: 5\); push a bad "):
        stream.push_chunk(rows)
    assert stream.steps == 0
    with pytest.raises(InputError, match=r"^push_chunk: input 'x': not numeric$"):
        stream.push_chunk([rows[0], ["a"] * 6])


def test_hold_and_zero_policies_repair_and_count(model, recording):
    bad = recording[1].copy()
    bad[[0, 3]] = np.nan
    held = bad.copy()
    held[[0, 3]] = recording[0][[0, 3]]
    zeroed = np.nan_to_num(bad, nan=0.0)
    for policy, repaired in (("hold", held), ("zero", zeroed)):
        s, ref = model.stream(policy), model.stream()
        s.push(recording[0]), ref.push(recording[0])
        np.testing.assert_array_equal(s.push(bad).logits, ref.push(repaired).logits)
        assert s.stats.repaired == {"non_finite": 1} and not s.stats.dropped
        s.push(np.zeros(3))  # wrong length: the whole sample is held / zeroed
        assert s.stats.repaired["wrong_shape"] == 1


def test_push_chunk_drops_bad_rows_under_reject_and_keeps_the_good(model, recording):
    x = recording[:64].copy()
    x[10, 2] = np.inf
    res = model.stream("reject").push_chunk(x)
    assert len(res) == 63
    ref = model.stream().push_chunk(np.delete(x, 10, axis=0))
    np.testing.assert_allclose(res.logits, ref.logits, atol=1e-6)
    with pytest.raises(InputError, match=r"expected shape \(N, 6\), got \(4, 5\)"):
        model.stream().push_chunk(np.zeros((4, 5)))


def test_unknown_policy_and_precision_are_clear_errors(model):
    with pytest.raises(InputError, match="policy 'skip' is not one of reject, hold, zero"):
        model.stream("skip")
    with pytest.raises(ManifestError, match="no onnx step graph at precision 'int4'"):
        load_model(BUNDLED_MODEL, precision="int4")
    with pytest.raises(BackendError, match="unknown backend 'tensorflow'"):
        load_model(BUNDLED_MODEL, backend="tensorflow")
    # numpy's own TypeError and ValueError before, and a traceback from `run --seed -1`
    for seed in (-1, 1.5, "x"):
        with pytest.raises(InputError, match="seed must be a whole number, 0 or more"):
            model.stream(noise="sample", seed=seed)
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--seed", "-1", "--source",
                                  "synthetic:", "--sink", "null:"),
                          "--seed must be a whole number, 0 or more, got -1")


def _rewrite(model_dir, name, data):
    from wavedge.manifest import sha256_of

    (model_dir / name).write_bytes(data)
    path = model_dir / "manifest.json"
    raw = json.loads(path.read_text())
    for f in raw["files"]:
        if f["path"] == name:
            f["sha256"], f["size_bytes"] = sha256_of(model_dir / name), len(data)
    path.write_text(json.dumps(raw))


def test_a_board_may_carry_only_the_graphs_it_runs(tmp_path, recording):
    """A Pi without ONNX Runtime, its model directory pruned to the .tflite files (or one of
    them damaged): every start had refused it for a file the run never reads. The files it
    loads are still checked, and `wavedge inspect` still checks them all."""
    import shutil

    d = tmp_path / "m"
    shutil.copytree(BUNDLED_MODEL, d)
    onnx = sorted(f.name for f in d.glob("*.onnx"))
    for name in onnx:
        (d / name).unlink()
    with pytest.raises(ManifestError, match="model.step.onnx: listed in the manifest but missing"):
        load_model(d)
    if available()["litert"]:
        stream = load_model(d, backend="litert").stream()
        ref = load_model(BUNDLED_MODEL, backend="litert").stream()
        np.testing.assert_array_equal(stream.push(recording[0]).logits,
                                      ref.push(recording[0]).logits)
    # what `wavedge inspect` reads: every file missing named, not the first
    with pytest.raises(ManifestError, match=rf"{len(onnx)} of its \d+ files are missing: ") as e:
        load_manifest(d)
    assert sorted(str(e.value).split("missing: ")[1].split(" (")[0].split(", ")) == onnx


def test_a_garbage_graph_file_is_a_clear_load_error(tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(BUNDLED_MODEL, d)
    _rewrite(d, "model.step.onnx", (d / "model.step.onnx").read_bytes()[:2000])
    with pytest.raises(BackendError, match="model.step.onnx: onnxruntime cannot load it"):
        load_model(d)


def test_a_graph_that_does_not_match_its_manifest_is_refused(tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(BUNDLED_MODEL, d)
    _rewrite(d, "model.step.onnx", (d / "model.chunk.onnx").read_bytes())  # wrong graph
    with pytest.raises(ManifestError, match=r"input 'x': expected shape \(1, 6\)"):
        load_model(d)


def test_a_corrupted_tflite_file_is_a_clear_load_error(tmp_path):
    import shutil

    if not available()["litert"]:
        pytest.skip("litert is not installed")
    d = tmp_path / "m"
    shutil.copytree(BUNDLED_MODEL, d)
    _rewrite(d, "model.step.tflite", b"TFL3" + bytes(500))
    with pytest.raises(BackendError, match="model.step.tflite: (ai_edge_litert|tflite_runtime) cannot load it"):
        load_model(d, backend="litert")


def test_an_accelerator_provider_that_is_not_built_in_is_a_clear_error():
    from wavedge.runtime import BackendOptions

    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendError, match=r"provider 'cuda' is not available in this "
                                           r"onnxruntime build; available: .*CPUExecution"
                                           r"Provider.* \(a PC needs onnxruntime-gpu in place "
                                           r"of onnxruntime, a Jetson NVIDIA's wheel for its "
                                           r"JetPack: docs/boards.md\)$"):
        load_model(BUNDLED_MODEL, options=BackendOptions(providers=("cuda",)))


@pytest.mark.skipif(not available().get("litert"), reason="LiteRT is not installed here")
def _has_cuda() -> bool:
    if not available()["onnxruntime"]:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _has_cuda(), reason="needs onnxruntime-gpu and an NVIDIA GPU")
@pytest.mark.parametrize("model_dir", [BUNDLED_MODEL, BUNDLED_MPL])
def test_on_cuda_stepping_chunks_and_a_group_give_the_cpus_answers(model_dir):
    """`--provider cuda` (a Jetson; any NVIDIA GPU with onnxruntime-gpu) runs the graphs on
    CUDA, and a stream stepped, fed in chunks or stepped in a group of 8 (where the model has
    its graphs) gives the CPU's classes, with outputs within the manifest's tolerance."""
    from wavedge.runtime.backends import BackendOptions

    cuda = BackendOptions(providers=("cuda",))
    model, gpu = load_model(model_dir), load_model(model_dir, options=cuda)
    assert gpu.step_graph.detail["providers"][0] == "CUDAExecutionProvider"
    with open(model_dir / "recording.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:400]
    # each recording from reset, as the models run (the spike-and-slab RNN's state grows
    # without bound across its digits)
    recordings = [np.array([[float(r[c]) for c in model.manifest.channels] for r in rows
                            if r["sequence"] == seq], np.float32)
                  for seq in dict.fromkeys(r["sequence"] for r in rows)]

    def each(run):
        return np.concatenate([run(x) for x in recordings])

    def stepped(m):
        return lambda x: np.stack([s.push(v).values[0] for s in [m.stream()] for v in x])

    want = each(stepped(model))
    got = {"stepped": each(stepped(gpu)),
           "chunks": each(lambda x: gpu.stream().push_chunk(x).values[0])}
    if 8 in model.manifest.batches():
        batch = load_model(model_dir, options=cuda, streams=8)

        def grouped(x):
            group = batch.group()
            for k in range(8):
                group.add(k)
            return np.stack([group.push(np.repeat(v[None], 8, 0))[3].values[0] for v in x])
        got["group"] = each(grouped)
    scale = max(1.0, float(np.abs(want).max()))
    errors = {how: float(np.abs(y - want).max() / scale) for how, y in got.items()}
    for y in got.values():
        assert (y.argmax(-1) == want.argmax(-1)).all()
    assert max(errors.values()) <= _tolerance(model), errors


def test_the_accelerator_path_gives_the_cpus_answers(monkeypatch, model, recording):
    """On CUDA or TensorRT, ONNX Runtime copies an input in host memory to the device when
    it is bound, so there the runner binds each call's inputs again (the test above checks
    it on a GPU). That path, run here on the CPU, steps, chunks and resets as the CPU's."""
    from wavedge.runtime import backend_onnxruntime

    monkeypatch.setattr(backend_onnxruntime, "on_accelerator", lambda session: True)
    bound_again = load_model(BUNDLED_MODEL)
    x = recording[:300]
    cpu, other = model.stream(), bound_again.stream()
    want = np.stack([cpu.push(v).logits for v in x])
    np.testing.assert_array_equal(np.stack([other.push(v).logits for v in x]), want)
    other.reset()
    np.testing.assert_array_equal(other.push_chunk(x).logits, model.stream().push_chunk(x).logits)


@pytest.mark.skipif(not available()["litert"], reason="litert is not installed")
def test_a_provider_the_backend_lacks_is_refused_not_ignored(tmp_path):
    """`--backend litert --provider cuda` ran on the CPU without a word."""
    from wavedge.runtime import BackendOptions

    with pytest.raises(BackendError, match=r"^backend litert has no provider cuda; its "
                                           r"providers: cpu$"):
        load_model(BUNDLED_MODEL, "litert", options=BackendOptions(providers=("cuda",)))
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--backend", "litert", "--provider",
                                  "tensorrt", "--limit", "1"),
                          "backend litert has no provider tensorrt")
    assert_one_line_error(run_cli("bench", BUNDLED_MODEL, "--backend", "litert", "--provider",
                                  "cuda", "--out", tmp_path), "backend litert has no provider cuda")


def test_the_objects_a_user_prints_say_what_they_are_in_a_line():
    """In a REPL or a log: the model, its manifest, streams, a group and their results each
    show in one short line (the manifest's own fields ran to 10 kB; the rest showed an
    address)."""
    model = load_model(BUNDLED_MODEL)
    name, labels = model.manifest.name, model.labels
    stream = model.stream(policy="hold")
    one, chunk = stream.push(np.zeros(6)), stream.push_chunk(np.zeros((40, 6)))
    group = load_model(BUNDLED_MODEL, streams=8).group()
    group.add("left"), group.add("right")
    tick = group.push(np.array([[0.0] * 6, [np.nan] * 6]))
    chunks = group.push_chunk(np.zeros((2, 5, 6)))
    shown = [repr(obj) for obj in (model, model.manifest, stream, one, chunk, group,
                                   group.member("left"), tick, chunks)]
    for text in shown:
        assert "\n" not in text and len(text) < 200 and " object at 0x" not in text, text
    m, manifest, s, _, rs, g, member, t, cs = shown
    assert name in m and "model.step.onnx" in m and "model.chunk.onnx (32 samples per call)" in m
    assert f"{len(model.manifest.files)} files" in manifest
    assert "policy hold" in s and "41 samples" in s
    assert rs.startswith("Results(40 samples, steps 1..40; last: ")
    assert g.startswith("StreamGroup(2 of 8 streams: 'left', 'right'; ")
    assert "'left' of a group" in member
    assert t.startswith("GroupResults('left': ") and "dropped: 'right'" in t
    assert any(label in t for label in labels)
    assert cs == "GroupChunkResults('left': 5 samples; 'right': 5 samples)"
