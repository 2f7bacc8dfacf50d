"""int8 ONNX: static quantisation calibrated on full-length streams with the state carried.

Recurrent models are where quantisation fails most often: calibrating on short or independent
samples under-estimates the range of the fed-back state, and ONNX Runtime's u8 x s8 kernels
saturate on x86 CPUs without VNNI. So the calibration reader streams the fp32 graph itself over
long sequences of real recordings, state carried from step to step, and hands ONNX Runtime's
calibrator the very ``(x, state_in.*)`` pairs a board will see; weights are per output channel
with ``reduce_range`` (7-bit) by default.

The reader follows ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` returns a
feed dict or None) and is also an iterator, so it can feed any calibrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavedge.errors import ExportError, InputError


@dataclass(frozen=True)
class QuantOptions:
    """How to quantise, and how much accuracy may be lost.

    The defaults are what held the bundled wave-encoder's accuracy, measured (docs/quantisation.md):
    int8 weights for the input and readout matmuls, activations quantised on the fly, and the
    ring convolution - the recurrence, whose error is re-injected at every step - kept in fp32.
    Static int8 of everything (calibrated activations, the state included) lost 40 points.
    """

    method: str = "dynamic"  # dynamic (int8 weights, activations on the fly) or static
    op_types: tuple[str, ...] = ("Gemm", "MatMul")  # which ops; () = every quantisable op
    weight_type: str = "quint8"  # quint8 or qint8
    quant_format: str = "qoperator"  # static only: qoperator (smaller) or qdq
    per_channel: bool = False
    reduce_range: bool = False  # 7-bit weights: avoids u8 x s8 saturation without VNNI
    calibration_passes: int = 2  # shuffled passes over the calibration recordings
    calibration_stride: int = 2  # keep every n-th step's feed (the state still runs every step)
    max_accuracy_drop: float = 1.0  # points of test accuracy an int8 artefact may lose
    force: bool = False  # write an artefact that misses the accuracy gate anyway
    # int8 TFLite: full-integer, int8 weights; activations (the state included) in 16 bits
    # (TFLite's "16x8") or 8; 8 lost 28 points on the bundled model (docs/quantisation.md)
    tflite_activation_bits: int = 16

    def validate(self) -> None:
        if self.method not in ("static", "dynamic"):
            raise InputError(f"quantisation method {self.method!r}: choose static or dynamic")
        if self.weight_type not in ("quint8", "qint8"):
            raise InputError(f"weight type {self.weight_type!r}: choose quint8 or qint8")
        if self.quant_format not in ("qoperator", "qdq"):
            raise InputError(f"quantisation format {self.quant_format!r}: choose qoperator or qdq")
        if self.calibration_passes < 1 or self.calibration_stride < 1:
            raise InputError("calibration_passes and calibration_stride must be at least 1")
        if self.tflite_activation_bits not in (8, 16):
            raise InputError(f"TFLite activation bits must be 8 or 16, got "
                             f"{self.tflite_activation_bits}")
        if self.max_accuracy_drop < 0:
            raise InputError(f"max_accuracy_drop must be >= 0, got {self.max_accuracy_drop}")


class StreamCalibrationReader:
    """Feeds for calibrating one graph: the recordings ``sequences`` (``[N, T, D]``, raw
    sensor units) concatenated in shuffled order, ``passes`` times, run through the fp32 graph
    at ``fp32_path`` with its state carried throughout; every ``stride``-th call's inputs are
    kept. For a chunk graph, ``samples_per_call`` samples go in per call."""

    def __init__(self, fp32_path: Path, sequences: np.ndarray, samples_per_call: int = 1,
                 passes: int = 2, stride: int = 2, seed: int = 0) -> None:
        from wavedge.runtime.backends import load_graph

        sequences = np.asarray(sequences, np.float32)
        if sequences.ndim != 3:
            raise InputError(f"calibration recordings: expected shape (N, T, D), got "
                             f"{sequences.shape}")
        # the fp32 graph through wavedge's own runtime: ONNX Runtime or LiteRT by file type
        backend = "litert" if Path(fp32_path).suffix == ".tflite" else "onnxruntime"
        graph = load_graph(backend, Path(fp32_path))
        runner = graph.runner()
        names = [t.name for t in graph.inputs]
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(sequences)) for _ in range(passes)])
        stream = sequences[order].reshape(-1, sequences.shape[-1])
        k = samples_per_call
        stream = stream[: len(stream) // k * k]
        self.feeds: list[dict] = []
        for n, i in enumerate(range(0, len(stream), k)):
            runner.x[...] = stream[i:i + k].reshape(runner.x.shape)
            if n % stride == 0:
                self.feeds.append(dict(zip(names, [runner.x.copy(),
                                                   *(s.copy() for s in runner.state)])))
            runner.run()
        self.description = {
            "recordings": int(len(sequences)), "samples_per_recording": int(sequences.shape[1]),
            "passes": passes, "stream_samples": int(len(stream)), "feeds": len(self.feeds),
            "stride": stride, "seed": seed,
            "how": "recordings concatenated in shuffled order, state carried throughout, "
                   "the fp32 graph's own state fed back"}
        self._it = iter(self.feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __iter__(self):
        return iter(self.feeds)


def quantize_onnx(fp32_path: Path, out_path: Path, reader: StreamCalibrationReader | None,
                  options: QuantOptions) -> Path:
    """Write the int8 version of ``fp32_path`` to ``out_path``; raises ``ExportError``."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    options.validate()
    weight = QuantType.QUInt8 if options.weight_type == "quint8" else QuantType.QInt8
    ops = list(options.op_types) or None
    try:
        if options.method == "dynamic":
            quantize_dynamic(str(fp32_path), str(out_path), weight_type=weight,
                             per_channel=options.per_channel, reduce_range=options.reduce_range,
                             op_types_to_quantize=ops)
        else:
            if reader is None:
                raise ExportError("static quantisation needs calibration recordings")
            reader.rewind()
            quantize_static(str(fp32_path), str(out_path), reader,
                            quant_format=(QuantFormat.QOperator
                                          if options.quant_format == "qoperator"
                                          else QuantFormat.QDQ),
                            per_channel=options.per_channel, reduce_range=options.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=weight,
                            op_types_to_quantize=ops, calibrate_method=CalibrationMethod.MinMax)
    except ExportError:
        raise
    except Exception as exc:  # the quantiser raises many types; name the graph
        raise ExportError(f"{fp32_path.name}: int8 quantisation failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return out_path
