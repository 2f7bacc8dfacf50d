"""The bundled model directory: small, valid, and as accurate on its recording as it claims."""

from __future__ import annotations

import csv

import numpy as np
import onnxruntime as ort
import pytest

from conftest import BUNDLED_MODEL
from wavedge.manifest import load_manifest


def test_bundled_model_directory_is_small_and_valid():
    manifest = load_manifest(BUNDLED_MODEL)  # checks sizes and sha256 of every file
    total = sum(p.stat().st_size for p in BUNDLED_MODEL.iterdir())
    assert total < 1_000_000
    assert manifest.raw["family"] == "wave_rnn"
    assert manifest.raw["training"]["test_accuracy"] >= 0.95


def test_recording_through_the_step_graph_matches_the_recorded_accuracy():
    """Replay recording.csv (raw sensor units: the graph normalises) sample by sample through
    ONNX Runtime, as a board would."""
    manifest = load_manifest(BUNDLED_MODEL)
    with open(BUNDLED_MODEL / manifest.raw["recording"]["path"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([[float(r[c]) for c in manifest.channels] for r in rows], np.float32)
    seq = np.array([int(r["sequence"]) for r in rows])
    truth = [r["label"] for r in rows]
    sess = ort.InferenceSession(str(BUNDLED_MODEL / manifest.find_file("step").path),
                                providers=["CPUExecutionProvider"])
    h = np.zeros((1, *manifest.state[0].shape), np.float32)
    correct = total = 0
    for i in range(len(x)):
        if i == 0 or seq[i] != seq[i - 1]:
            h[...] = 0.0  # each recording is scored from reset, as in training
        y, h = sess.run(None, {"x": x[i:i + 1], "state_in.h": h})
        if i + 1 == len(x) or seq[i + 1] != seq[i]:  # last sample of a recording
            correct += manifest.labels[int(y.argmax())] == truth[i]
            total += 1
    assert total == manifest.raw["recording"]["sequences"] == 40
    assert correct / total == pytest.approx(manifest.raw["training"]["test_accuracy"], rel=1e-6)



def test_bundled_model_stays_bounded_on_an_endless_stream():
    """20,000 samples (5 shuffled passes over the 40 test recordings, never reset): the state
    must not grow, and the activity must still be recognised at the end of each recording."""
    from wavedge.recordings import load_table

    manifest = load_manifest(BUNDLED_MODEL)
    # the 40 test recordings, from the model directory itself (no dataset package, no torch:
    # this runs on the torch-free tier too)
    table = load_table(BUNDLED_MODEL / "recording.csv", manifest.channels)
    x = [r.x for r in table.recordings]
    labels = [manifest.labels.index(r.truth[-1]) for r in table.recordings]
    rng = np.random.default_rng(7)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(5)])
    sess = ort.InferenceSession(str(BUNDLED_MODEL / manifest.find_file("step").path),
                                providers=["CPUExecutionProvider"])
    h = np.zeros((1, *manifest.state[0].shape), np.float32)
    peaks, correct = [], 0
    for k in order:
        for sample in x[k]:
            y, h = sess.run(None, {"x": sample[None], "state_in.h": h})
        peaks.append(float(np.abs(h).max()))
        correct += int(y.argmax()) == labels[k]
    assert np.isfinite(peaks).all()
    half = len(peaks) // 2
    assert max(peaks[half:]) <= 2 * max(peaks[:half])  # no growth over 20,000 steps
    assert correct / len(order) >= 0.9
