"""A user's own walks as TEM-t's data (``wavedge.models.walk_logs``): the steps that count are
the grid world's visited steps when the log has places, the windows drawn are the walks' own
steps counted from their start, and the whole path works as a user runs it: trained with
``--data``, exported against the held-out walks, replayed by ``wavedge run``; a log that is
not a walk's is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch

from wavedge.models.gridworld import Grid, walks
from wavedge.models.walk_logs import (Walk, counted, data_task, read_walks, sample,
                                      walk_arrays)


def _write(path, w, places=False, labels=False, n=None):
    """Grid walks ``w`` as a user's log: ``sequence,observation,action[,place][,label]``."""
    n = len(w.observation) if n is None else n
    with open(path, "w") as f:
        f.write("sequence,observation,action" + ",place" * places + ",label" * labels + "\n")
        for b in range(n):
            for t, (o, a) in enumerate(zip(w.observation[b], w.action[b])):
                f.write(f"walk{b},{o},{a}" + f",{w.place[b, t]}" * places
                        + f",{w.target[b, t]}" * labels + "\n")
    return path


def test_places_count_the_grid_worlds_visited_steps_and_observations_a_superset():
    w = walks(Grid(), 8, 300, np.random.default_rng(1))
    assert (counted(w.observation, w.target, w.place) == w.visited).all()
    far = w.place * 1000 + 10 ** 7  # a log's own place ids, large and sparse
    assert (counted(w.observation, w.target, far) == w.visited).all()
    by_observation = counted(w.observation, w.target)
    assert by_observation[w.visited].all() and (by_observation & ~w.visited).any()
    for b in range(8):  # each counted target was seen at this step or before
        for t in np.flatnonzero(by_observation[b]):
            assert w.target[b, t] in w.observation[b, :t + 1]


def test_a_log_reads_as_its_walks_the_last_step_unknown_unless_labelled(tmp_path):
    w = walks(Grid(), 3, 50, np.random.default_rng(2))
    _, plain = read_walks(str(_write(tmp_path / "a.csv", w)))
    _, labelled = read_walks(str(_write(tmp_path / "b.csv", w, places=True, labels=True)))
    for b in range(3):
        assert plain[b].key == f"walk{b}" and plain[b].place is None
        np.testing.assert_array_equal(plain[b].target[:-1], w.target[b, :-1])
        assert plain[b].target[-1] == -1  # nobody saw where the last action led
        np.testing.assert_array_equal(labelled[b].target, w.target[b])
        np.testing.assert_array_equal(labelled[b].place, w.place[b, :-1])


def test_windows_are_steps_of_the_walks_counted_from_their_own_start():
    """A window starts from reset (memory empty): a place counts only if the window itself
    stood there before, not the walk before the window."""
    w = walks(Grid(), 4, 120, np.random.default_rng(3))
    logged = [Walk(b, w.observation[b], w.action[b], w.target[b], w.place[b, :-1])
              for b in range(4)]
    obs, act, tgt, mask = sample(logged, 32, 40, np.random.default_rng(0))
    for row in range(32):
        b, lo = next((b, lo) for b in range(4) for lo in range(81)
                     if (w.observation[b, lo:lo + 40] == obs[row]).all()
                     and (w.action[b, lo:lo + 40] == act[row]).all())
        np.testing.assert_array_equal(tgt[row], w.target[b, lo:lo + 40])
        seen, want = set(), []
        for t in range(40):
            seen.add(w.place[b, lo + t])
            want.append(w.place[b, lo + t + 1] in seen)
        np.testing.assert_array_equal(mask[row], want)


def test_relabelled_windows_are_the_same_walks_in_new_environments():
    """Each window's observation ids permuted, the same permutation for its targets: the
    steps that count and the structure are unchanged, the identities are new."""
    from wavedge.models.walk_logs import relabel

    w = walks(Grid(), 16, 60, np.random.default_rng(7))
    target = w.target.copy()
    target[:, -1] = -1  # unknown stays unknown
    obs, tgt = relabel(w.observation, target, 45, np.random.default_rng(0))
    assert (tgt == -1).sum() == 16 and (tgt[:, -1] == -1).all()
    for b in range(16):
        mapping = dict(zip(w.observation[b], obs[b])) | dict(zip(target[b], tgt[b]))
        mapping.pop(-1)
        assert len(set(mapping.values())) == len(mapping)  # one to one
        assert all(mapping[o] == n for o, n in zip(w.observation[b], obs[b]))
    assert (counted(obs, tgt) == counted(w.observation, target)).all()
    assert (obs != w.observation).mean() > 0.9


@pytest.mark.parametrize("task, says", [("grid_walks", "grid_walks: draws a new environment"),
                                        ("digits", "digits: relabel permutes logged walks'")])
def test_relabel_is_refused_where_there_are_no_logged_walks(task, says):
    from dataclasses import replace

    from wavedge.errors import InputError
    from wavedge.models.train import default_recipe, train

    recipe = replace(default_recipe(task, "tem_t" if task == "grid_walks" else "gru"),
                     relabel=True)
    with pytest.raises(InputError, match=says):
        train(recipe, progress=False)


def test_short_walks_are_padded_with_steps_that_never_count():
    w = Walk("a", np.array([1, 2, 1]), np.array([0, 1, 3]), np.array([2, 1, 2]), None)
    obs, act, tgt, mask = walk_arrays([w], [(0, 3)], 6)
    assert tgt[0].tolist() == [2, 1, 2, -1, -1, -1]
    assert mask[0].tolist() == [False, True, True, False, False, False]


