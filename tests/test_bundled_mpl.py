"""The bundled spike-and-slab RNN (meta predictive learning, trained by predictive coding on
the digits a row at a time): valid and small; `wavedge run` streams it on both backends and
precisions with each step's logits and their variance, at the accuracy its manifest claims;
the noise is the stream's (zeros, or seeded draws); the bridge carries class, probability,
logits and variances to a compiled C microcontroller; `wavedge bench` measures it. Torch-free:
this is what a board runs."""

from __future__ import annotations

import json
import re

import pytest

from conftest import BUNDLED_MODEL, BUNDLED_MPL, assert_one_line_error, run_cli
from wavedge.manifest import load_manifest
from wavedge.runtime import available

RECORDINGS, ROWS = 450, 8


def test_bundled_mpl_directory_is_small_valid_and_trained_by_predictive_coding():
    m = load_manifest(BUNDLED_MPL)  # sizes and sha256 of every file checked
    assert sum(p.stat().st_size for p in BUNDLED_MPL.iterdir()) < 1_000_000
    assert m.raw["family"] == "mpl" and m.raw["training"]["recipe"]["learning"] == "pc"
    assert m.raw["training"]["test_accuracy"] >= 0.85
    assert [i.role for i in m.signature.inputs] == ["sensor", "noise"]
    assert m.signature.outputs[0].variance == "y_var"
    assert m.reset_policy.recording  # trained on single digits from reset
    int8 = {f["format"]: f["quantisation"] for f in m.raw["files"] if f["precision"] == "int8"}
    assert "variance path" in int8["onnx"]["float"]  # kept float, by measurement
    assert "full-integer" in int8["tflite"]["variance"]  # said where it is not
    assert m.raw["calibration"]["data"].startswith("digit_rows training split")
    assert "reset as the model's policy says" in m.raw["calibration"]["step_graph"]["how"]


def _claimed(backend: str, precision: str) -> float:
    fmt = {"onnxruntime": "onnx", "litert": "tflite"}[backend]
    m = load_manifest(BUNDLED_MPL)
    (entry,) = [f for f in m.raw["files"] if f["format"] == fmt and f["graph"] == "step"
                and f["precision"] == precision]
    return entry["accuracy"]["test"]


BACKENDS = [b for b, ok in available().items() if ok]


def _old_tflite() -> bool:
    """tflite-runtime 2.14 (32-bit boards) has no int16 SQRT kernel: the full-integer file's
    variance path cannot run there (ai-edge-litert's can)."""
    from wavedge.runtime.backend_litert import _interpreter_class

    return _interpreter_class()[1] == "tflite_runtime"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_run_streams_the_recording_at_the_claimed_accuracy_with_variance(backend, precision,
                                                                         tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_cli("run", BUNDLED_MPL, "--backend", backend, "--precision", precision,
                   "--sink", f"jsonl:{out}")
    if (backend, precision) == ("litert", "int8") and _old_tflite():
        assert_one_line_error(proc, "Type INT16 is unsupported by op Sqrt")
        return
    assert proc.returncode == 0, proc.stderr
    hits = re.search(r"at the last sample of each recording: (\d+)/(\d+)", proc.stderr)
    assert int(hits.group(2)) == RECORDINGS
    assert abs(int(hits.group(1)) / RECORDINGS - _claimed(backend, precision)) <= 0.005
    assert "noise zero (the mean network)" in proc.stderr
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(recs) == RECORDINGS * ROWS
    assert all(len(r["logit_variance"]) == 10 and min(r["logit_variance"]) >= 0 for r in recs)
    assert len({tuple(r["logit_variance"]) for r in recs}) > RECORDINGS  # it varies per step


def test_stdout_shows_each_steps_logit_and_its_spread():
    proc = run_cli("run", BUNDLED_MPL, "--source",
                   f"replay:{BUNDLED_MPL / 'recording.csv'}?limit=16")
    assert proc.returncode == 0, proc.stderr
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("step")]
    assert len(steps) == 16 and all(re.search(r"logit -?[\d.e+-]+\+-[\d.e+-]+", ln)
                                    for ln in steps)


def _labels(*extra: str, tmp_path) -> list:
    out = tmp_path / f"n{len(list(tmp_path.iterdir()))}.jsonl"
    proc = run_cli("run", BUNDLED_MPL, "--sink", f"jsonl:{out}", *extra)
    assert proc.returncode == 0, proc.stderr
    return [(r["label"], r["logits"]) for r in map(json.loads, out.read_text().splitlines())]


