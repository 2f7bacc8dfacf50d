"""The meta predictive learning model (spike-and-slab RNN): its mean-field moments against
sampled weights, the step contract with the noise as an input, predictive coding against BPTT,
and the toy language task."""

from __future__ import annotations

from conftest import skip_module_without_torch

skip_module_without_torch()

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from wavedge.errors import InputError  # noqa: E402

from wavedge.models import paper_mpl as mpl  # noqa: E402
from wavedge.models.mpl import MetaPredictive, SpikeSlab  # noqa: E402


def test_mean_field_moments_match_sampled_spike_and_slab_weights():
    """Draw the weights themselves (0 with probability pi, else the slab N(m / (n (1 - pi)),
    xi / (n (1 - pi)))), many times: the pre-activation's mean and variance are the layer's."""
    torch.manual_seed(0)
    n_in, n_out, draws = 40, 3, 200_000
    layer = SpikeSlab(n_out, n_in, torch.randn(n_out, n_in) * n_in * 0.3, 0.5)
    x = torch.randn(n_in)
    pi, m, xi = layer.pi.detach(), layer.m.detach(), layer.xi.detach()
    slab_mean = m / (n_in * (1 - pi))
    slab_std = torch.sqrt(xi / (n_in * (1 - pi)))
    keep = torch.rand(draws, n_out, n_in) >= pi
    w = keep * (slab_mean + slab_std * torch.randn(draws, n_out, n_in))
    a = w @ x
    mu, var = layer.moments()
    torch.testing.assert_close(a.mean(0), (mu @ x).detach(), atol=0.02, rtol=0.01)
    torch.testing.assert_close(a.var(0), (var @ (x * x)).detach(), atol=0.02, rtol=0.02)


def test_step_equals_sequence_and_zero_noise_is_the_mean_network():
    torch.manual_seed(1)
    model = MetaPredictive(output_size=7, hidden_size=16, vocab=7).eval()
    with torch.no_grad():
        model.w_rec.m.mul_(0.6)  # 100 steps of an identity ReLU recurrence would grow
    x = torch.randint(0, 7, (2, 100, 1))
    noise = torch.randn(2, 100, 16 + 7)
    with torch.no_grad():
        y_seq, v_seq, h_seq = model.sequence(x, noise, *model.init_state(2))
        h = model.init_state(2)[0]
        ys = []
        for t in range(100):
            y, v, h = model.step(x[:, t], noise[:, t], h)
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), y_seq)
        torch.testing.assert_close(h, h_seq)
        mean_a = model(x, torch.zeros_like(noise))[0]
        mean_b = model(x, torch.zeros_like(noise))[0]
        noisy = model(x, noise)[0]
    assert torch.equal(mean_a, mean_b) and not torch.allclose(mean_a, noisy)
    assert (v_seq >= 0).all()
    sig = model.signature
    assert [i.name for i in sig.inputs] == ["x", "noise"] and sig.inputs[0].range == (0, 7)
    assert [(o.name, o.kind) for o in sig.outputs] == [("y", "class_scores"),
                                                        ("y_var", "variance")]


def test_predictive_coding_at_a_small_nudge_gives_the_bptt_gradient():
    """At the beliefs' equilibrium with the output's pull ``nudge`` small, the local update
    (the energy's gradient at the relaxed beliefs) over the nudge is the BPTT gradient: the
    energy, inference and learning are wired as the method says."""
    torch.manual_seed(0)
    with torch.autograd.set_grad_enabled(True):
        model = MetaPredictive(output_size=6, hidden_size=12, vocab=6).double()
        with torch.no_grad():
            model.w_rec.m.mul_(0.5)
        x, y = torch.randint(0, 6, (3, 4, 1)), torch.randint(0, 6, (3, 4))
        eps_h = torch.zeros(3, 4, 12, dtype=torch.float64)
        eps_z = torch.zeros(3, 4, 6, dtype=torch.float64)
        params = [model.w_in.m, model.w_rec.m, model.w_out.m]
        logits = model.readout(mpl.free_run(model, x, eps_h), eps_z)[0]
        bptt = torch.autograd.grad(torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="sum"), params)
        nudge = 1e-3
        recipe = mpl.Recipe(inference="sgd", eta=0.2, inference_steps=800, nudge=nudge)
        beliefs = mpl.infer(model, x, y, eps_h, eps_z, recipe)
        pc = torch.autograd.grad(mpl.energy(model, x, y, beliefs, eps_h, eps_z, None, nudge),
                                 params)
    for a, b in zip(pc, bptt):
        cos = float((a * b).sum() / (a.norm() * b.norm()))
        assert cos > 0.999 and abs(float(a.norm() / nudge / b.norm()) - 1) < 0.01


