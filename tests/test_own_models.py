"""The step contract proven on models written outside wavedge, in this file only: an LSTM
classifier, a regression model with a variance head, and a toy memory model with two inputs
per step (a float observation, an integer action) whose state is a fixed-capacity key/value
memory, an integer write position and a boolean validity mask. Each is exported, checked for
parity (integer and mask state exactly equal), and streamed through the runtime."""

from __future__ import annotations

import importlib.util

import json
import subprocess
import sys
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch
from torch import nn

from conftest import ROOT
from wavedge.errors import InputError, WavedgeError
from wavedge.export import ExportOptions, export_model_dir
from wavedge.manifest import load_manifest
from wavedge.models import StepModel
from wavedge.runtime import available, load_model
from wavedge.signature import InputSpec, Normalise, OutputSpec, Signature, StateSpec

BACKENDS = [b for b in ("onnxruntime", "litert") if available().get(b)]


class LSTMClassifier(StepModel):
    """An LSTM over 3 float channels, 2 classes; state h and c."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = hidden
        self.cell = nn.LSTMCell(3, hidden)
        self.head = nn.Linear(hidden, 2)

    @property
    def signature(self) -> Signature:
        return Signature(
            (InputSpec("accel", (3,), channels=("ax", "ay", "az"),
                       normalise=Normalise((0.0, 0.0, 9.8), (1.0, 1.0, 2.0))),),
            (OutputSpec("activity", (2,), "class_scores", labels=("still", "moving")),),
            (StateSpec("h", (self.hidden,)), StateSpec("c", (self.hidden,))),
            sample_rate_hz=50.0)

    def step(self, x, h, c):
        h, c = self.cell(x, (h, c))
        return self.head(h), h, c


class GaussianRegressor(StepModel):
    """A GRU cell predicting 2 values with their variance (softplus)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(4, 12)
        self.mean = nn.Linear(12, 2)
        self.var = nn.Linear(12, 2)

    @property
    def signature(self) -> Signature:
        return Signature((InputSpec("x", (4,), channels=("a", "b", "c", "d")),),
                         (OutputSpec("y_mean", (2,), "gaussian_mean", variance="y_var"),
                          OutputSpec("y_var", (2,), "variance")),
                         (StateSpec("h", (12,)),))

    def step(self, x, h):
        h = self.cell(x, h)
        return self.mean(h), nn.functional.softplus(self.var(h)) + 1e-3, h


class MemoryModel(StepModel):
    """Writes (key, value) = (obs projection, action embedding) into slot ``pos`` of a fixed
    memory of 4 slots, marks it valid, advances ``pos`` modulo 4 (so the check covers
    wrap-around), and reads the memory with attention over the valid slots."""

    slots = 4

    def __init__(self) -> None:
        super().__init__()
        self.key = nn.Linear(3, 5)
        self.embed = nn.Embedding(6, 5)
        self.out = nn.Linear(5, 3)

    @property
    def signature(self) -> Signature:
        n = self.slots
        return Signature(
            (InputSpec("obs", (3,), role="observation"),
             InputSpec("action", (1,), "int64", role="action", range=(0, 6))),
            (OutputSpec("next_obs", (3,), "regression"),),
            (StateSpec("keys", (n, 5)), StateSpec("values", (n, 5)),
             StateSpec("pos", (1,), "int64", 0), StateSpec("valid", (n,), "bool", False)))

    def step(self, obs, action, keys, values, pos, valid):
        k = self.key(obs)
        v = self.embed(action[:, 0])
        write = torch.arange(self.slots)[None] == pos  # [B, n] one-hot of the write slot
        keys = torch.where(write[..., None], k[:, None], keys)
        values = torch.where(write[..., None], v[:, None], values)
        valid = valid | write
        scores = (keys * k[:, None]).sum(-1).masked_fill(~valid, -1e9)
        read = (torch.softmax(scores, -1)[..., None] * values).sum(1)
        return self.out(read), keys, values, (pos + 1) % self.slots, valid


