"""torch -> TFLite (fp32) through litert-torch, without TensorFlow (the optional ``tflite``
extra: ``pip install 'wavedge[tflite]'``; a heavy, export-time-only dependency).

The graphs are the same ``StepGraph``/``ChunkGraph`` as for ONNX (normalisation inside, state in
and out), named by the model's signature. TFLite signatures keep output names as given; input
names come from Python argument names, so ``state_in.h`` is written ``state_in_h`` and the LiteRT
backend matches either.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wavedge.errors import ExportError
from wavedge.export.graphs import build_graph, dummy_inputs, io_names
from wavedge.export.quantize import StreamCalibrationReader
from wavedge.models import StepModel
from wavedge.signature import state_input_name, state_output_name


def is_installed() -> bool:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def _tflite_name(name: str) -> str:
    return name.replace(".", "_")


class _Signature(nn.Module):
    """The graph with the signature's names: keyword inputs (dots written ``_``), a dict of
    named outputs."""

    def __init__(self, graph: nn.Module, inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.inner = graph  # not "graph": fx reserves it
        self.inputs, self.outputs = [_tflite_name(n) for n in inputs], outputs

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.inner(*(inputs[n] for n in self.inputs))
        return dict(zip(self.outputs, res))


def export_tflite_graph(model: StepModel, path: Path, samples: int,
                        graph_kind: str | None = None, batch: int = 1) -> Path:
    """Convert the step graph (``samples == 1``), chunk graph or identity (benchmark floor)
    graph, at ``batch`` streams per call, to an fp32 ``.tflite``."""
    try:
        import litert_torch
    except ImportError:
        raise ExportError("TFLite export needs litert-torch: pip install 'wavedge[tflite]'") \
            from None
    model = model.eval()
    kind = graph_kind or ("step" if samples == 1 else "chunk")
    graph = build_graph(model, kind, samples)
    inputs, outputs = io_names(model)
    kwargs = {_tflite_name(n): t for n, t in zip(inputs, dummy_inputs(model, samples, batch))}
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(_Signature(graph, inputs, outputs).eval(),
                                        sample_kwargs=kwargs)
            path.parent.mkdir(parents=True, exist_ok=True)
            edge.export(os.fspath(path))
        shorten_tensor_names(path)
    except Exception as exc:  # the converter raises many types; say which graph failed
        raise ExportError(f"litert-torch could not convert the {model.arch or type(model).__name__}"
                          f" {kind} graph: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return path


def shorten_tensor_names(path: Path) -> None:
    """Rename the graph's inner tensors ``t<index>``: the converter names each after its torch
    module path, about 80 bytes a tensor - 5 % of a step graph, a third of a chunk graph. The
    inputs, outputs and the signature keep their names."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    for subgraph in model.subgraphs:
        keep = {int(i) for i in (*subgraph.inputs, *subgraph.outputs)}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = f"t{index}"
    Path(path).write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def _extremes(old: dict, new: dict) -> dict:
    """Calibration statistic: the range of everything seen. (ai-edge-quantizer's default, a
    moving average of per-sample ranges, set the state's range to 7 where it reaches 19 and
    clipped it: 35 points of accuracy lost, in 8 and 16 bits alike.)"""
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def quantize_tflite(fp32_path: Path, out_path: Path, reader: StreamCalibrationReader,
                    model_signature, policy, activation_bits: int = 16) -> dict:
    """Full-integer TFLite through ai-edge-quantizer (which litert-torch brings): int8 weights
    (per output channel by default, per tensor for the fully-connected layers, as
    ``wavedge.models.quant_aware`` trains them) and ``activation_bits`` activations, integer
    inputs and outputs. Calibrated on ``reader``'s feeds (long streams, state carried) with the
    range of everything seen; where the family's ``policy`` says so, each float state's
    recurrence shares one range, so one scale (see ``_tie_state_ranges``): a board carries the
    integers from one call to the next as they are.

    Returns the manifest's description of the quantisation (the caller adds the calibration
    data's).
    """
    try:
        from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
    except ImportError:
        raise ExportError("int8 TFLite needs ai-edge-quantizer: pip install 'wavedge[tflite]'") \
            from None
    rm = recipe_manager.RecipeManager()
    rm.add_static_config(".*", "*", activation_num_bits=activation_bits, weight_num_bits=8)
    rm.add_static_config(".*", "FULLY_CONNECTED", activation_num_bits=activation_bits,
                         weight_num_bits=8, weight_granularity=qtyping.QuantGranularity.TENSORWISE)
    feeds = [{name.replace(".", "_"): v for name, v in feed.items()} for feed in reader]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            cal = calibrator.Calibrator(Path(fp32_path).read_bytes(), qsv_update_func=_extremes)
            (signature,) = cal.get_signature_list()
            cal.calibrate({signature: feeds}, rm)
            qsvs = cal.get_model_qsvs()
            if policy.tie_states:
                float_states = [st.name for st in model_signature.state
                                if st.dtype == "float32"]
                qsvs = _tie_state_ranges(qsvs, fp32_path, float_states)
            qt = quantizer.Quantizer(os.fspath(fp32_path))
            qt.load_quantization_recipe(rm.get_quantization_recipe())
            qt.quantize(qsvs).export_model(os.fspath(out_path), overwrite=True)
    except Exception as exc:  # the quantiser raises many types; name the graph
        raise ExportError(f"{fp32_path.name}: int8 TFLite quantisation failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                          ) from exc
    return {"tool": "ai-edge-quantizer", "weights": policy.description,
            "activations": f"int{activation_bits}", "io": f"int{activation_bits}",
            "state": ("state in, state out and the sum that makes the new state share one "
                      "scale: carry the integers as they are") if policy.tie_states else
                     "each tensor its own scale",
            **({"variance": "in int16 too: full-integer TFLite keeps no float path (ONNX "
                            "int8 keeps it float)"} if policy.float_variance else {})}


def _tie_state_ranges(qsvs: dict, fp32_path: Path, states: list[str]) -> dict:
    """Give every tensor of each state's recurrence one range (so one scale, one zero point):
    the state input, what is cut and joined from it (slices, concatenations, reshapes), the
    state output and the tensors summed into it. The state then needs no requantisation between
    calls, and the sum that makes the new state adds integers of one scale: implementations
    that round a layer differently by one step (TFLite Micro and LiteRT's optimised kernels
    do) stay one step apart, where a rescaling add made it two."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from wavedge.runtime.backend_litert import io_details, load_interpreter

    ops = schema.BuiltinOperator
    reshaping = {ops.RESHAPE, ops.TRANSPOSE, ops.SQUEEZE, ops.EXPAND_DIMS}
    moving = reshaping | {ops.SLICE, ops.STRIDED_SLICE, ops.CONCATENATION, ops.GATHER}
    content = Path(fp32_path).read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]

    def code(op) -> int:
        c = model.operatorCodes[op.opcodeIndex]
        return max(c.builtinCode, c.deprecatedBuiltinCode)

    def name(i: int) -> str:
        return graph.tensors[i].name.decode()

    producer = {int(o): op for op in graph.operators for o in op.outputs}

    def back_through_reshapes(i: int) -> list[int]:
        chain = [i]
        while i in producer and code(producer[i]) in reshaping:
            i = int(producer[i].inputs[0])
            chain.append(i)
        return chain

    # wavedge's names for the signature's tensors, as the runtime reads them
    inputs, outputs = io_details(load_interpreter(content))
    for state in states:
        d_in, d_out = inputs.get(state_input_name(state)), outputs.get(state_output_name(state))
        if d_in is None or d_out is None:
            raise ExportError(f"{fp32_path.name}: state input {state} has no output")
        i, out = int(d_in["index"]), int(d_out["index"])
        tied = {i}
        for op in graph.operators:  # operators are stored in execution order
            if code(op) not in moving:
                continue
            data = list(op.inputs) if code(op) == ops.CONCATENATION else [op.inputs[0]]
            if all(int(t) in tied for t in data):
                tied.update(int(o) for o in op.outputs)
        chain = back_through_reshapes(out)
        tied.update(chain)
        adder = producer.get(chain[-1])
        if adder is not None and code(adder) == ops.ADD:
            for t in adder.inputs:
                tied.update(back_through_reshapes(int(t)))
        keys = [name(t) for t in tied if name(t) in qsvs]
        if name(i) not in keys or name(out) not in keys:
            raise ExportError(f"{fp32_path.name}: no calibration range for state {state}")
        low = min(float(np.min(qsvs[k]["min"])) for k in keys)
        high = max(float(np.max(qsvs[k]["max"])) for k in keys)
        for k in keys:
            qsvs[k] = dict(qsvs[k], min=np.full_like(qsvs[k]["min"], low),
                           max=np.full_like(qsvs[k]["max"], high))
    return qsvs
