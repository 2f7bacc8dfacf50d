"""torch -> ONNX: the step graph and the chunk graph of one model, with tidy weights."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from pathlib import Path

import torch

from wavedge.errors import ExportError
from wavedge.export.graphs import build_graph, dummy_inputs, io_names
from wavedge.models import StepModel

DEFAULT_OPSET = 19


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints and its 'torchvision is not installed' warnings."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_graph(model: StepModel, path: Path, samples: int, opset: int = DEFAULT_OPSET,
                 graph_kind: str | None = None, batch: int = 1) -> Path:
    """Export the step graph (``samples == 1``) or the chunk graph of ``samples`` to ``path``,
    its tensors named and typed by the model's signature (inputs normalised in-graph where it
    declares so); ``graph_kind="identity"`` exports the benchmark floor graph instead.

    The batch is fixed at ``batch`` streams per call (1: one stream; a ``StreamGroup`` steps
    up to ``batch`` streams in one call). Raises ``ExportError`` when torch cannot export the
    model.
    """
    import onnx

    model = model.eval()
    kind = graph_kind or ("step" if samples == 1 else "chunk")
    graph = build_graph(model, kind, samples)
    inputs, outputs = io_names(model)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(graph, dummy_inputs(model, samples, batch), dynamo=True,
                                        input_names=inputs, output_names=outputs,
                                        opset_version=opset, verbose=False)
    except Exception as exc:  # the exporter raises many types; say which graph failed
        raise ExportError(f"torch could not export the {model.arch or type(model).__name__} "
                          f"{kind} graph: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    proto = program.model_proto
    dedupe_initializers(proto)
    strip_debug_info(proto)
    arch = model.arch or type(model).__name__
    proto.doc_string = f"wavedge {arch} {kind} ({samples} sample(s) per call, batch {batch})"
    onnx.helper.set_model_props(proto, {"wavedge.arch": arch,
                                        "wavedge.graph": kind,
                                        "wavedge.samples_per_call": str(samples),
                                        "wavedge.batch": str(batch)})
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


def dedupe_initializers(proto) -> int:
    """Point every node at one copy of each distinct constant; return how many were dropped.

    The dynamo exporter folds a transposed weight once per unrolled step, so a chunk graph of K
    steps would otherwise carry K copies of the same matrix.
    """
    graph = proto.graph
    first: dict[str, str] = {}
    rename: dict[str, str] = {}
    keep = []
    for init in graph.initializer:
        anonymous = type(init)()
        anonymous.CopyFrom(init)
        anonymous.name = ""
        key = hashlib.sha256(anonymous.SerializeToString(deterministic=True)).hexdigest()
        if key in first:
            rename[init.name] = first[key]
        else:
            first[key] = init.name
            keep.append(init)
    if not rename:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return len(rename)


def strip_debug_info(proto) -> None:
    """Drop per-node stack traces and intermediate shape annotations.

    They carry the exporting machine's file paths and make up most of a small model's bytes;
    the runtime needs neither.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.value_info[:]


def shorten_names(proto) -> None:
    """Rename the graph's inner tensors ``t<i>`` and drop node names: the quantiser names each
    tensor after its source with suffixes (``_QuantizeLinear_Output``, ``_quantized_scale``),
    a sixth of an int8 step graph's bytes. Inputs and outputs keep their names."""
    graph = proto.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]


def scan_chunk(step_path: Path, out_path: Path, samples: int, n_inputs: int,
               n_outputs: int) -> Path:
    """Write the chunk graph of ``samples`` as the step graph at ``step_path`` inside an ONNX
    ``Scan``: its first ``n_inputs`` inputs and ``n_outputs`` outputs gain a time axis of K
    and the state is carried through the K steps. Its numbers are the step graph's exactly
    and its weights are stored once (an unrolled int8 chunk carries K sets of quantisation
    nodes: 3.2x the size)."""
    import onnx
    from onnx import helper

    step = onnx.load(str(step_path))
    graph = step.graph
    inputs, outputs = list(graph.input), list(graph.output)
    if len(inputs) - n_inputs != len(outputs) - n_outputs:
        raise ExportError(f"{step_path.name}: not a wavedge step graph (as many state inputs "
                          "as state outputs)")
    scanned_in, state_in = inputs[:n_inputs], inputs[n_inputs:]
    scanned_out, state_out = outputs[:n_outputs], outputs[n_outputs:]
    body_name = {v.name: f"step.{v.name}" for v in (*inputs, *outputs)}  # no outer shadowing
    for node in graph.node:
        node.input[:] = [body_name.get(n, n) for n in node.input]
        node.output[:] = [body_name.get(n, n) for n in node.output]

    def renamed(v, prefix: str = "step."):
        copy = type(v)()
        copy.CopyFrom(v)
        copy.name = prefix + v.name
        return copy

    def widened(v):  # [1, *shape] -> [1, K, *shape]
        copy = renamed(v, "")
        dims = copy.type.tensor_type.shape.dim
        dims.insert(1, type(dims[0])(dim_value=samples))
        return copy

    # Scan's body takes the carried state first, then the scanned slices; same for outputs
    body = helper.make_graph(list(graph.node), "step",
                             [renamed(v) for v in (*state_in, *scanned_in)],
                             [renamed(v) for v in (*state_out, *scanned_out)],
                             initializer=list(graph.initializer))
    scan = helper.make_node("Scan", [v.name for v in (*state_in, *scanned_in)],
                            [v.name for v in (*state_out, *scanned_out)], body=body,
                            num_scan_inputs=n_inputs, scan_input_axes=[1] * n_inputs,
                            scan_output_axes=[1] * n_outputs)
    outer = helper.make_graph([scan], "chunk", [*map(widened, scanned_in), *state_in],
                              [*map(widened, scanned_out), *state_out])
    proto = helper.make_model(outer, opset_imports=step.opset_import, ir_version=step.ir_version)
    proto.doc_string = f"wavedge chunk ({samples} samples per call): the step graph in a Scan"
    props = {p.key: p.value for p in step.metadata_props}
    props.update({"wavedge.graph": "chunk", "wavedge.samples_per_call": str(samples)})
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(out_path))
    return out_path
