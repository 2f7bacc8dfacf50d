"""TEM-t (``wavedge.models.tem``) and its grid world (``wavedge.models.gridworld``): the walks'
masks, the step contract with a memory that wraps, a hand-built path integrator that knows
every place it has been (and, with its moves scrambled, does not), and the family end to end:
trained and exported from the command line, streamed from a CSV of (observation, action)
rows by ``wavedge run``."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch

from wavedge.export.model_dir import ExportOptions, export_model_dir
from wavedge.export.quantize import QuantOptions
from wavedge.models import TEMTransformer
from wavedge.models.gridworld import ACTIONS, MOVES, Grid, task, walks
from wavedge.runtime import available, load_model

BACKENDS = [b for b in ("onnxruntime", "litert") if available().get(b)]
HAS_CONVERTER = importlib.util.find_spec("litert_torch") is not None
CLI = [sys.executable, "-m", "wavedge.cli"]


def test_walks_keep_to_the_grid_and_mark_visited_and_zero_shot_steps():
    grid = Grid(4, 3)
    w = walks(grid, 6, 300, np.random.default_rng(0))
    nb = grid.neighbours()
    assert nb[0, ACTIONS.index("north")] == -1 and nb[0, ACTIONS.index("east")] == 1
    for b in range(6):
        seen, taken, place = set(), set(), w.place[b]
        for t, a in enumerate(w.action[b]):
            assert nb[place[t], a] == place[t + 1] >= 0  # never through a wall
            seen.add(place[t])
            assert w.visited[b, t] == (place[t + 1] in seen)
            zero = w.visited[b, t] and (place[t], a) not in taken and ACTIONS[a] != "stay"
            assert w.zero_shot[b, t] == zero
            taken.add((place[t], a))
    assert w.zero_shot.any() and (w.visited & ~w.zero_shot).any()
    assert (w.target[:, :-1] == w.observation[:, 1:]).all()


def _model(memory=8, **config) -> TEMTransformer:
    torch.manual_seed(0)
    model = TEMTransformer(observations=7, actions=5, d_position=12, d_key=10, d_value=6,
                           hidden=8, memory=memory, **config)
    return model.eval()


@pytest.mark.parametrize("path_integration", [True, False])
def test_steps_equal_sequence_in_blocks_with_a_memory_that_wraps(path_integration):
    model = _model(path_integration=path_integration)
    model.BLOCK = 16  # 300 samples: many blocks, and the 8-slot memory wraps many times
    rng = np.random.default_rng(1)
    obs = torch.from_numpy(rng.integers(0, 7, (2, 300, 1)))
    act = torch.from_numpy(rng.integers(0, 5, (2, 300, 1)))
    with torch.no_grad():
        state = model.init_state(2)
        ys = []
        for t in range(300):
            y, *state = model.step(obs[:, t], act[:, t], *state)
            ys.append(y)
        y_seq, *s_seq = model.sequence(obs, act, *model.init_state(2))
        y_a, *s_half = model.sequence(obs[:, :111], act[:, :111], *model.init_state(2))
        y_b, *s_half = model.sequence(obs[:, 111:], act[:, 111:], *s_half)
    torch.testing.assert_close(torch.stack(ys, 1), y_seq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_seq, atol=1e-5, rtol=1e-5)
    for a, b, c in zip(state, s_seq, s_half):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-5)


def test_the_memory_holds_the_last_places_and_the_position_stays_bounded():
    """After 5 steps 5 slots are filled, the newest last; after 20, all 8 hold the last 8
    observations in order; 20,000 steps later the position code is still of unit size (a
    stream that never resets must not grow)."""
    model = _model()
    obs = torch.arange(20).remainder(7).view(1, 20, 1)
    act = torch.ones(1, 20, 1, dtype=torch.int64)
    with torch.no_grad():
        _, e, keys, values, filled = model.sequence(obs[:, :5], act[:, :5], *model.init_state(1))
        assert filled.tolist() == [[0.0] * 3 + [1.0] * 5]
        _, e, keys, values, filled = model.sequence(obs, act, *model.init_state(1))
        assert filled.min() == 1.0
        torch.testing.assert_close(values[0], model.embed(obs[0, -8:, 0]))
        long = torch.from_numpy(np.random.default_rng(2).integers(0, 5, (1, 20_000, 1)))
        _, e, *_ = model.sequence(long.remainder(7), long, *model.init_state(1))
    assert torch.isfinite(e).all()
    assert e.pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=1e-3)


def test_a_sequence_runs_from_a_given_state_and_a_wandered_one_has_only_moved():
    """Training starts batches from a state (``StepModel.scores(..., state=)``); TEM-t's
    wandered state is reset's with the position moved, as the steps move it, memory empty."""
    model = _model()
    rng = np.random.default_rng(4)
    act = torch.from_numpy(rng.integers(0, 5, (2, 30, 1)))
    obs = act.remainder(7)
    with torch.no_grad():
        start = model.wandered(act)
        state = model.init_state(2)
        for t in range(30):
            _, *state = model.step(obs[:, t], act[:, t], *state)
        torch.testing.assert_close(start[0], state[0], atol=1e-6, rtol=1e-6)
        for got, reset in zip(start[1:], model.init_state(2)[1:]):
            assert torch.equal(got, reset)
        from_start = model.scores(obs, act, state=start)
        torch.testing.assert_close(from_start, model.sequence(obs, act, *start)[0])
        assert not torch.allclose(from_start, model.scores(obs, act))