def test_sampled_noise_is_reproducible_by_seed_and_differs_from_the_mean_network(tmp_path):
    a = _labels("--noise", "sample", "--seed", "1", tmp_path=tmp_path)
    assert a == _labels("--noise", "sample", "--seed", "1", tmp_path=tmp_path)
    assert a != _labels("--noise", "sample", "--seed", "2", tmp_path=tmp_path)
    assert a != _labels(tmp_path=tmp_path)


def test_sampling_noise_for_a_deterministic_model_is_one_line_error():
    proc = run_cli("run", BUNDLED_MODEL, "--noise", "sample")
    assert_one_line_error(proc, "has no noise input")


def test_the_bridge_carries_class_probability_logits_and_variances(tmp_path):
    """PREDICTION frames of kind 7 (class scores with their variance) to the stand-in
    microcontroller (C, built here), one per step: its class and the logits' first value
    equal what the jsonl sink wrote."""
    from wavedge.firmware_bridge.standin import StandIn, build

    board = StandIn(build(tmp_path))
    out = tmp_path / "r.jsonl"
    source = f"replay:{BUNDLED_MPL / 'recording.csv'}?limit=80"
    proc = run_cli("run", BUNDLED_MPL, "--source", source, "--sink", f"link:{board.port}")
    assert proc.returncode == 0, proc.stderr
    assert board.close() == 0
    frames = [ln for ln in board.lines if ln.startswith("PREDICTION")]
    assert len(frames) == 80 and all("kind=7" in ln and "values=20" in ln for ln in frames)
    run_cli("run", BUNDLED_MPL, "--source", source, "--sink", f"jsonl:{out}")
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    field = lambda ln, k: ln.split(f"{k}=")[1].split()[0]  # noqa: E731
    assert [int(field(ln, "index")) for ln in frames] == [r["class_id"] for r in recs]
    for ln, r in zip(frames, recs):
        assert float(field(ln, "first")) == pytest.approx(r["logits"][0], rel=1e-4, abs=1e-5)
        assert float(field(ln, "last")) == pytest.approx(r["logit_variance"][-1], rel=1e-4,
                                                         abs=1e-5)


def test_bench_measures_it_on_every_installed_backend_and_precision(tmp_path):
    proc = run_cli("bench", BUNDLED_MPL, "--samples", "100", "--repeats", "2", "--warmup", "20",
                   "--window", "8", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    configs = report["configs"]
    for b in BACKENDS:
        for p in ("fp32", "int8"):
            if (b, p) == ("litert", "int8") and _old_tflite():  # said, not measured
                assert any(n.startswith("litert/int8 not measured") for n in report["notes"])
                continue
            assert f"{b}/{p}/step" in configs and f"{b}/{p}/bare" in configs
        assert f"{b}/fp32/chunk8" in configs


def test_the_probe_reads_it_with_the_noise_left_to_the_stream(tmp_path):
    proc = run_cli("probe", BUNDLED_MPL, "--permutations", "20", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "probe.json").read_text())
    assert set(report["verdict"]) == {"h", "y", "y_var"}
    assert report["recordings"] == RECORDINGS


def test_noise_a_sample_carried_does_not_leak_into_the_next_push():
    """After a chunk (or a push) that carried its own noise, a zero-noise stream's next plain
    push runs with zero noise again: the same output as a fresh stream given the same history
    with zeros from that step on."""
    import numpy as np

    from wavedge.runtime import load_model

    m = load_model(BUNDLED_MPL)
    rows = np.random.default_rng(0).uniform(0, 16, (9, 8)).astype(np.float32)
    eps = np.random.default_rng(1).standard_normal((8, 110)).astype(np.float32)
    zero = np.zeros(110, np.float32)
    want = m.stream()
    for r, e in zip(rows[:8], eps):
        want.push({"x": r, "noise": e})
    expected = want.push({"x": rows[8], "noise": zero}).values[0]
    for carry in ("chunk", "push"):
        s = m.stream()
        if carry == "chunk":
            s.push_chunk({"x": rows[:8], "noise": eps})
        else:
            for r, e in zip(rows[:8], eps):
                s.push({"x": r, "noise": e})
        np.testing.assert_array_equal(s.push(rows[8]).values[0], expected, err_msg=carry)