def test_a_batch_from_a_given_state_trains_by_backprop_and_is_refused_by_predictive_coding():
    """A task may start a batch from a state (TEM-t's walks do); backprop trains from it,
    predictive coding's beliefs relax from reset only, so it says so rather than ignore it."""
    torch.manual_seed(0)
    model = MetaPredictive(output_size=6, hidden_size=12, vocab=6)
    x, y = torch.randint(0, 6, (3, 4, 1)), torch.randint(0, 6, (3, 4))
    mask = torch.ones(3, 4, dtype=torch.bool)
    state = tuple(torch.randn_like(s) for s in model.init_state(3))
    with torch.no_grad():
        assert float(model.training_loss(x, y, mask, state=state)) != pytest.approx(
            float(model.training_loss(x, y, mask)))
    with pytest.raises(InputError, match="from reset, not from a given state"):
        model.training_loss(x, y, mask, "pc", state=state)


def test_the_toy_language_and_its_rule_accuracy():
    seqs = mpl.toy_sequences()
    assert seqs.shape == (26 * 2 ** 10, 11) and len({tuple(s) for s in seqs}) == len(seqs)
    steps = (np.diff(seqs, axis=1) % 26)
    assert set(np.unique(steps)) == {2, 4}
    assert mpl.rule_accuracy(torch.from_numpy(seqs[:50])) == 1.0
    assert mpl.rule_accuracy(torch.zeros(3, 11, dtype=torch.long)) == 0.0


def test_bptt_learns_the_rule_from_ten_sequences():
    run = mpl.toy_run(0.1, 0, "bptt", mpl.Recipe(epochs=100))
    assert run["sequences"] == 10
    assert run["rule_accuracy"] > 0.8 and run["rule_accuracy_mean_network"] > 0.8, run
    assert set(run["determinism"]) == {"input", "recurrent", "readout"}


def test_predictive_coding_learns_the_rule_from_five_sequences():
    """The local rule, beliefs relaxed to equilibrium (L-BFGS, nudge 0.01): far above chance
    (2/26), where the authors' 100 belief steps at nudge 1 stay near it (docs/paper-mpl.md)."""
    run = mpl.toy_run(0.05, 0, "pc", mpl.Recipe())
    assert run["sequences"] == 5 and run["rule_accuracy_mean_network"] > 0.6, run


def _trained_toy_model() -> MetaPredictive:
    """BPTT on ten sequences (1.5 s): a model that stays bounded on long streams."""
    seqs = torch.from_numpy(mpl.toy_sequences()[np.random.default_rng(0).choice(26 * 1024, 10)])
    torch.manual_seed(0)
    model = MetaPredictive(output_size=26, hidden_size=100, vocab=26)
    mpl.train(model, seqs[:, :-1, None], seqs[:, 1:], mpl.Recipe(), "bptt", 0)
    return model.annotate(labels=[chr(97 + i) for i in range(26)]).eval()


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    from wavedge.export import ExportOptions, export_model_dir

    # trained on 10-step sentences from reset, it generates from reset: the check stream is
    # reset as often (every 32 steps, a chunk); never reset, its state grows past step 100
    model = _trained_toy_model()
    path = tmp_path_factory.mktemp("mpl") / "mpl"
    options = ExportOptions(reset="every:32")
    return model, path, json.loads(export_model_dir(model, path, options).read_text())


