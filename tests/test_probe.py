"""`wavedge probe`: zones, purity, the recording-level baseline, and the probe on the bundled
model read from its exported graph (no torch) and from its checkpoint (torch)."""

from __future__ import annotations

import json

import numpy as np

from conftest import BUNDLED_CHECKPOINT, BUNDLED_MODEL, assert_one_line_error, needs_torch, run_cli
from wavedge.probe import (Activations, ProbeOptions, purity, score_units, summarise, verdict,
                           zones_of)


def test_zones_are_equal_count_quantiles_with_ties_kept_together():
    v = np.arange(100.0)
    zone, ranges = zones_of(v, 5)
    assert np.bincount(zone).tolist() == [20] * 5
    assert (np.diff(zone) >= 0).all() and ranges[0, 0] == 0 and ranges[-1, 1] == 99
    relu = np.concatenate([np.zeros(70), np.arange(1.0, 31.0)])  # a mostly silent ReLU unit
    zone, ranges = zones_of(relu, 5)
    assert len(ranges) < 5 and set(zone[:70]) == {0} and ranges[0].tolist() == [0, 0]
    assert 0 not in zone[70:]


def test_purity_is_the_share_of_the_zones_most_common_label():
    zone = np.array([0, 0, 0, 0, 1, 1])
    labels = np.array([[2, 2, 2, 1, 0, 1], [0, 1, 2, 1, 0, 0]])
    assert purity(zone, labels, 2, 3).tolist() == [[0.75, 0.5], [0.5, 1.0]]


def _acts(rng, unit_of_recording, n_rec=40, per_rec=50, k=4):
    rec_labels = np.repeat(np.arange(k), n_rec // k)
    rng.shuffle(rec_labels)
    rec = np.repeat(np.arange(n_rec), per_rec)
    values = np.stack([unit_of_recording(r, rec_labels[r], per_rec) for r in range(n_rec)])
    return Activations({"u": values.reshape(-1, 1)}, rec_labels[rec], rec, tuple("abcd"))


def test_a_planted_top_zone_is_found_and_only_there():
    rng = np.random.default_rng(0)

    # recordings of class 0 drive the unit high; every other recording sits anywhere below
    def unit(r, label, n):
        level = 10.0 if label == 0 else rng.uniform(0, 8)
        return level + rng.normal(0, 0.1, n)

    acts = _acts(rng, unit)
    summary = summarise(score_units(acts, ProbeOptions(zones=5, permutations=300)), 5)
    by_zone = {s["from_top"]: s for s in summary}
    assert by_zone[0]["mean_purity"] > 0.95 and by_zone[0]["mean_z"] > 3
    assert all(abs(by_zone[k]["mean_z"]) < 2.5 for k in range(1, 5))
    assert verdict(summary)["u"].startswith("excess in the top zone only")


def test_the_baseline_permutes_recordings_so_a_recording_signature_is_not_significant():
    """A unit that tells recordings apart but not labels (one random level per recording):
    each zone then holds a few whole recordings, which shuffling single samples would score
    as highly homogeneous; permuting the recordings' labels does not."""
    rng = np.random.default_rng(1)
    zs = []
    for seed in range(8):
        acts = _acts(np.random.default_rng(seed),
                     lambda r, label, n: rng.uniform(0, 1) + rng.normal(0, 0.01, n))
        rows = score_units(acts, ProbeOptions(zones=5, permutations=200, seed=seed))
        zs += [r["z"] for r in rows]
    assert abs(np.mean(zs)) < 0.7 and np.mean(np.abs(zs) > 2) < 0.2


def test_probe_of_the_exported_bundled_model_writes_its_report(tmp_path):
    proc = run_cli("probe", BUNDLED_MODEL, "--zones", "4", "--permutations", "50",
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4000 samples of 40 recordings" in proc.stdout
    report = json.loads((tmp_path / "probe.json").read_text())
    assert {s["tensor"] for s in report["summary"]} == {"y", "h"}
    assert set(report["verdict"]) == {"y", "h"}
    units = {(z["tensor"], z["unit"]) for z in report["zones"]}
    assert len(units) == 16 * 64 + 4  # every ring neuron and every class score
    # the trained readout's top zone is far purer than chance among 4 balanced classes
    top_y = next(s for s in report["summary"] if s["tensor"] == "y" and s["from_top"] == 0)
    assert top_y["mean_purity"] > 0.6 and top_y["mean_z"] > 2


def test_probe_refuses_what_it_cannot_read(tmp_path):
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--units", "q"), "no float output",
                          "y, h")
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--units", ",,"),
                          "--units ',,' names no output or state")
    unlabelled = tmp_path / "x.csv"
    unlabelled.write_text("acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n" + "0,0,0,0,0,0\n" * 5)
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, unlabelled), "label")
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--untrained"), "checkpoint")
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--zones", "1", "--out",
                                  tmp_path / "new"), "--zones must be at least 2, got 1")
    assert not (tmp_path / "new").exists()  # a refused run had left its --out folder made
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--seed", "-1"),
                          "--seed must be at least 0, got -1")
    # more zones than the samples fill: the scoring ran on past any timeout
    assert_one_line_error(run_cli("probe", BUNDLED_MODEL, "--zones", "100000"),
                          "--zones 100000 for 4000 samples; at most 400")


def test_a_unit_named_twice_or_with_spaces_is_probed_once():
    """--units y,y was a numpy broadcast traceback (the two copies' activations stacked)."""
    proc = run_cli("probe", BUNDLED_MODEL, "--units", " y , y ", "--permutations", "10",
                   "--zones", "3")
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split("|")[1].strip() for ln in proc.stdout.splitlines()
            if ln.startswith("| ") and not ln.startswith("| tensor")]
    assert set(rows) == {"y"} and len(rows) == 3, proc.stdout


@needs_torch
def test_probe_reads_the_same_activations_from_torch_as_from_the_graph():
    from wavedge.models.checkpoint import load_checkpoint
    from wavedge.probe import from_stream, from_torch
    from wavedge.recordings import load_table
    from wavedge.runtime import load_model

    model = load_model(BUNDLED_MODEL)
    recs = load_table(BUNDLED_MODEL / "recording.csv", model.signature.inputs[0].channels)
    recs = recs.recordings[:3]
    graph = from_stream(model, recs, ["y", "h"], 0.5)
    torch_rows = from_torch(load_checkpoint(BUNDLED_CHECKPOINT).model, recs, ["y", "h"], 0.5)
    for name in ("y", "h"):
        a, b = np.stack(graph[name]), np.stack(torch_rows[name])
        assert a.shape == b.shape == (150, 4 if name == "y" else 1024)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
