"""torch -> TFLite (fp32) through litert-torch, without TensorFlow (the optional ``tflite``
extra: ``pip install 'wavedge[tflite]'``; a heavy, export-time-only dependency).

The graphs are the same ``StepGraph``/``ChunkGraph`` as for ONNX (normalisation inside, state in
and out). TFLite signatures keep output names as given; input names come from Python argument
names, so ``state_in.h`` is written ``state_in_h`` and the LiteRT backend matches either.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from wavedge.errors import ExportError
from wavedge.export.graphs import build_graph
from wavedge.models import StepModel


def is_installed() -> bool:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


class _Signature(nn.Module):
    """Named inputs (``x``, ``state_in_<s>``) and named outputs (``y``, ``state_out.<s>``)."""

    def __init__(self, graph: nn.Module, state_names: list[str]) -> None:
        super().__init__()
        self.inner, self.state_names = graph, state_names  # not "graph": fx reserves it

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        state = [inputs[f"state_in_{n}"] for n in self.state_names]
        y, *new_state = self.inner(inputs["x"], *state)
        return {"y": y, **{f"state_out.{n}": s for n, s in zip(self.state_names, new_state)}}


def export_tflite_graph(model: StepModel, path: Path, samples: int, mean, std,
                        graph_kind: str | None = None) -> Path:
    """Convert the step graph (``samples == 1``), chunk graph or identity (benchmark floor)
    graph to an fp32 ``.tflite``."""
    try:
        import litert_torch
    except ImportError:
        raise ExportError("TFLite export needs litert-torch: pip install 'wavedge[tflite]'") \
            from None
    model = model.eval()
    kind = graph_kind or ("step" if samples == 1 else "chunk")
    graph = build_graph(model, kind, samples, mean, std)
    names = [s.name for s in model.state_spec]
    d = model.input_size
    kwargs = {"x": torch.zeros(1, d) if samples == 1 else torch.zeros(1, samples, d)}
    kwargs.update({f"state_in_{n}": s for n, s in zip(names, model.init_state(1))})
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(_Signature(graph, names).eval(), sample_kwargs=kwargs)
            path.parent.mkdir(parents=True, exist_ok=True)
            edge.export(os.fspath(path))
    except Exception as exc:  # the converter raises many types; say which graph failed
        raise ExportError(f"litert-torch could not convert the {model.arch} {kind} graph: "
                          f"{type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return path


def quantize_tflite(fp32_path: Path, out_path: Path) -> Path:
    """int8 weights for the fully-connected ops (input drive, readout), float activations, the
    ring convolution left in fp32 - the TFLite twin of the ONNX recipe, through ai-edge-quantizer
    (which litert-torch brings). A dynamic-range ("hybrid") model: LiteRT runs it, TFLite Micro
    does not."""
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError:
        raise ExportError("int8 TFLite needs ai-edge-quantizer: pip install 'wavedge[tflite]'") \
            from None
    base = recipe.dynamic_wi8_afp32()
    rules = [dict(rule, operation="FULLY_CONNECTED") for rule in base]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            qt = quantizer.Quantizer(os.fspath(fp32_path))
            qt.load_quantization_recipe(rules)
            qt.quantize().export_model(os.fspath(out_path), overwrite=True)
    except Exception as exc:  # the quantiser raises many types; name the graph
        raise ExportError(f"{fp32_path.name}: int8 TFLite quantisation failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                          ) from exc
    return out_path