def test_train_export_and_run_on_a_users_walks_from_the_command_line(tmp_path):
    """The path a user takes: train on a log (no places, no labels), export (checked against
    the walks training held out, with their labels written out), replay the log."""
    from conftest import assert_one_line_error, run_cli

    w = walks(Grid(4, 3, observations=9), 12, 80, np.random.default_rng(4))
    log, ckpt, d = _write(tmp_path / "robot.csv", w), tmp_path / "tem.pt", tmp_path / "model"
    proc = run_cli("train", "--arch", "tem_t", "--data", log, "--epochs", "1", "--window",
                   "40", "--quiet", "--config", '{"memory": 64, "d_position": 16, "d_key": 16}',
                   "--out", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "counted steps of 3 held-out walks (steps whose next observation" in proc.stdout
    assert "; chance 0.111)" in proc.stdout  # 9 observation ids, read from the log
    proc = run_cli("export", ckpt, "--out", d, "--recording")
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((d / "manifest.json").read_text())
    assert raw["training"]["task"] == "walks"
    assert raw["quality"]["task"] == "robot.csv: 3 walk(s) held out"
    assert raw["signature"]["inputs"][1]["range"] == [0, 5]
    rows = (d / "recording.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 80
    assert rows[80].split(",")[1] == ""  # the first walk's last step: its label unknown
    proc = run_cli("run", d, "--source", "replay:", "--sink", "null:")
    assert proc.returncode == 0, proc.stderr
    # 240 steps, 3 with no label to score (each walk's last: they had been scored as wrong)
    assert "of 237 samples" in proc.stderr and "at the last sample" not in proc.stderr
    with log.open("a") as f:  # the held-out walks are no longer what training held out
        f.write("walk0,1,2\n")
    assert_one_line_error(run_cli("export", ckpt, "--out", tmp_path / "again"),
                          "robot.csv, which has changed since")


@pytest.mark.parametrize("header, rows, flags, says", [
    ("sequence,observation", ["a,1"], [], "no column 'action'"),
    ("sequence,observation,action,speed", ["a,1,2,0.5"], [],
     "column(s) 'speed' are not a walk's"),
    ("sequence,observation,action", ["a,1,2", "a,1.5,2"], [],
     "walk a, step 2: observation 1.5 is not an id"),
    ("sequence,observation,action", ["a,1,-2"], [], "walk a, step 1: action -2 is not an id"),
    ("sequence,observation,action,label", ["a,1,2,x"], [],
     "walk a, step 1: label 'x' is not an observation id"),
    ("observation,action", ["1,2", "2,1", "1,0"], [], "one walk only"),
    ("sequence,observation,action", ["a,1,2", "a,2,1", "a,1,0", "b,1,2", "b,2,1", "b,1,0"],
     ["--config", '{"observations": 2}'], "--config observations 2: the walks hold ids up to 2"),
    ("sequence,observation,action", ["a,1,2", "a,2,1", "a,1,0", "b,1,2", "b,2,1", "b,1,0"],
     ["--window", "4"], "--window 4 is longer than the longest training walk (3 steps)"),
    ("sequence,observation,action", ["a,0,1", "a,1,1", "a,2,1", "a,3,1", "a,0,1", "b,0,1",
                                     "b,1,1", "b,2,1", "b,3,1", "b,0,1"],
     ["--window", "2"], "held no step a memory of the window could know"),
    ("sequence,observation,action", ["a,1,2"], ["--arch", "mpl"],
     "--data: no recipe trains 'mpl' on your own data"),
])
def test_a_log_that_is_not_a_walks_is_refused_in_one_line(tmp_path, header, rows, flags, says):
    from conftest import assert_one_line_error, run_cli

    log, out = tmp_path / "log.csv", tmp_path / "tem.pt"
    log.write_text("\n".join([header, *rows]) + "\n")
    arch = [] if "--arch" in flags else ["--arch", "tem_t"]
    assert_one_line_error(run_cli("train", *arch, "--data", log, "--quiet", "--out", out,
                                  *flags), says)
    assert not out.exists()


def test_the_walks_task_needs_a_log(tmp_path):
    from conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("train", "--task", "walks", "--arch", "tem_t", "--out",
                                  tmp_path / "t.pt"), "walks: trains on your logged walks")


def test_a_grid_trained_model_is_checked_against_a_log_given_to_export(tmp_path):
    """``wavedge export --data walks.csv`` for a TEM-t checkpoint: the log's walks, not a
    classifier's recordings (which had refused a model of two inputs); an id beyond the
    model's range is named."""
    from conftest import assert_one_line_error, run_cli

    from wavedge.models import TEMTransformer
    from wavedge.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = TEMTransformer(memory=32, d_position=8, d_key=8)
    ckpt = save_checkpoint(tmp_path / "grid.pt", model, {"task": "grid_walks"})
    w = walks(Grid(), 2, 60, np.random.default_rng(6))
    log = _write(tmp_path / "log.csv", w)
    proc = run_cli("export", ckpt, "--out", tmp_path / "m", "--data", log, "--reset",
                   "recording")
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert raw["quality"]["task"] == "log.csv: 2 walk(s)"
    task = data_task(str(log), model.signature)
    assert [len(r["observation"]) for r in task.held_out] == [60, 60]
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,observation,action\na,3,1\na,45,2\n")
    assert_one_line_error(run_cli("export", ckpt, "--out", tmp_path / "m2", "--data", bad),
                          "bad.csv, walk a, step 2: observation 45 is beyond the model's "
                          "range [0, 45)")