def test_training_starts_half_its_batches_from_a_code_a_long_walk_has_moved(monkeypatch):
    """Trained from reset alone, the position code drifts on a stream of thousands of steps
    until places alias (docs/tem.md); so about half the batches start from the code up to
    ``WANDER`` moves on the grid leave, in a new environment (memory empty)."""
    from dataclasses import replace

    from wavedge.models.gridworld import train
    from wavedge.models.train import default_recipe

    starts = []
    real = TEMTransformer.training_loss

    def spy(self, x, y, mask, learning="backprop", gen=None, state=None):
        starts.append(state)
        return real(self, x, y, mask, learning, gen, state)

    monkeypatch.setattr(TEMTransformer, "training_loss", spy)
    recipe = replace(default_recipe("grid_walks", "tem_t"), epochs=1, window=10,
                     model={"memory": 16, "d_position": 8, "d_key": 8})
    model, _ = train(recipe, None, False, torch.device("cpu"))
    wandered = [s for s in starts if s is not None]
    assert len(starts) == 50 and 12 <= len(wandered) <= 38
    reset = model.init_state(16)
    for position, *memory in wandered:
        assert position.shape == reset[0].shape and not torch.allclose(position, reset[0])
        assert all(torch.equal(m, r) for m, r in zip(memory, reset[1:]))


def _path_integrator(grid: Grid, scrambled: bool = False) -> TEMTransformer:
    """TEM-t by hand: positions one-hot on a torus of the grid's size (a walk's displacements
    are the same there, and it has no walls), each action the permutation that moves it, keys
    the positions, values the observations one-hot, attention sharp: it predicts every place
    it has seen, from any start. ``scrambled``: north moves as east does (a mirror image,
    north and south swapped, would integrate paths as well as the real moves)."""
    w, h, n = grid.width, grid.height, grid.places
    model = TEMTransformer(grid.observations, len(ACTIONS), d_position=n, d_key=n,
                           d_value=grid.observations, hidden=grid.observations, memory=512)
    moves = list(MOVES)
    if scrambled:
        moves[ACTIONS.index("north")] = moves[ACTIONS.index("east")]
    with torch.no_grad():
        model.transition.zero_()
        for a, (dx, dy) in enumerate(moves):
            for p in range(n):
                x, y = p % w, p // w
                model.transition[a, p, ((y + dy) % h) * w + (x + dx) % w] = 1.0
        model.start.copy_(torch.nn.functional.one_hot(torch.tensor(0), n).float())
        model.key.weight.copy_(torch.eye(n))
        model.embed.weight.copy_(torch.eye(grid.observations))
        model.log_beta.fill_(np.log(10.0))
        for layer in (model.readout[0], model.readout[2]):
            layer.weight.copy_(torch.eye(grid.observations))
            layer.bias.zero_()
    return model.eval()


