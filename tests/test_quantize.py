"""int8 artefacts: smaller, as accurate as fp32 within a point, refused when they are not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch

from conftest import BUNDLED_CHECKPOINT, BUNDLED_MODEL, assert_one_line_error, run_cli
from wavedge.errors import ExportError, InputError
from wavedge.export import ExportOptions, export_model_dir
from wavedge.export.quantize import QuantOptions, StreamCalibrationReader
from wavedge.manifest import load_manifest
from wavedge.models.checkpoint import load_checkpoint
from wavedge.models.data import basic_motions
from wavedge.runtime import load_model


@pytest.mark.parametrize("fmt, graphs", [("onnx", ("step", "chunk")), ("tflite", ("step",))])
def test_bundled_int8_artefacts_are_a_third_of_fp32_and_keep_accuracy(fmt, graphs):
    m = load_manifest(BUNDLED_MODEL)
    for graph in graphs:
        fp32, int8 = m.find_file(graph, "fp32", fmt), m.find_file(graph, "int8", fmt)
        assert int8.size_bytes <= 0.35 * fp32.size_bytes
        raw = next(f for f in m.raw["files"] if f["path"] == int8.path)
        acc = raw["accuracy"]
        assert acc["drop_points"] <= 1.0 and acc["test"] >= acc["torch_fp32"] - 0.01
        assert raw["size_vs_fp32"] == pytest.approx(int8.size_bytes / fp32.size_bytes, abs=1e-3)
    assert m.raw["calibration"]["options"]["method"] == "static"


def test_bundled_int8_onnx_is_static_int16_and_its_chunk_is_the_step_in_a_scan():
    import onnx
    from onnx import numpy_helper

    m = load_manifest(BUNDLED_MODEL)
    step = onnx.load(str(BUNDLED_MODEL / m.find_file("step", "int8", "onnx").path))
    weights = {numpy_helper.to_array(i).dtype.name for i in step.graph.initializer
               if len(i.dims) >= 2}
    assert weights == {"int8"}  # every weight matrix and the ring convolution's kernel
    ops = {n.op_type for n in step.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    zero_points = [numpy_helper.to_array(i) for i in step.graph.initializer
                   if numpy_helper.to_array(i).dtype.name == "int16"]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric 16-bit activations
    chunk = onnx.load(str(BUNDLED_MODEL / m.find_file("chunk", "int8", "onnx").path))
    assert [n.op_type for n in chunk.graph.node] == ["Scan"]
    # the same numbers as the step graph, call for call
    import onnxruntime as ort

    x = basic_motions().x_test[0][:32].astype(np.float32)
    s_step = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    s_chunk = ort.InferenceSession(chunk.SerializeToString(), providers=["CPUExecutionProvider"])
    h = np.zeros((1, 16, 64), np.float32)
    ys = []
    for v in x:
        y, h = s_step.run(None, {"x": v[None], "state_in.h": h})
        ys.append(y[0])
    y_chunk, h_chunk = s_chunk.run(None, {"x": x[None], "state_in.h": np.zeros_like(h)})
    np.testing.assert_array_equal(y_chunk[0], np.stack(ys))
    np.testing.assert_array_equal(h_chunk, h)


def test_bundled_int8_tflite_is_full_integer_and_a_third_of_fp32():
    from wavedge.runtime.backend_litert import io_details, load_interpreter

    m = load_manifest(BUNDLED_MODEL)
    fp32, int8 = m.find_file("step", "fp32", "tflite"), m.find_file("step", "int8", "tflite")
    assert int8.size_bytes <= 0.35 * fp32.size_bytes
    inputs, outputs = io_details(load_interpreter((BUNDLED_MODEL / int8.path).read_bytes()))
    details = {**inputs, **outputs}
    assert {np.dtype(d["dtype"]).name for d in details.values()} == {"int16"}
    # one scale for the state in and out: a board carries the integers as they are
    q_in = details["state_in.h"]["quantization_parameters"]
    q_out = details["state_out.h"]["quantization_parameters"]
    assert q_in["scales"][0] == q_out["scales"][0]
    assert q_in["zero_points"][0] == q_out["zero_points"][0]
    assert m.find_file("chunk", "int8", "tflite") is None  # measured worse; not written
    # the recurrence (state in, the sum that makes the new state, state out) has one scale
    from wavedge.runtime.backend_litert import load_interpreter as load

    interp = load((BUNDLED_MODEL / int8.path).read_bytes())
    scales = {t["index"]: t["quantization"][0] for t in interp.get_tensor_details()}
    adds = [op for op in interp._get_ops_details() if op["op_name"] == "ADD"]
    assert adds and all(scales[i] == q_in["scales"][0] for op in adds
                        for i in (*op["inputs"], *op["outputs"]))


def test_bundled_checkpoint_weights_lie_on_their_int8_grid():
    from wavedge.models.quant_aware import grid_error

    assert grid_error(load_checkpoint(BUNDLED_CHECKPOINT).model) < 1e-3


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_int8_stream_agrees_with_fp32_on_the_recording(backend):
    from wavedge.runtime import available

    if not available()[backend]:
        pytest.skip(f"{backend} is not installed")
    data = basic_motions()
    x = data.x_test.reshape(-1, 6)
    fp32 = load_model(BUNDLED_MODEL).stream().push_chunk(x)
    int8_stream = load_model(BUNDLED_MODEL, backend=backend, precision="int8").stream()
    int8 = np.stack([int8_stream.push(v).logits for v in x])
    assert np.mean(int8.argmax(-1) == fp32.class_ids) >= 0.99
    # the activity at the end of every recording, streamed without reset, is unchanged
    ends = np.arange(99, len(x), 100)
    assert (int8.argmax(-1)[ends] == fp32.class_ids[ends]).all()


def test_calibration_reader_streams_full_recordings_with_the_state():
    data = basic_motions()
    sig = load_manifest(BUNDLED_MODEL).signature
    reader = StreamCalibrationReader(BUNDLED_MODEL / "model.step.onnx", sig, data.x_train[:4],
                                     passes=1, stride=1)
    feeds = list(reader)
    assert len(feeds) == 400 and reader.description["stream_samples"] == 400
    assert not feeds[0]["state_in.h"].any() and feeds[150]["state_in.h"].any()
    assert reader.get_next() is feeds[0] and reader.get_next() is feeds[1]
    with pytest.raises(InputError, match=r"expected shape \(N, T, 6\)"):
        StreamCalibrationReader(BUNDLED_MODEL / "model.step.onnx", sig, data.x_train[0])


def test_accuracy_gate_refuses_8bit_activations_and_says_by_how_much(tmp_path):
    out = tmp_path / "a8"
    options = ExportOptions(precisions=("fp32", "int8"), check_steps=1000,
                            quant=QuantOptions(activation_bits=8, reduce_range=True))
    with pytest.raises(ExportError, match=r"a loss of .* points where 1 is allowed "
                                          r"\(missed by .*\); nothing written"):
        export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out, options)
    assert not out.exists()
    forced = ExportOptions(precisions=("fp32", "int8"), check_steps=1000,
                           quant=QuantOptions(activation_bits=8, reduce_range=True, force=True))
    export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out, forced)
    raw = json.loads((out / "manifest.json").read_text())
    step = next(f for f in raw["files"] if f["path"] == "model.step.int8.onnx")
    assert step["accuracy"]["drop_points"] > 1.0  # written, with the miss on record
    assert step["quantisation"]["activations"].startswith("uint8")


def test_dynamic_int8_onnx_is_the_option_that_needs_no_calibration(tmp_path):
    import onnx

    options = ExportOptions(precisions=("fp32", "int8"), check_steps=1000,
                            quant=QuantOptions(method="dynamic"))
    raw = json.loads(export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), tmp_path / "dyn",
                                      options).read_text())
    assert raw["calibration"]["data"] is None
    for graph in ("step", "chunk"):
        entry = next(f for f in raw["files"] if f["path"] == f"model.{graph}.int8.onnx")
        assert entry["accuracy"]["drop_points"] <= 1.0 and entry["size_vs_fp32"] < 1.0
        # u8 weights by default: u8 x s8 saturates on x86 without VNNI (0.94 measured)
        assert entry["error_vs_torch"]["argmax_agreement"] >= 0.99
        assert entry["quantisation"]["weights"].startswith("quint8")
        ops = {n.op_type for n in onnx.load(str(tmp_path / "dyn" / entry["path"])).graph.node}
        assert "MatMulInteger" in ops and "QuantizeLinear" not in ops


def test_quant_options_refuse_what_onnx_runtime_cannot_run():
    with pytest.raises(InputError, match="16-bit activations need the qdq format"):
        QuantOptions(quant_format="qoperator").validate()
    with pytest.raises(InputError, match="per_channel 'some': choose family, all, none"):
        QuantOptions(per_channel="some").validate()
    with pytest.raises(InputError, match="per_channel 'all' or 'none'"):
        QuantOptions(quant_format="qoperator", activation_bits=8).validate()
    QuantOptions(quant_format="qoperator", activation_bits=8, per_channel="all").validate()


def test_precisions_must_include_fp32_and_be_known():
    with pytest.raises(InputError, match="fp32 is required and int8 is the other one"):
        ExportOptions(precisions=("int8",)).validate()
    with pytest.raises(InputError, match="fp32 is required"):
        ExportOptions(precisions=("fp32", "int4")).validate()


def test_int8_grid_training_passes_gradients_and_leaves_weights_on_the_grid():
    import torch

    from wavedge.models import WaveRNN
    from wavedge.models.quant_aware import grid_error, int8_weight_grid

    torch.manual_seed(0)
    model = WaveRNN(3, 2, channels=2, ring_size=8, shift_init=False, solo_init=False)
    assert grid_error(model) > 0.1
    with int8_weight_grid(model):
        loss = model(torch.randn(2, 5, 3)).square().mean()
        loss.backward()
        grad = model.ring.parametrizations.weight.original.grad
        assert grad is not None and grad.abs().sum() > 0  # straight through the rounding
    assert grid_error(model) < 1e-3
    assert not hasattr(model.ring, "parametrizations")


def test_micro_check_reruns_the_bundled_int8_tflite():
    pytest.importorskip("tflite_micro")
    from wavedge.export.check import check_stream
    from wavedge.export.micro import micro_check

    m = load_manifest(BUNDLED_MODEL)
    recorded = next(f for f in m.raw["files"] if f["path"] == "model.step.int8.tflite")["micro"]
    assert recorded["argmax_agreement_own_state"] >= 0.99
    assert recorded["max_diff_lsb_same_inputs"] <= 1  # within one quantisation step
    stream = check_stream([{"x": x} for x in basic_motions().x_test], 300, 1)
    got = micro_check(BUNDLED_MODEL / "model.step.int8.tflite", m.signature, stream)
    assert got["arena_bytes"] == recorded["arena_bytes"]
    assert got["max_diff_lsb_same_inputs"] <= 1 and got["argmax_agreement_own_state"] >= 0.99


def test_micro_check_refuses_a_float_model():
    pytest.importorskip("tflite_micro")
    from wavedge.export.micro import micro_check

    with pytest.raises(ExportError, match="full-integer"):
        micro_check(BUNDLED_MODEL / "model.step.tflite", load_manifest(BUNDLED_MODEL).signature,
                    {"x": np.zeros((4, 6), np.float32)})


def test_calibration_reader_runs_a_tflite_graph_through_litert():
    pytest.importorskip("ai_edge_litert")
    data = basic_motions()
    sig = load_manifest(BUNDLED_MODEL).signature
    onnx = list(StreamCalibrationReader(BUNDLED_MODEL / "model.step.onnx", sig,
                                        data.x_train[:2], passes=1, stride=10))
    tfl = list(StreamCalibrationReader(BUNDLED_MODEL / "model.step.tflite", sig,
                                       data.x_train[:2], passes=1, stride=10))
    assert len(tfl) == len(onnx) == 20 and set(tfl[0]) == {"x", "state_in.h"}
    for a, b in zip(onnx, tfl):
        np.testing.assert_allclose(a["state_in.h"], b["state_in.h"], atol=1e-4)


def test_calibration_from_a_recording_file_as_a_user_has_one(tmp_path):
    """Calibrate on a CSV of sensor recordings (here the bundled recording.csv: a header with
    the channels, a sequence column splitting it into 40 recordings)."""
    from wavedge.export.quantize import load_recordings

    csv_path = BUNDLED_MODEL / "recording.csv"
    channels = load_manifest(BUNDLED_MODEL).channels
    recordings = load_recordings(csv_path, channels)
    assert len(recordings) == 40 and {r.shape for r in recordings} == {(100, 6)}
    np.testing.assert_allclose(recordings[3], basic_motions().x_test[3], rtol=1e-5)
    out = tmp_path / "cal"
    options = ExportOptions(precisions=("fp32", "int8"), check_steps=1000, calibration=csv_path)
    raw = json.loads(export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out, options)
                     .read_text())
    assert raw["calibration"]["data"].startswith("recording.csv (sha256 ")
    assert raw["calibration"]["step_graph"]["recordings"] == 40
    step = next(f for f in raw["files"] if f["path"] == "model.step.int8.onnx")
    assert step["accuracy"]["drop_points"] <= 1.0


def test_bad_calibration_recordings_are_refused_in_one_line(tmp_path):
    from wavedge.export.quantize import load_recordings

    channels = load_manifest(BUNDLED_MODEL).channels
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(channels) + "\n1,2,3,4,5,6\n1,2,x,4,5,6\n")
    with pytest.raises(InputError, match=r"bad.csv, line 3: not_numeric \(expected 6 "
                                         r"numbers: acc_x"):
        load_recordings(bad, channels)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, 5, 6), np.nan, np.float32))
    with pytest.raises(InputError, match="nan.npy, recording 0, row 0: not finite"):
        load_recordings(nan, channels)  # the file's line or row, not a count of samples
    with pytest.raises(InputError, match="lacks channel"):
        other = tmp_path / "other.csv"
        other.write_text("a,b\n1,2\n")
        load_recordings(other, channels)
    with pytest.raises(InputError, match="6 channels expected"):
        StreamCalibrationReader(BUNDLED_MODEL / "model.step.onnx",
                                load_manifest(BUNDLED_MODEL).signature, [np.zeros((10, 3))])
    out = tmp_path / "never"
    with pytest.raises(InputError, match="bad.csv, line 3: not_numeric"):
        export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out, ExportOptions(
            precisions=("fp32", "int8"), check_steps=1000, calibration=bad))
    # nor its temporary directory beside it (made before the calibration was read, it stayed)
    assert not out.exists() and not list(tmp_path.glob(".never.*"))
    with pytest.raises(InputError, match="calibrate int8 graphs, and none is asked for"):
        export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out,
                         ExportOptions(calibration=bad))  # fp32 alone: it was ignored


def test_cli_export_with_bad_calibration_recordings_fails_in_one_line(tmp_path):
    bad = tmp_path / "half.csv"
    bad.write_text("acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n1,2,3,4,5,6\n1,2,3\n")
    proc = run_cli("export", BUNDLED_CHECKPOINT, "--out", tmp_path / "out", "--precision",
                   "fp32,int8", "--calibration", bad)
    assert_one_line_error(proc, "half.csv, line 3: wrong_shape")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_litert_int8_stream_carries_the_integer_state_and_honours_resets():
    from wavedge.runtime import available
    from wavedge.runtime.backend_litert import io_details, load_interpreter

    if not available()["litert"]:
        pytest.skip("litert is not installed")
    x = basic_motions().x_test[0]
    stream = load_model(BUNDLED_MODEL, backend="litert", precision="int8").stream()
    first = np.stack([stream.push(v).logits for v in x[:50]])
    snapshot = stream.state
    later = np.stack([stream.push(v).logits for v in x[50:]])
    stream.state = snapshot
    np.testing.assert_array_equal(np.stack([stream.push(v).logits for v in x[50:]]), later)
    stream.reset()
    np.testing.assert_array_equal(np.stack([stream.push(v).logits for v in x[:50]]), first)
    # what a board does: the integers from one call go into the next as they are
    interp = load_interpreter((BUNDLED_MODEL / "model.step.int8.tflite").read_bytes())
    ins, outs = io_details(interp)
    sx, zx = ins["x"]["quantization"]
    sy, zy = outs["y"]["quantization"]
    h = np.zeros(ins["state_in.h"]["shape"], np.int16)
    for i, v in enumerate(x[:50]):
        interp.set_tensor(ins["x"]["index"], np.clip(np.rint(v[None] / sx) + zx, -32768,
                                                     32767).astype(np.int16))
        interp.set_tensor(ins["state_in.h"]["index"], h)
        interp.invoke()
        h = interp.get_tensor(outs["state_out.h"]["index"])
        y = (interp.get_tensor(outs["y"]["index"]).astype(np.float32) - zy) * np.float32(sy)
        np.testing.assert_allclose(first[i], y[0], rtol=0, atol=1e-6)
