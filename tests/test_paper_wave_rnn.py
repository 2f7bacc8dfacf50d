"""`make paper-wave-rnn`: the adding and copy tasks as the authors' code defines them, and a
short run that shows the paper's claim in miniature (the wave-encoder recalls, the iRNN not)."""

from __future__ import annotations

import json

import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()

import torch  # noqa: E402

from wavedge.models import paper_wave_rnn as paper  # noqa: E402


def test_copy_batches_follow_the_authors_generator():
    x, y = paper.Copy(20).batch(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 30, 10) and y.shape == (64, 30)
    tokens = x.argmax(-1)
    assert (x.sum(-1) == 1).all()  # one-hot
    assert ((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8)).all()
    assert (tokens[:, 19] == 9).all()  # the delimiter at the code's T - 1
    assert (tokens[:, 10:19] == 0).all() and (tokens[:, 20:] == 0).all()
    assert (y[:, -10:] == tokens[:, :10]).all() and (y[:, :-10] == 0).all()
    assert paper.Copy(20).name == "copy T=10"  # the paper counts T without the 10 digits


def test_adding_batches_have_one_marker_per_half_and_sum_the_marked_values():
    task = paper.Adding(100)
    x, y = task.batch(256, torch.Generator().manual_seed(0))
    assert x.shape == (256, 100, 2)
    markers = x[..., 1]
    assert (markers[:, :50].sum(1) == 1).all() and (markers[:, 50:].sum(1) == 1).all()
    torch.testing.assert_close(y, (x[..., 0] * markers).sum(1))
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()


def test_copy_loss_is_cross_entropy_divided_again_by_the_batch():
    task = paper.Copy(20)
    x, y = task.batch(50, torch.Generator().manual_seed(1))
    out = torch.zeros(50, 30, 10)  # uniform prediction: CE = ln 10 per step
    ln10 = torch.log(torch.tensor(10.0)).item()
    assert abs(float(task.loss(out, y)) - ln10 / 50) < 1e-6
    # the test metric stays CE / 50 on any number of test sequences (the final test: 1,000)
    x, y = task.batch(1000, torch.Generator().manual_seed(2))
    assert abs(task.metrics(torch.zeros(1000, 30, 10), y)["test_loss"] - ln10 / 50) < 1e-6


def test_the_paper_sizes_match_its_parameter_counts():
    from wavedge.models import build_model

    # Table 1 counts weights without biases: the adding wRNN's 10.29k
    for task, weights_only in (("adding", 10_287), ("copy", 12_108)):
        t = paper.TASKS[task](100)
        model = build_model("wave_rnn", input_size=t.input_size, output_size=t.output_size,
                            **paper.MODELS[task]["wave_rnn"])
        assert paper.parameters(model)["weights_only"] == weights_only


def test_a_short_copy_run_shows_the_claim_in_miniature():
    run = paper.Run("copy", 20, {"wave_rnn": 150, "irnn": 150}, log_every=50)
    wave = paper.train_one(run, "wave_rnn", 0, progress=False)
    irnn = paper.train_one(run, "irnn", 0, progress=False)
    assert [p["iteration"] for p in wave["curve"]] == [0, 50, 100, 150]
    assert wave["final"]["recall"] > 0.8, wave["final"]
    assert irnn["final"]["recall"] < 0.5, irnn["final"]
    assert wave["final"]["test_loss"] * 10 < irnn["final"]["test_loss"]


def test_the_experiment_writes_results_table_and_curves(tmp_path, monkeypatch):
    tiny = paper.Profile((0,), (paper.Run("adding", 20, {"wave_rnn": 4, "irnn": 4},
                                          log_every=2),))
    monkeypatch.setitem(paper.PROFILES, "tiny", tiny)
    assert paper.main(["--profile", "tiny", "--out", str(tmp_path), "--threads", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["arch"], r["seed"]) for r in results["runs"]] == [("wave_rnn", 0), ("irnn", 0)]
    assert {r["arch"] for r in results["summary"]} == {"wave_rnn", "irnn"}
    assert "adding T=20" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_seeds_run_apart_merge_into_one_table(tmp_path, monkeypatch):
    """One process per seed (a GPU runs them side by side), then --merge: the table of the
    three, as one process would have written it."""
    tiny = paper.Profile((0, 1), (paper.Run("adding", 20, {"wave_rnn": 4, "irnn": 4},
                                            log_every=2),))
    monkeypatch.setitem(paper.PROFILES, "tiny", tiny)
    for seed in (0, 1, 5):
        assert paper.main(["--profile", "tiny", "--out", str(tmp_path / f"s{seed}"),
                           "--seeds", str(seed), "--arch", "wave_rnn", "--iterations", "6",
                           "--threads", "1"]) == 0
    assert paper.main(["--merge", *(str(tmp_path / f"s{s}") for s in (0, 1, 5)),
                       "--out", str(tmp_path / "all")]) == 0
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    (row,) = results["summary"]
    assert row["arch"] == "wave_rnn" and row["seeds"] == [0, 1, 5] and row["iterations"] == 6
    assert [p["iteration"] for p in results["runs"][0]["curve"]] == [0, 2, 4, 6]
    assert results["runs"][2]["device"] == "cpu"
    with pytest.raises(SystemExit) as stop:  # seed 0 twice would count it twice
        paper.main(["--merge", str(tmp_path / "s0"), str(tmp_path / "all"),
                    "--out", str(tmp_path / "x")])
    assert stop.value.code == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_run_follows_the_cpus():
    """The same data and initial weights (drawn on the CPU), float32 on both: the learning
    curves agree until rounding has had many steps to grow."""
    run = paper.Run("adding", 30, {"wave_rnn": 20, "irnn": 20}, log_every=10)
    cpu = paper.train_one(run, "wave_rnn", 0, progress=False)
    gpu = paper.train_one(run, "wave_rnn", 0, progress=False, device="cuda")
    assert gpu["device"].startswith("cuda:0 (")
    for a, b in zip(cpu["curve"], gpu["curve"]):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-3 * a["train_loss"], (a, b)