def test_a_path_integrator_is_right_on_every_zero_shot_step_and_scrambled_moves_are_not():
    grid = Grid()
    w = walks(grid, 16, 400, np.random.default_rng(3))
    scores = {}
    for scrambled in (False, True):
        with torch.no_grad():
            y = _path_integrator(grid, scrambled).scores(*w.inputs()).argmax(-1).numpy()
        scores[scrambled] = (y == w.target)[w.zero_shot].mean()
    assert scores[False] == 1.0
    assert scores[True] < 0.5


@pytest.fixture(scope="module")
def integrator_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tem") / "model"
    fmts = ("onnx", "tflite") if HAS_CONVERTER else ("onnx",)
    export_model_dir(_path_integrator(Grid()), d, ExportOptions(formats=fmts, reset="recording"),
                     task=task({}))  # a new environment per walk
    return d


def test_export_checks_the_walks_task_and_integer_inputs(integrator_dir):
    raw = json.loads((integrator_dir / "manifest.json").read_text())
    assert raw["quality"]["torch_fp32"] == 1.0 and "visited before" in raw["quality"]["metric"]
    assert [(i["name"], i["dtype"], i["range"]) for i in raw["signature"]["inputs"]] == [
        ("observation", "int64", [0, 45]), ("action", "int64", [0, 5])]
    for f in raw["files"]:
        if f["graph"] != "identity":
            assert f["accuracy"]["test"] == 1.0, f["path"]
            assert f["error_vs_torch"]["error"] <= raw["check"]["tolerance"] == 1e-4


