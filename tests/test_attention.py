"""The residual attention stream family (``wavedge.models.attention``): its equations, its
finite memory, its sequence path against its steps on streams long enough to wrap the caches
many times, and the family end to end: trained from the command line, exported, streamed
alone and in a group, run and benched."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch

from wavedge.models import ResidualAttention, build_model
from wavedge.runtime import available, load_model

BACKENDS = [b for b in ("onnxruntime", "litert") if available().get(b)]
HAS_CONVERTER = importlib.util.find_spec("litert_torch") is not None
CLI = [sys.executable, "-m", "wavedge.cli"]


def _model(**config) -> ResidualAttention:
    torch.manual_seed(0)
    config = {"input_size": 3, "output_size": 4, "d_model": 16, "heads": 2, "layers": 2,
              "window": 5, **config}
    return build_model("residual_attention", **config).eval()


def _steps(model, x: torch.Tensor):
    state = model.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, *state = model.step(x[:, t], *state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("residual", [True, False])
def test_a_layers_cached_values_carry_the_layer_belows(residual):
    """The paper's change, v'_n = v_n + v_{n-1}: layer 1's cached values are its own
    projection plus layer 0's (raw) values; the baseline caches its own alone."""
    model = _model(value_residual=residual)
    x = torch.randn(1, 3)
    with torch.no_grad():
        _, k0, v0, k1, v1 = model.step(x, *model.init_state(1))
        h = model.embed(x)
        b0, b1 = model.blocks
        q0, k0_raw, v0_raw = b0.qkv(b0.ln1(h)).chunk(3, -1)

        def heads(z):  # [1, d] -> [1, H, 1, d_head]
            return b0.split(z[:, None])

        # layer 0 attends over 4 zero slots and this sample
        s = torch.cat([torch.zeros(1, 2, 1, 4),
                       heads(q0) @ heads(k0_raw).transpose(-1, -2) * model.scale], -1)
        o = torch.softmax(s + model.step_bias, -1)[..., -1:] @ heads(v0_raw)
        h1 = b0.finish(h, o)
        v1_own = b1.qkv(b1.ln1(h1)).chunk(3, -1)[2]
    newest = (slice(None), -1)  # [H, W, d_head]: every head's newest slot
    torch.testing.assert_close(v0[0][newest].reshape(-1), v0_raw[0])
    torch.testing.assert_close(v1[0][newest].reshape(-1),
                               v1_own[0] + (v0_raw[0] if residual else 0))
    assert torch.count_nonzero(v1[0][:, :-1]) == 0  # one sample in, the older slots zero


def test_a_stream_forgets_what_lies_past_its_receptive_field():
    """Each layer looks back window - 1 samples, so the output at t reads samples
    t - layers * (window - 1) .. t and none before: a board's stream needs no reset."""
    model = _model(window=5, layers=3)
    reach = 3 * (5 - 1)
    x = torch.randn(1, 40, 3)
    with torch.no_grad():
        y = model(x)
        for back, same in ((reach + 1, True), (reach, False)):
            x2 = x.clone()
            x2[0, 39 - back] += 3.0
            assert torch.equal(model(x2)[0, 39], y[0, 39]) is same, back


def test_a_long_stream_in_one_attention_equals_its_steps():
    """3000 samples in one attention, against 3000 steps: the later samples' keys, hidden
    from each query, had zeroed every visible weight (their negative ages made large biases,
    and the softmax's shift was their maximum)."""
    model = _model()
    model.BLOCK = 10 ** 6
    x = torch.randn(1, 3000, 3)
    with torch.no_grad():
        y_seq, *s_seq = model.sequence(x, *model.init_state(1))
        y_step, s_step = _steps(model, x)
    assert torch.isfinite(y_seq).all()
    torch.testing.assert_close(y_seq, y_step, atol=1e-5, rtol=1e-5)