def test_exported_mean_network_generates_the_rule_on_onnx_runtime_with_its_variance(toy_dir):
    """Exported through the family seam with no code of its own: the step and chunk graphs
    equal torch over a 2,048-step stream of random tokens and noise (reset every 32); streamed torch-free, the
    noise left to the stream (zeros: the mean network), from each letter it generates the same
    letters as torch, and every result carries the logits' variance."""
    from wavedge.runtime import load_model

    model, path, manifest = toy_dir
    for f in manifest["files"]:
        if f["graph"] in ("step", "chunk"):
            assert f["error_vs_torch"]["error"] < 1e-4 and f["error_vs_torch"]["steps"] == 2048
    want = mpl.generate(model, torch.arange(26), 10, False, torch.Generator())
    streamed = []
    for first in range(26):
        stream, tok, row = load_model(path).stream(), first, [first]
        for _ in range(10):
            r = stream.push(np.array([tok]))
            tok = r.class_id
            row.append(tok)
        rec = r.record()
        assert len(rec["logit_variance"]) == 26 and min(rec["logit_variance"]) >= 0
        streamed.append(row)
    assert torch.equal(torch.tensor(streamed), want)
    assert mpl.rule_accuracy(want) > 0.8


def test_the_stream_fills_the_noise_zero_or_seeded_and_a_sample_may_carry_it(toy_dir):
    """noise='zero' is the mean network (the same as pushing zeros); noise='sample' draws from
    its seed (the same seed, the same stream; another seed, another), equal to pushing those
    draws by hand and to torch's step with them; push_chunk draws what push would."""
    from wavedge.runtime import load_model

    model, path, _ = toy_dir
    m = load_model(path)
    toks = np.random.default_rng(1).integers(0, 26, (40, 1))
    zero = m.stream().push_chunk(toks).values[0]
    explicit = m.stream().push_chunk({"x": toks, "noise": np.zeros((40, 126), np.float32)})
    np.testing.assert_array_equal(zero, explicit.values[0])

    def sampled(seed, chunk=False):
        s = m.stream(noise="sample", seed=seed)
        if chunk:
            return s.push_chunk(toks).values[0]
        return np.stack([s.push(t).values[0] for t in toks])

    a, b = sampled(7), sampled(7)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - sampled(8)).max() > 1e-3 and np.abs(a - zero).max() > 1e-3
    np.testing.assert_allclose(sampled(7, chunk=True), a, atol=1e-5)
    draws = np.random.default_rng(7).standard_normal((40, 126), np.float32)
    by_hand = m.stream()
    np.testing.assert_array_equal(
        np.stack([by_hand.push({"x": t, "noise": d}).values[0] for t, d in zip(toks, draws)]), a)
    with torch.no_grad():
        ref = model(torch.from_numpy(toks)[None], torch.from_numpy(draws)[None])[0][0].numpy()
    np.testing.assert_allclose(a, ref, atol=1e-4)
    with pytest.raises(InputError, match="noise 'gauss' is not one of zero, sample"):
        m.stream(noise="gauss")


def test_a_checkpoint_round_trips_and_exports_from_the_command_line(tmp_path):
    from conftest import run_cli
    from wavedge.models.checkpoint import load_checkpoint, save_checkpoint

    model = _trained_toy_model()
    letters = [chr(97 + i) for i in range(26)]
    path = save_checkpoint(tmp_path / "mpl.pt", model, {"labels": letters})
    back = load_checkpoint(path).model
    x, noise = torch.randint(0, 26, (2, 30, 1)), torch.randn(2, 30, 100 + 26)
    with torch.no_grad():
        torch.testing.assert_close(back(x, noise)[0], model(x, noise)[0])
    assert back.signature.outputs[0].labels == tuple(letters)
    proc = run_cli("export", path, "--out", tmp_path / "dir", "--reset", "every:32")
    assert proc.returncode == 0, proc.stderr
    shown = run_cli("inspect", tmp_path / "dir").stdout
    assert "input:  noise float32" in shown and "variance in y_var" in shown


def test_int8_onnx_keeps_the_variance_path_float():
    """The family's policy: the three matmuls of squared activations (input, recurrent and
    readout variances) take float operands in the bundled int8 graph; every other matmul is
    quantised (its weight comes through a DequantizeLinear)."""
    import onnx

    from conftest import BUNDLED_MPL
    from wavedge.export.quantize import _variance_matmuls

    assert len(_variance_matmuls(BUNDLED_MPL / "model.step.onnx")) == 3
    graph = onnx.load(str(BUNDLED_MPL / "model.step.int8.onnx")).graph
    made_by = {o: n for n in graph.node for o in n.output}
    kinds = []
    for n in graph.node:
        if n.op_type == "MatMul":
            squared = made_by[n.input[0]].op_type == "Mul"
            dequantised = made_by.get(n.input[1]) is not None and \
                made_by[n.input[1]].op_type == "DequantizeLinear"
            kinds.append((squared, dequantised))
    assert sorted(kinds) == [(False, True)] * 3 + [(True, False)] * 3