def test_the_same_seed_trains_the_same_model_on_two_threads():
    """A user retraining with the same seed gets the same weights: the moves' gradient had
    accumulated in an order that varied from run to run on 2 threads."""
    from dataclasses import replace

    from wavedge.models.gridworld import train
    from wavedge.models.train import default_recipe

    recipe = replace(default_recipe("grid_walks", "tem_t"), epochs=1, window=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = (train(recipe, None, False, torch.device("cpu"))[0] for _ in range(2))
    finally:
        torch.set_num_threads(threads)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.skipif(not HAS_CONVERTER, reason="TFLite export needs litert-torch")
def test_int8_tflite_keeps_a_sharp_attention(tmp_path):
    """A sharp softmax leaves other slots weights of one int16 step (about 3e-5); LiteRT's
    int16 DIV returned its maximum for such a numerator, so every faint slot weighed 1 and
    the trained default lost 12 points. The weights are now the exponentials times the sum's
    reciprocal."""
    model = _path_integrator(Grid())
    with torch.no_grad():
        # keys are z-scored one-hots: another place scores 26 below the match, times the
        # scale 2 / sqrt(25): exp(-10.4) = 3e-5 of the match's weight, one int16 step
        model.log_beta.fill_(np.log(2.0))
    d = tmp_path / "model"
    export_model_dir(model, d, ExportOptions(formats=("tflite",), precisions=("fp32", "int8"),
                                             reset="recording", quant=QuantOptions(force=True)),
                     task=task({}))
    files = {f["path"]: f for f in json.loads((d / "manifest.json").read_text())["files"]}
    assert files["model.step.int8.tflite"]["accuracy"]["test"] == 1.0
    assert files["model.step.int8.tflite"]["error_vs_torch"]["argmax_agreement"] > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_takes_rows_dicts_and_chunks_and_refuses_a_move_out_of_range(
        integrator_dir, backend):
    if backend == "litert" and not HAS_CONVERTER:
        pytest.skip("TFLite export needs litert-torch")
    w = walks(Grid(), 1, 120, np.random.default_rng(4))
    with torch.no_grad():
        ref = _path_integrator(Grid()).scores(*w.inputs())[0].numpy()
    loaded = load_model(integrator_dir, backend)
    rows = np.stack([w.observation[0], w.action[0]], 1).astype(np.float32)  # as a CSV's
    stream = loaded.stream()
    got = np.stack([stream.push(r).logits for r in rows])
    np.testing.assert_allclose(got, ref, atol=1e-3)
    as_dicts = loaded.stream()
    same = [as_dicts.push({"observation": [o], "action": [a]}).logits
            for o, a in zip(w.observation[0], w.action[0])]
    np.testing.assert_array_equal(np.stack(same), got)
    chunk = loaded.stream().push_chunk({"observation": w.observation[0, :, None],
                                        "action": w.action[0, :, None]})
    np.testing.assert_allclose(chunk.outputs["next_observation"], ref, atol=1e-3)
    # numpy integers and 2-D values take the full check, Python numbers a shorter one: the same
    slow = loaded.stream()
    np.testing.assert_array_equal(np.stack([slow.push(
        {"observation": np.array([[o]]), "action": [np.int64(a)]}).logits
        for o, a in zip(w.observation[0], w.action[0])]), got)
    before = stream.state
    for bad in ([3, 7], [3, 1.5], [3, np.nan], [3, -1], [45, 1]):  # 1.5: not a whole action
        with pytest.raises(Exception, match=r"outside \[0, (5|45)\)"):
            stream.push(np.array(bad, np.float32))
    with pytest.raises(Exception, match="expected 1 values"):
        stream.push({"observation": 3, "action": [1]})  # a bare number, as before
    for a, b in zip(stream.state, before):  # nothing refused reached the state
        np.testing.assert_array_equal(a, b)
    assert stream.stats.dropped["out_of_range"] == 5


def test_wavedge_run_streams_a_csv_of_observations_and_actions(integrator_dir, tmp_path):
    w = walks(Grid(), 1, 300, np.random.default_rng(5))
    src, out = tmp_path / "walk.csv", tmp_path / "out.csv"
    with src.open("w") as f:
        f.write("observation,action,label\n")
        f.writelines(f"{o},{a},{t}\n" for o, a, t in zip(w.observation[0], w.action[0],
                                                         w.target[0]))
    proc = subprocess.run([*CLI, "run", str(integrator_dir), "--source", f"replay:{src}",
                           "--sink", f"csv:{out}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        got = np.array([int(r["class_id"]) for r in csv.DictReader(f)])
    hit = got == w.target[0]
    assert hit[w.visited[0]].all() and len(got) == 300
    assert f"agreement with truth: {hit.mean():.1%} of 300 samples" in proc.stderr


def test_train_and_export_from_the_command_line(tmp_path):
    """On a grid the task's options name (a 4x3 grid of 9 observations, not the 5x5 default):
    the model's ids, the metrics and the export's check walks are that grid's."""
    ckpt, d = tmp_path / "tem.pt", tmp_path / "model"
    proc = subprocess.run([*CLI, "train", "--task", "grid_walks?width=4&height=3&observations=9",
                           "--arch", "tem_t",
                           "--epochs", "1", "--window", "60", "--quiet", "--config",
                           '{"memory": 64, "d_position": 16, "d_key": 16}', "--out",
                           str(ckpt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "of next observations right on visited steps" in proc.stdout
    assert "on zero-shot steps (chance 0.111" in proc.stdout
    proc = subprocess.run([*CLI, "export", str(ckpt), "--out", str(d)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((d / "manifest.json").read_text())
    assert raw["training"]["task"] == "grid_walks"
    assert "zero" not in raw["training"]["metric"] and "visited" in raw["training"]["metric"]
    assert raw["quality"]["task"].startswith("8 walks of 400 steps on a 4x3 grid")
    assert raw["model"]["config"]["memory"] == 64 and raw["model"]["config"]["observations"] == 9
    assert raw["signature"]["inputs"][0]["range"] == [0, 9]


def test_bench_measures_it_and_says_its_push_runs_in_python(integrator_dir):
    """Two integer inputs take the Python push; the bench had said "push in C" for every
    model wherever the C module was built."""
    from wavedge.runtime.bench import BenchOptions, format_table, run_bench

    report = run_bench(integrator_dir, BenchOptions(samples=50, repeats=1, warmup=5,
                                                     window=4, backends=("onnxruntime",)))
    assert report["method"]["fast_path"] is False
    assert "push in Python" in format_table(report).splitlines()[0]
    assert report["configs"]["onnxruntime/fp32/chunk32"]["us_per_sample"]["p50"] > 0


@pytest.mark.parametrize("flags, says", [
    (["--reset", "never"], "it takes no --reset never"),
    (["--quant-aware-epochs", "2"], "it takes no --quant-aware-epochs"),
    (["--window", "1"], "--window (steps per training walk) must be at least 2"),
    (["--config", '{"observations": 9}'], "observations come from the grid world"),
    (["--seed", "10000"], "--seed must be below 10000"),
    (["--task", "grid_walks?size=7"], "no option size; a grid takes width, height,"),
    (["--task", "grid_walks?width=0"], "a grid needs a width and height of 1 or more"),
    (["--task", "grid_walks?width=2.5"], "width, height and observations are whole numbers"),
])
def test_train_refuses_what_the_walks_would_ignore(tmp_path, flags, says):
    """Each had been ignored without a word (the grid world trains walks from reset, in
    float), and a checkpoint written as if it had been honoured."""
    from conftest import assert_one_line_error, run_cli

    out = tmp_path / "tem.pt"
    task = [] if "--task" in flags else ["--task", "grid_walks"]
    proc = run_cli("train", *task, "--arch", "tem_t", "--quiet", "--out", out, *flags)
    assert_one_line_error(proc, says)
    assert not out.exists()


def test_a_dataset_task_refuses_options(tmp_path):
    """Only a generated task reads options after '?'; a bundled dataset would drop them."""
    from conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("train", "--task", "basic_motions?width=3", "--arch",
                                  "wave_rnn", "--out", tmp_path / "m.pt"),
                          "basic_motions is a dataset and takes no options after '?'")


def test_a_synthetic_sensor_is_refused_for_a_model_of_ids(integrator_dir):
    from conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("run", integrator_dir, "--source", "synthetic:imu"),
                          "synthetic:imu draws float sensor channels", "observation (int64)")


def test_the_paper_experiment_runs_both_conditions_and_writes_its_results(tmp_path,
                                                                          monkeypatch):
    """``make paper-tem``'s pieces at one epoch and a 1,000-step stream: each run's final
    metrics and TEM-t's long stream, summarised per condition beside the agents, merged from
    folders."""
    import wavedge.models.paper_tem as paper

    monkeypatch.setattr(paper, "LONG_STEPS", 1000)
    rows = [paper.run(0, pi, epochs=1) for pi in (False, True)]
    assert "long_stream" not in rows[0] and len(rows[1]["long_stream"]["visited_accuracy"]) == 4
    summary = paper._write(tmp_path / "a", rows, paper.PROFILES["quick"])
    assert summary["edge_agent_zero_shot"] == pytest.approx(1 / 45)
    assert summary["tem_t"]["seeds"] == [0] and summary["no_path_integration"]["seeds"] == [0]
    assert 0 <= summary["tem_t"]["zero_shot_mean"] <= 1
    merged = paper._merged([tmp_path / "a"])
    assert [(r["seed"], r["path_integration"]) for r in merged] == [(0, False), (0, True)]


def test_export_writes_its_walks_as_a_recording_that_run_replays(tmp_path):
    """``--recording`` had been refused for any model but one float input's: the held-out
    walks now go out as ``sequence,label,observation,action`` rows, each step's label its
    next observation, and ``wavedge run DIR --source replay:`` scores against them."""
    from conftest import run_cli

    d = tmp_path / "model"
    export_model_dir(_path_integrator(Grid()), d, ExportOptions(reset="recording",
                                                                recording=True),
                     task=task({}))
    held = task({})
    with (d / "recording.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sequence", "label", "observation", "action"] and len(rows) == 3200
    first = [r for r in rows if r["sequence"] == "0"]
    assert [int(r["label"]) for r in first] == held.labels(0)
    assert [int(r["action"]) for r in first] == held.held_out[0]["action"][:, 0].tolist()
    proc = run_cli("run", d, "--source", "replay:", "--sink", "null:")
    assert proc.returncode == 0, proc.stderr
    assert "resets: 7 (state reset at each recording boundary)" in proc.stderr