def test_blocks_equal_one_call():
    """``sequence`` in blocks of 16 equals one call of 1000 samples, state and all."""
    model = _model()
    x = torch.randn(2, 1000, 3)
    with torch.no_grad():
        y_one, *s_one = model.sequence(x, *model.init_state(2))
        model.BLOCK = 16
        y_blocks, *s_blocks = model.sequence(x, *model.init_state(2))
    torch.testing.assert_close(y_blocks, y_one, atol=1e-5, rtol=1e-5)
    for a, b in zip(s_blocks, s_one):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config, message", [
    ({"d_model": 10, "heads": 3}, "d_model 10 is not a multiple of heads 3"),
    ({"window": 0}, "window"),
])
def test_a_size_it_cannot_take_is_one_line(config, message):
    from wavedge.errors import InputError

    with pytest.raises(InputError, match=message):
        build_model("residual_attention", input_size=3, output_size=2, **config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``wavedge train --arch residual_attention`` (a few epochs) and ``wavedge export``."""
    d = tmp_path_factory.mktemp("attention")
    ckpt, out = d / "ra.pt", d / "ra"
    fmt = "onnx,tflite" if HAS_CONVERTER else "onnx"
    for cmd in (["train", "--arch", "residual_attention", "--epochs", "6", "--quiet",
                 "--config", '{"d_model": 16, "window": 16}', "--out", ckpt],
                ["export", ckpt, "--out", out, "--recording", "--batch", "3", "--format", fmt,
                 "--precision", "fp32,int8", "--check-steps", "1000"]):
        proc = subprocess.run([*CLI, *map(str, cmd)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return ckpt, out


def test_the_manifest_declares_each_layers_keys_and_values(trained):
    raw = json.loads((trained[1] / "manifest.json").read_text())
    state = [(s["name"], s["shape"], s["dtype"]) for s in raw["signature"]["state"]]
    assert state == [("k0", [2, 8, 16], "float32"), ("v0", [2, 16, 8], "float32"),
                     ("k1", [2, 8, 16], "float32"), ("v1", [2, 16, 8], "float32")]
    for f in raw["files"]:
        if f["graph"] != "identity" and f["precision"] == "fp32":
            assert f["error_vs_torch"]["error"] <= 1e-5, f["path"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_exported_family_streams_as_torch_alone_and_in_a_group(trained, backend):
    from wavedge.models.checkpoint import load_checkpoint

    if backend == "litert" and not HAS_CONVERTER:
        pytest.skip("no TFLite graphs without litert-torch")
    ckpt, out = trained
    model = load_checkpoint(ckpt).model.eval()
    rec = np.loadtxt(out / "recording.csv", delimiter=",", skiprows=1, usecols=range(2, 8),
                     dtype=np.float32)[:90]
    loaded = load_model(out, backend)
    got = np.stack([r.values[0] for r in _pushed(loaded.stream(), rec)])
    sig = model.signature.inputs[0].normalise
    with torch.inference_mode():
        x = ((rec - np.float32(sig.mean)) / np.float32(sig.std)).astype(np.float32)
        ref = model(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(loaded.stream().push_chunk(rec).outputs["y"], ref, atol=1e-4)
    group = load_model(out, backend, streams=3).group()
    keys = [group.add(k).key for k in "abc"]
    for t in range(40):  # the 16-slot caches wrap twice
        res = group.push({k: rec[(t + 7 * i) % len(rec)] for i, k in enumerate(keys)})
    for i, k in enumerate(keys):
        alone = _pushed(loaded.stream(), [rec[(t + 7 * i) % len(rec)] for t in range(40)])[-1]
        np.testing.assert_allclose(res[k].values[0], alone.values[0], atol=1e-4)


def _pushed(stream, samples):
    return [stream.push(s) for s in samples]


def test_run_and_bench_take_the_family_from_the_command_line(trained):
    out = trained[1]
    proc = subprocess.run([*CLI, "run", out, "--source", "replay:?rate=max", "--limit", "300"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "samples: 300 in" in proc.stderr, proc.stderr
    agreement = float(proc.stderr.split("agreement with truth: ")[1].split("%")[0])
    assert agreement > 50.0, proc.stderr  # 4 classes: a trained model, streamed, far above 25
    proc = subprocess.run([*CLI, "bench", out, "--samples", "60", "--repeats", "1",
                           "--warmup", "5", "--backend", "onnxruntime", "--out",
                           out.parent / "bench"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out.parent / "bench" / "bench.json").read_text())
    assert any(c.startswith("onnxruntime") for c in report["configs"])


def test_reddys_sequences_tell_the_querys_label_only_where_they_should():
    """The paper experiment's task: a bursty sequence holds its query's class with the label
    it carries (so in-context learning can answer); unseen classes get labels drawn afresh per
    sequence (only the context tells them); trained classes keep k mod L."""
    from wavedge.models.paper_attention import Task, World

    task = Task(classes=64)
    world = World(task, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for kind in ("train", "icl"):
        x, y = world.sequences(200, gen, kind)
        assert x.shape == (200, 2 * task.pairs + 1, task.positions + task.dim)
        content = x[..., task.positions:]
        items, labels, query = content[:, 0:-1:2], content[:, 1::2], content[:, -1]
        nearest = ((items - query[:, None]) ** 2).sum(-1).argmin(1)  # the query's class
        given = labels[torch.arange(200), nearest]
        want = world.label_vectors[y]
        torch.testing.assert_close(given, want)  # the context carries the query's label
        positions = x[..., :task.positions].argmax(-1)
        assert (positions.diff(dim=1) == 1).all()  # one-hot positions, consecutive
    x, y = world.sequences(200, gen, "iwl")
    query = x[:, -1, task.positions:]
    cls = torch.cdist(query, world.means / (1 + task.eps ** 2) ** 0.5).argmin(1)
    assert torch.equal(y, cls % task.labels)  # a trained class answers by its own label
    relabelled = [world.sequences(1, torch.Generator().manual_seed(s), "icl")[1].item()
                  for s in range(40)]
    assert len(set(relabelled)) > 10  # unseen classes' labels vary from sequence to sequence
