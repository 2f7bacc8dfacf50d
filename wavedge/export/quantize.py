"""int8 ONNX: static quantisation calibrated on full-length streams with the state carried.

Recurrent models are where quantisation fails most often: calibrating on short or independent
samples under-estimates the range of the fed-back state, and ONNX Runtime's u8 x s8 kernels
saturate on x86 CPUs without VNNI. So the calibration reader streams the fp32 graph itself over
long sequences of real recordings, state carried from step to step, and hands the calibrator the
very ``(x, state_in.*)`` pairs a board will see.

The default, measured on the bundled wave-encoder (docs/quantisation.md): QDQ with int8
symmetric weights (the ring convolution per output channel, the fully-connected layers per
tensor: the grid ``wavedge.models.quant_aware`` trains on) and int16 symmetric activations, the
state included. 16-bit activations never meet a u8 x s8 kernel, so nothing saturates; 8-bit
activations (``activation_bits=8``: uint8, with ``reduce_range`` against the saturation) lost
half the test recordings. The chunk graph is the quantised step graph inside an ONNX ``Scan``:
the same integers as the step graph, one copy of the weights.

The reader follows ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` returns a
feed dict or None) and is also an iterator, so it can feed any calibrator.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavedge.errors import ExportError, InputError

# which weights get one scale per output channel: the family's choice (its QuantPolicy's
# per_channel_ops: the Wave-RNN's ring convolution), every op's, or none
PER_CHANNEL = ("family", "all", "none")


@dataclass(frozen=True)
class QuantOptions:
    """How to quantise, and how much accuracy may be lost.

    The defaults are what held the bundled wave-encoder's accuracy, measured
    (docs/quantisation.md): static, calibrated, int8 weights and 16-bit activations, in ONNX
    and TFLite alike.
    """

    method: str = "static"  # ONNX: static (calibrated) or dynamic (int8 weights of the
    #                         matmuls, activations quantised on the fly, the recurrence in fp32)
    activation_bits: int = 16  # static ONNX and TFLite: 16 (int16) or 8 (ONNX uint8, TFLite int8)
    op_types: tuple[str, ...] = ()  # ONNX ops to quantise; () = the family's, else Conv, Gemm,
    #                                 MatMul (dynamic: Gemm, MatMul)
    weight_type: str = "auto"  # ONNX: qint8, quint8, or auto: qint8 for static (symmetric, as
    #  TFLite), quint8 for dynamic (its u8 activations x s8 weights saturate on x86 without VNNI)
    quant_format: str = "qdq"  # static ONNX: qdq, or qoperator (8-bit activations only)
    per_channel: str = "family"  # family, all or none (ONNX; TFLite: the family's)
    reduce_range: bool = False  # 7-bit weights: avoids u8 x s8 saturation without VNNI
    calibration_passes: int = 2  # shuffled passes over the calibration recordings
    calibration_stride: int = 2  # keep every n-th step's feed (the state still runs every step)
    max_accuracy_drop: float = 1.0  # points of test accuracy an int8 artefact may lose
    force: bool = False  # write an artefact that misses the accuracy gate anyway

    def validate(self) -> None:
        if self.method not in ("static", "dynamic"):
            raise InputError(f"quantisation method {self.method!r}: choose static or dynamic")
        if self.weight_type not in ("auto", "quint8", "qint8"):
            raise InputError(f"weight type {self.weight_type!r}: choose auto, quint8 or qint8")
        if self.quant_format not in ("qoperator", "qdq"):
            raise InputError(f"quantisation format {self.quant_format!r}: choose qoperator or qdq")
        if self.per_channel not in PER_CHANNEL:
            raise InputError(f"per_channel {self.per_channel!r}: choose {', '.join(PER_CHANNEL)}")
        if self.calibration_passes < 1 or self.calibration_stride < 1:
            raise InputError("calibration_passes and calibration_stride must be at least 1")
        if self.activation_bits not in (8, 16):
            raise InputError(f"activation bits must be 8 or 16, got {self.activation_bits}")
        if self.activation_bits == 16 and self.quant_format == "qoperator" \
                and self.method == "static":
            raise InputError("16-bit activations need the qdq format (ONNX Runtime has no "
                             "16-bit QOperator kernels)")
        if self.quant_format == "qoperator" and self.per_channel == "family":
            raise InputError("the qoperator format sets per-channel weights for every op or "
                             "none: per_channel 'all' or 'none'")
        if not self.max_accuracy_drop >= 0:  # NaN too: no drop compares above it, no gate
            raise InputError(f"max_accuracy_drop must be >= 0, got {self.max_accuracy_drop}")

    def onnx_weight_type(self) -> str:
        if self.weight_type != "auto":
            return self.weight_type
        return "qint8" if self.method == "static" else "quint8"

    def onnx_op_types(self, policy=None) -> list[str]:
        if self.op_types:
            return list(self.op_types)
        if policy is not None and policy.op_types:
            return list(policy.op_types)
        return ["Conv", "Gemm", "MatMul"] if self.method == "static" else ["Gemm", "MatMul"]

    def describe_onnx(self, policy=None) -> dict:
        """The manifest's account of an int8 ONNX file's quantisation (``policy``: the
        family's ``QuantPolicy``)."""
        if self.method == "dynamic":
            return {"tool": "onnxruntime.quantization (dynamic)",
                    "weights": f"{self.onnx_weight_type()} ({self._granularity(policy)})",
                    "ops": self.onnx_op_types(policy),
                    "activations": "quantised to uint8 on the fly at every call; the "
                                   "recurrence's state in fp32", **self._kept_float(policy)}
        act = "int16, symmetric" if self.activation_bits == 16 else "uint8"
        out = {"tool": "onnxruntime.quantization (static)", "format": self.quant_format,
               "weights": f"{self.onnx_weight_type()} ({self._granularity(policy)})",
               "ops": self.onnx_op_types(policy), "activations": f"{act}, the float state "
               "included", "io": "float (quantised inside the graph)"}
        return {**out, **self._kept_float(policy)}

    @staticmethod
    def _kept_float(policy) -> dict:
        if policy is None or not policy.float_variance:
            return {}
        return {"float": "the variance path: the matmuls of squared activations and what "
                         "follows them (the family's policy, measured: docs/paper-mpl.md)"}

    def _granularity(self, policy=None) -> str:
        ops = policy.per_channel_ops if policy is not None else ()
        family = (f"{', '.join(ops)} per output channel, the rest per tensor" if ops
                  else "per tensor")
        return {"family": family, "all": "per output channel",
                "none": "per tensor"}[self.per_channel]


def load_recordings(path: Path | str, channels: tuple[str, ...],
                    model_hz: float | None = None) -> list[np.ndarray]:
    """Sensor recordings for calibration from a file ``wavedge run`` can replay: a CSV (its
    header naming the model's channels, or a column map after ``?``; a sequence column, if
    any, splits it into recordings; ``recording.csv`` of a model directory is one) or a
    ``.npy`` of ``[T, D]`` or ``[N, T, D]``. Raw sensor units. Raises ``InputError`` on the
    first bad row (``wavedge.recordings.load_table``)."""
    from wavedge.recordings import load_table

    table = load_table(path, tuple(channels), "calibration recordings", model_hz=model_hz)
    return [r.x for r in table.recordings]


class StreamCalibrationReader:
    """Feeds for calibrating one graph: the ``recordings`` (``{input name: [T, *shape]}`` of
    any lengths, raw units; a list of ``[T, D]`` arrays or an ``[N, T, D]`` array for a model
    with one input; see ``load_recordings`` for files) concatenated in shuffled order,
    ``passes`` times, run through the fp32 graph at ``fp32_path`` with its state carried
    throughout, or reset where the model's reset ``policy`` says (as the parity check's
    stream, ``check.check_stream``: a model trained from reset reaches states on endless
    streams that it never sees on a board, and would calibrate on them); every ``stride``-th
    call's inputs are kept. For a chunk graph, ``samples_per_call`` samples go in per call.
    ``batch`` > 1 calibrates a graph of that many streams per call: each feed repeated on the
    batch axis, so that it gets the scales of the batch-1 graph (its rows are the same
    streams)."""

    def __init__(self, fp32_path: Path, signature, recordings, samples_per_call: int = 1,
                 passes: int = 2, stride: int = 2, seed: int = 0, policy=None,
                 batch: int = 1) -> None:
        from wavedge.export.check import check_stream
        from wavedge.resets import ResetPolicy
        from wavedge.runtime.model import load_checked_graph

        recordings = _as_recordings(signature, recordings)
        # the fp32 graph through wavedge's own runtime: ONNX Runtime or LiteRT by file type
        backend = "litert" if Path(fp32_path).suffix == ".tflite" else "onnxruntime"
        graph = load_checked_graph(Path(fp32_path), backend, signature, samples_per_call)
        runner = graph.runner()
        for buf, spec in zip(runner.state, signature.state):
            buf[...] = spec.reset_array(1)
        names = [t.name for t in graph.inputs]
        k = samples_per_call
        inputs = [i.name for i in signature.inputs]
        lengths = sorted({len(r[inputs[0]]) for r in recordings})
        steps = passes * sum(len(r[inputs[0]]) for r in recordings) // k * k
        policy = policy or ResetPolicy()
        stream = check_stream(recordings, steps, k, policy, seed)
        total, starts = len(stream[inputs[0]]), set(stream.starts)
        self.feeds: list[dict] = []
        for n, i in enumerate(range(0, total, k)):
            if i in starts:
                for buf, spec in zip(runner.state, signature.state):
                    buf[...] = spec.reset_array(1)
            for buf, name in zip(runner.inputs, inputs):
                buf[...] = stream[name][i:i + k].reshape(buf.shape)
            if n % stride == 0:
                self.feeds.append(dict(zip(names, [*(b.copy() for b in runner.inputs),
                                                   *(s.copy() for s in runner.state)])))
            runner.run()
        if batch > 1:
            self.feeds = [{k: np.repeat(v, batch, axis=0) for k, v in f.items()}
                          for f in self.feeds]
        self.description = {
            "recordings": len(recordings),
            "samples_per_recording": (lengths[0] if len(lengths) == 1
                                      else f"{lengths[0]}-{lengths[-1]}"),
            "passes": passes, "stream_samples": int(total), "feeds": len(self.feeds),
            "stride": stride, "seed": seed,
            "how": "recordings concatenated in shuffled order, the fp32 graph's own state fed "
                   "back, " + ("carried throughout" if not (policy.recording or policy.every)
                               else f"reset as the model's policy says ({policy.text()})")}
        self._it = iter(self.feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __iter__(self):
        return iter(self.feeds)


def _as_recordings(signature, recordings) -> list[dict]:
    """Recordings as ``{input name: array}`` dicts, each checked against the signature."""
    first = signature.inputs[0]
    if isinstance(recordings, np.ndarray):
        if recordings.ndim != len(first.shape) + 2:
            raise InputError(f"calibration recordings: expected shape (N, T, "
                             f"{', '.join(map(str, first.shape))}), got {recordings.shape}")
        recordings = list(recordings)
    out = []
    for r in recordings:
        rec = r if isinstance(r, dict) else {first.name: r}
        for spec in signature.inputs:
            if spec.name not in rec:
                raise InputError(f"calibration recordings lack input {spec.name!r}")
            x = np.asarray(rec[spec.name], spec.dtype)
            if x.ndim != len(spec.shape) + 1 or x.shape[1:] != spec.shape:
                raise InputError(f"calibration recordings: input {spec.name!r} should be "
                                 f"(T, {', '.join(map(str, spec.shape))}), got {x.shape} "
                                 f"({spec.size} channels expected)")
            rec = {**rec, spec.name: x}
        out.append(rec)
    if not out:
        raise InputError("calibration recordings: none given")
    return out


def quantize_onnx(fp32_path: Path, out_path: Path, reader: StreamCalibrationReader | None,
                  options: QuantOptions, policy=None) -> Path:
    """Write the int8 version of ``fp32_path`` to ``out_path`` (inner names shortened, see
    ``onnx_export.shorten_names``); raises ``ExportError``."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    from wavedge.export.onnx_export import shorten_names

    options.validate()
    weight = QuantType.QUInt8 if options.onnx_weight_type() == "quint8" else QuantType.QInt8
    ops = options.onnx_op_types(policy)
    exclude = _variance_matmuls(fp32_path) if policy is not None and policy.float_variance \
        else []
    try:
        with _quiet_quantiser():
            if options.method == "dynamic":
                quantize_dynamic(str(fp32_path), str(out_path), weight_type=weight,
                                 per_channel=options.per_channel == "all",
                                 reduce_range=options.reduce_range, op_types_to_quantize=ops,
                                 nodes_to_exclude=exclude)
            else:
                if reader is None:
                    raise ExportError("static quantisation needs calibration recordings")
                reader.rewind()
                sixteen = options.activation_bits == 16
                extra = {"ActivationSymmetric": sixteen, "WeightSymmetric": True}
                per_op = policy.per_channel_ops if policy is not None else ()
                if options.per_channel == "family" and per_op:  # the family's ops only
                    extra["TensorQuantOverrides"] = {
                        name: [{"axis": 0}] for name in _weights_of(fp32_path, per_op)}
                quantize_static(str(fp32_path), str(out_path), reader,
                                quant_format=(QuantFormat.QOperator
                                              if options.quant_format == "qoperator"
                                              else QuantFormat.QDQ),
                                per_channel=options.per_channel == "all",
                                reduce_range=options.reduce_range,
                                activation_type=QuantType.QInt16 if sixteen else QuantType.QUInt8,
                                weight_type=weight, op_types_to_quantize=ops,
                                nodes_to_exclude=exclude,
                                calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
        proto = onnx.load(str(out_path))
        shorten_names(proto)
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(out_path))
    except ExportError:
        raise
    except Exception as exc:  # the quantiser raises many types; name the graph
        raise ExportError(f"{fp32_path.name}: int8 quantisation failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return out_path


def _variance_matmuls(path: Path) -> list[str]:
    """The MatMul nodes whose activation is a square ``Mul(a, a)``: a mean-field network's
    variance path (``E[w^2]``-weighted squares), which int8 rounds to zero or below."""
    import onnx

    graph = onnx.load(str(path)).graph
    squares = {n.output[0] for n in graph.node
               if n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[0] in squares]


def _weights_of(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """The constant weight inputs of the graph's nodes of ``op_types``."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {init.name for init in graph.initializer}
    return [n.input[1] for n in graph.node if n.op_type in op_types and len(n.input) > 1
            and n.input[1] in constants]


@contextlib.contextmanager
def _quiet_quantiser():
    """ONNX Runtime's quantiser logs advice (pre-processing, the opset it moves a 16-bit model
    to) on the root logger at WARNING; an export prints its own account."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