def test_calibration_resets_where_the_model_does():
    """A model trained from reset calibrates on states it reaches from reset: the reader
    resets at each recording under the policy 'recording', and carries the state without."""
    from conftest import BUNDLED_MPL
    from wavedge.export.quantize import StreamCalibrationReader
    from wavedge.manifest import load_manifest
    from wavedge.models.data import load_dataset
    from wavedge.resets import ResetPolicy

    sig = load_manifest(BUNDLED_MPL).signature
    recs = [sig.with_noise({"x": x}, k) for k, x in enumerate(load_dataset("digit_rows").x_test[:6])]

    def states(policy):
        reader = StreamCalibrationReader(BUNDLED_MPL / "model.step.onnx", sig, recs, 1,
                                         passes=1, stride=1, policy=policy)
        return [np.abs(f["state_in.h"]).max() for f in reader]

    reset, carried = states(ResetPolicy(recording=True)), states(ResetPolicy())
    assert len(reset) == len(carried) == 48
    assert all(reset[i] == 0 for i in range(0, 48, 8))
    assert all(carried[i] > 0 for i in range(8, 48, 8))


def test_cli_trains_it_by_predictive_coding_and_refuses_pc_for_other_families(tmp_path):
    from conftest import assert_one_line_error, run_cli
    from wavedge.models.checkpoint import load_checkpoint

    out = tmp_path / "mpl.pt"
    proc = run_cli("train", "--task", "digit_rows", "--arch", "mpl", "--epochs", "2",
                   "--quiet", "--out", out)
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(out, expect_arch="mpl")
    assert ckpt.meta["recipe"]["learning"] == "pc"
    assert ckpt.meta["metrics"]["test_accuracy"] > 0.5  # 2 epochs; 10 reach 0.87-0.90
    bad = run_cli("train", "--task", "digit_rows", "--arch", "irnn", "--learning", "pc",
                  "--out", tmp_path / "x.pt")
    assert_one_line_error(bad, "no recipe for task 'digit_rows' with arch 'irnn'")
    bad = run_cli("train", "--task", "digits", "--arch", "irnn", "--learning", "pc",
                  "--epochs", "1", "--quiet", "--out", tmp_path / "x.pt")
    assert_one_line_error(bad, "irnn: learns by backprop only, not 'pc'")


def test_tflite_and_int8_exports_equal_torch_over_long_streams(tmp_path):
    """Needs the tflite extra (litert-torch: `make bundle-mpl` builds .venv-tflite). The bundled
    checkpoint to TFLite, fp32 and int8: fp32 step and chunk graphs equal torch over 2,048 steps
    with drawn noise; the full-integer step graph is recorded, says its variance is int16, and
    keeps the mean network's accuracy within the gate."""
    pytest.importorskip("litert_torch")
    from conftest import BUNDLED_MPL
    from wavedge.export import ExportOptions, export_model_dir
    from wavedge.manifest import load_manifest
    from wavedge.models.checkpoint import load_checkpoint

    out = tmp_path / "tfl"
    export_model_dir(load_checkpoint(BUNDLED_MPL.with_suffix(".pt")), out, ExportOptions(
        chunk_samples=8, formats=("tflite",), precisions=("fp32", "int8")))
    raw = load_manifest(out).raw
    files = {f["path"]: f for f in raw["files"]}
    for name in ("model.step.tflite", "model.chunk.tflite"):
        assert files[name]["error_vs_torch"]["error"] <= 1e-5
        assert files[name]["error_vs_torch"]["steps"] == 2048
    int8 = files["model.step.int8.tflite"]
    assert "full-integer" in int8["quantisation"]["variance"]
    assert int8["accuracy"]["drop_points"] <= 1.0