def _train_lstm(model, steps: int = 60):
    """The user's own loop on their own synthetic data: moving = large variance of |a|."""
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        y = rng.integers(0, 2, 16)
        x = rng.standard_normal((16, 20, 3)) * (0.1 + 2 * y[:, None, None])
        logits = model(torch.tensor(x, dtype=torch.float32))
        loss = nn.functional.cross_entropy(logits[:, -1], torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


HAS_CONVERTER = importlib.util.find_spec("litert_torch") is not None
NO_CONVERTER = ("TFLite export needs litert-torch (the tflite extra; `make bundle` builds "
                ".venv-tflite with it), not installed here")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    models = {"lstm": _train_lstm(LSTMClassifier()), "gauss": GaussianRegressor(),
              "memory": MemoryModel()}
    fmts = ("onnx", "tflite") if HAS_CONVERTER else ("onnx",)
    out = {}
    for name, model in models.items():
        d = tmp_path_factory.mktemp(name) / "model"
        precisions = ("fp32", "int8") if name != "memory" else ("fp32",)
        export_model_dir(model, d, ExportOptions(check_steps=1000, chunk_samples=8,
                                                 formats=fmts, precisions=precisions))
        out[name] = (model.eval(), d)
    return out


def test_each_signature_is_written_to_the_manifest(exported):
    raw = load_manifest(exported["memory"][1]).raw
    sig = raw["signature"]
    assert [i["dtype"] for i in sig["inputs"]] == ["float32", "int64"]
    assert [(s["name"], s["dtype"]) for s in sig["state"]] == [
        ("keys", "float32"), ("values", "float32"), ("pos", "int64"), ("valid", "bool")]
    assert raw["quality"]["gate"] is None  # no task: parity only, and it says so
    assert load_manifest(exported["gauss"][1]).signature.outputs[0].variance == "y_var"


def test_integer_and_mask_state_are_exactly_equal_to_torch(exported):
    for f in load_manifest(exported["memory"][1]).raw["files"]:
        if f["graph"] != "identity":
            tensors = f["error_vs_torch"]["tensors"]
            assert tensors["state_out.pos"] == 0.0 and tensors["state_out.valid"] == 0.0
            assert f["error_vs_torch"]["error"] <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_model_streams_two_inputs_with_integer_state(exported, backend):
    model, d = exported["memory"]
    if backend == "litert" and not HAS_CONVERTER:
        pytest.skip(NO_CONVERTER)
    loaded = load_model(d, backend)
    stream = loaded.stream()
    rng = np.random.default_rng(3)
    obs = rng.standard_normal((10, 3)).astype(np.float32)
    act = rng.integers(0, 6, (10, 1))
    got = np.stack([stream.push({"obs": o, "action": a}).mean for o, a in zip(obs, act)])
    with torch.inference_mode():
        ref = model(torch.from_numpy(obs)[None], torch.from_numpy(act)[None])[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    pos, valid = stream.state[2], stream.state[3]
    # int64 in ONNX; TFLite narrows it to int32
    assert pos.dtype.kind == "i" and int(pos[0, 0]) == 10 % 4 and valid.dtype == bool
    assert valid.all()
    chunked = loaded.stream().push_chunk({"obs": obs, "action": act})
    np.testing.assert_allclose(chunked.outputs["next_obs"], ref, atol=1e-5)
    # any mapping by input name, not only a dict (a read-only view here)
    viewed = loaded.stream()
    np.testing.assert_array_equal(
        [viewed.push(MappingProxyType({"obs": o, "action": a})).mean for o, a in zip(obs, act)],
        got)
    np.testing.assert_array_equal(loaded.stream().push_chunk(
        MappingProxyType({"obs": obs, "action": act})).outputs["next_obs"],
        chunked.outputs["next_obs"])
    with pytest.raises(Exception, match=r"outside \[0, 6\)"):
        stream.push({"obs": obs[0], "action": [9]})
    with pytest.raises(InputError, match=r"input 'action': sample is missing \(None\)"):
        stream.push({"obs": obs[0], "action": None})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_snapshot_with_one_bad_state_writes_none_of_them(exported, backend):
    if backend == "litert" and not HAS_CONVERTER:
        pytest.skip(NO_CONVERTER)
    stream = load_model(exported["lstm"][1], backend).stream()
    for x in np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32):
        stream.push(x)
    h, c = stream.state
    with pytest.raises(InputError, match="state 'c': not finite; the state is unchanged"):
        stream.state = [h + 1, np.full_like(c, np.nan)]
    np.testing.assert_array_equal(stream.state[0], h)
    np.testing.assert_array_equal(stream.state[1], c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_head_gives_mean_and_variance(exported, backend):
    model, d = exported["gauss"]
    if backend == "litert" and not HAS_CONVERTER:
        pytest.skip(NO_CONVERTER)
    stream = load_model(d, backend).stream()
    x = np.random.default_rng(1).standard_normal((20, 4)).astype(np.float32)
    results = [stream.push(v) for v in x]
    with torch.inference_mode():
        mean, var = model(torch.from_numpy(x)[None])
    np.testing.assert_allclose(np.stack([r.mean for r in results]), mean[0], atol=1e-5)
    np.testing.assert_allclose(np.stack([r.variance for r in results]), var[0], atol=1e-5)
    rec = results[-1].record()
    assert set(rec) == {"step", "mean", "variance"} and len(rec["variance"]) == 2
    with pytest.raises(AttributeError, match="not class scores"):
        results[-1].label
    # a chunk's answers read the same; its labels had been the argmax of the mean
    chunk = load_model(d, backend).stream().push_chunk(x)
    np.testing.assert_allclose(chunk.mean, mean[0], atol=1e-5)
    np.testing.assert_allclose(chunk.variance, var[0], atol=1e-5)
    for name in ("labels", "class_ids", "logits"):
        with pytest.raises(AttributeError, match="not class scores"):
            getattr(chunk, name)


def test_int8_of_own_models_is_written_and_measured(exported):
    for name in ("lstm", "gauss"):
        files = load_manifest(exported[name][1]).raw["files"]
        int8 = [f for f in files if f["precision"] == "int8"]
        # ONNX int8 is smaller; a full-integer TFLite of a model this tiny can be larger
        # than fp32 (its per-tensor quantisation parameters outweigh the weights)
        assert int8 and all(f["size_vs_fp32"] < 1.0 for f in int8 if f["format"] == "onnx")
        assert all(f["error_vs_torch"]["steps"] >= 1000 for f in int8)
    lstm = load_manifest(exported["lstm"][1])
    stream = load_model(lstm.directory, precision="int8").stream()
    x = np.random.default_rng(2).standard_normal((50, 3)).astype(np.float32) + [0, 0, 9.8]
    fp32 = load_model(lstm.directory).stream().push_chunk(x).class_ids
    assert np.mean(stream.push_chunk(x).class_ids == fp32) >= 0.9


def test_cli_exports_a_users_file_with_its_own_recordings_as_the_task(tmp_path):
    """``wavedge export FILE.py:CLASS --weights W.pt --data REC.csv``, then inspect, run (a
    CSV of the Gaussian head) and bench, as a user would."""
    src = tmp_path / "my_model.py"
    src.write_text("from tests_own import GaussianRegressor as MyNet\n")
    (tmp_path / "tests_own.py").write_text((ROOT / "tests" / "test_own_models.py").read_text())
    torch.manual_seed(0)
    w = tmp_path / "w.pt"
    torch.save(GaussianRegressor().state_dict(), w)
    rec = tmp_path / "rec.csv"
    rng = np.random.default_rng(0)
    lines = ["sequence,a,b,c,d,target_0,target_1"]
    for s in range(3):
        for _ in range(40):
            v = rng.standard_normal(4)
            lines.append(f"{s}," + ",".join(f"{a:.4f}" for a in v) + f",{v[0]:.4f},{v[1]:.4f}")
    rec.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "wavedge.cli"]
    proc = subprocess.run([*cli, "export", f"{src}:MyNet", "--weights", w, "--data", rec,
                           "--out", out, "--check-steps", "1000", "--precision", "fp32,int8",
                           "--max-accuracy-drop", "1000"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["quality"]["metric"].startswith("mean squared error")
    proc = subprocess.run([*cli, "inspect", out], capture_output=True, text=True, env=env)
    assert "y_mean gaussian_mean [2], variance in y_var" in proc.stdout, proc.stdout
    data_only = tmp_path / "x.csv"
    data_only.write_text("a,b,c,d\n" + "\n".join(",".join(ln.split(",")[1:5])
                                                  for ln in lines[1:6]) + "\n")
    proc = subprocess.run([*cli, "run", out, "--source", f"replay:{data_only}?rate=max",
                           "--sink", f"csv:{tmp_path / 'res.csv'}"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    header = (tmp_path / "res.csv").read_text().splitlines()[0]
    assert header == "step,mean_0,mean_1,variance_0,variance_1,truth"
    proc = subprocess.run([*cli, "bench", out, "--samples", "60", "--repeats", "1",
                           "--warmup", "5", "--backend", "onnxruntime", "--paced", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime/fp32/step" in proc.stdout and "onnxruntime/floor" in proc.stdout


def test_a_bad_user_model_spec_is_one_line(tmp_path):
    from conftest import assert_one_line_error, run_cli

    src = tmp_path / "m.py"
    src.write_text("class NotAModel: pass\n")
    assert_one_line_error(run_cli("export", f"{src}:NotAModel", "--weights", src, "--out",
                                  tmp_path / "o"), "is not a StepModel subclass")
    assert_one_line_error(run_cli("export", f"{tmp_path}/none.py:X", "--out", tmp_path / "o"),
                          "no such file")
    # the class left out had been read as a torch checkpoint ("UnpicklingError")
    src.write_text("from wavedge.models import StepModel\n\n\nclass Mine(StepModel):\n    pass\n")
    assert_one_line_error(run_cli("export", src, "--out", tmp_path / "o"),
                          "m.py: give the model's class as FILE.py:CLASS (it defines Mine)")
    assert_one_line_error(run_cli("export", f"{src}:Nine", "--out", tmp_path / "o"),
                          "'Nine' is not a StepModel subclass defined there (it defines Mine)")


def test_weights_that_cannot_load_are_one_line_saying_why(tmp_path):
    from conftest import assert_one_line_error, run_cli

    src = tmp_path / "my_model.py"
    src.write_text(f"import sys\nsys.path[:0] = [{str(ROOT / 'tests')!r}]\n"
                   "from test_own_models import GaussianRegressor as MyNet\n")
    whole, text = tmp_path / "whole.pt", tmp_path / "text.pt"
    torch.save(GaussianRegressor(), whole)  # torch.save(model): a common slip
    text.write_text("a,b\n1,2\n")
    export = ("export", f"{src}:MyNet", "--out", tmp_path / "o", "--weights")
    assert_one_line_error(run_cli(*export, whole), "GaussianRegressor, which loads only by "
                          "running code; save the weights alone: torch.save(model.state_dict()")
    assert_one_line_error(run_cli(*export, text), "text.pt: cannot be read")
    assert_one_line_error(run_cli(*export, tmp_path / "none.pt"), "no such weights file")


class _ShortOutput(GaussianRegressor):
    def step(self, x, h):
        mean, var, h = super().step(x, h)
        return mean[:, :1], var, h


class _NoState(GaussianRegressor):
    def step(self, x, h):
        return super().step(x, h)[:2]


class _Raises(GaussianRegressor):
    def step(self, x, h):
        raise ValueError("a bug in my step")


class _TwoChannelNames(GaussianRegressor):
    @property
    def signature(self) -> Signature:
        return replace(super().signature, inputs=(InputSpec("x", (4,), channels=("a", "b")),))


@pytest.mark.parametrize("cls, message", [
    (_ShortOutput, "_ShortOutput: output 'y_mean' comes out of the step with shape (1,) per "
                   "sample; the signature declares (2,)"),
    (_NoState, "_NoState: its step returns 2 tensors; the signature declares 2 output(s) then "
               "1 state(s)"),
    (_Raises, "_Raises: its step failed on the signature's example inputs: ValueError: a bug "
              "in my step"),
    (_TwoChannelNames, "_TwoChannelNames.signature.inputs[0]: 2 channel names for a last axis "
                       "of 4"),
])
def test_a_step_or_signature_at_odds_is_named_before_export(cls, message, tmp_path):
    """An own model's mistake, in the user's words (the tensor, the class), before anything
    is traced or written."""
    with pytest.raises(WavedgeError) as info:
        export_model_dir(cls(), tmp_path / "o")
    assert str(info.value) == message
    assert not any(tmp_path.iterdir())


def test_a_constructor_or_config_at_odds_is_one_line(tmp_path):
    from conftest import assert_one_line_error, run_cli

    src = tmp_path / "my_model.py"
    src.write_text(f"import sys\nsys.path[:0] = [{str(ROOT / 'tests')!r}]\n"
                   "from test_own_models import GaussianRegressor\n"
                   "class Picky(GaussianRegressor):\n"
                   "    def __init__(self, hidden=12):\n"
                   "        if hidden % 2:\n"
                   "            raise ValueError('hidden must be even')\n"
                   "        super().__init__()\n"
                   "        self.cell = __import__('torch').nn.GRUCell(4, hidden)\n")
    w = tmp_path / "w.pt"
    torch.save(GaussianRegressor().state_dict(), w)
    export = ("export", f"{src}:Picky", "--out", tmp_path / "o", "--weights", w)
    assert_one_line_error(run_cli(*export, "--config", '{"hidden": 3}'),
                          "Picky(**{'hidden': 3}): ValueError: hidden must be even")
    assert_one_line_error(run_cli(*export, "--config", "[3]"), "--config: expected a JSON object")
    # torch's first line says only that there are errors; the first of them is the news
    assert_one_line_error(run_cli(*export, "--config", '{"hidden": 8}'),
                          "w.pt: cannot load into Picky: size mismatch for cell.weight_ih",
                          "(and 3 more)")


def test_link_sink_refuses_a_head_that_cannot_fit_a_frame_at_open(exported, tmp_path):
    import shutil

    from wavedge.errors import InputError
    from wavedge.runtime import open_sink

    d = tmp_path / "wide"
    shutil.copytree(exported["gauss"][1], d)
    raw = json.loads((d / "manifest.json").read_text())
    for o in raw["signature"]["outputs"]:
        o["shape"] = [20]  # mean + variance: 40 floats, a frame carries 32
    (d / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"needs 40 floats per frame, a bridge frame carries 32"):
        open_sink("link:loop://", load_manifest(d))


def test_gaussian_head_goes_over_the_bridge_as_a_prediction_frame(exported):
    from wavedge.firmware_bridge.messages import PREDICTION_KINDS, Prediction, pack, unpack
    from wavedge.runtime.heads import heads_for

    model, d = exported["gauss"]
    stream = load_model(d).stream()
    result = stream.push(np.ones(4, np.float32))
    head = heads_for(load_manifest(d).signature)[0]
    index, score, values = head.bridge(result.values)
    msg = unpack(*pack(Prediction(0, result.step, 0, PREDICTION_KINDS[head.spec.kind], index,
                                  score, values)))
    np.testing.assert_allclose(msg.values[:2], result.mean, rtol=1e-6)
    np.testing.assert_allclose(msg.values[2:], result.variance, rtol=1e-6)


def test_a_group_of_a_two_input_model_with_integer_state_equals_separate_streams(tmp_path):
    """Groups are not the wave-encoder's alone: the memory model (an int64 action input,
    int64 and bool state) exported for 3 streams per call, its members pushed by dict."""
    torch.manual_seed(0)
    d = tmp_path / "model"
    export_model_dir(MemoryModel(), d, ExportOptions(check_steps=1000, chunk_samples=8,
                                                     formats=("onnx",), batch=3))
    group = load_model(d, streams=3).group()
    keys = [group.add(k).key for k in ("a", "b", "c")]
    single = load_model(d)
    streams = [single.stream() for _ in keys]
    rng = np.random.default_rng(1)
    for _ in range(11):  # past the 4 slots' wrap-around
        tick = {k: {"obs": rng.standard_normal(3).astype(np.float32),
                    "action": np.array([rng.integers(0, 6)])} for k in keys}
        res = group.push(tick)
        for k, s in zip(keys, streams):
            want = s.push(tick[k])
            np.testing.assert_allclose(res[k].values[0], want.values[0], rtol=0, atol=1e-6)
    for k, s in zip(keys, streams):
        for mine, theirs in zip(group.member(k).state, s.state):
            if mine.dtype == np.float32:
                np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)
            else:  # the write position and the valid mask: exactly
                np.testing.assert_array_equal(mine, theirs)
    bad = {"a": {"obs": np.zeros(3, np.float32), "action": np.array([9])}}  # out of range
    res = group.push(bad)
    assert list(res.errors) == ["a"] and len(res) == 0
