"""LiteRT backend: ``ai_edge_litert``, falling back to ``tflite_runtime`` where only that
installs (e.g. 32-bit Raspberry Pi OS); ``Graph.detail['library']`` says which one loaded.

Each runner is its own interpreter over the shared model bytes (a TFLite interpreter owns its
tensor buffers, so streams cannot share one). Inputs and outputs are matched by name; the model
must keep wavedge's names (``x``, ``state_in.*`` -> ``y``, ``state_out.*``) in its signature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavedge.runtime.backends import BackendError, BackendOptions, Graph, TensorSpec


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        return None, None


def is_installed() -> bool:
    return _interpreter_class()[0] is not None


def _tensor_name(detail: dict) -> str:
    # converters prefix signature tensors (e.g. "serving_default_x:0"); keep the wavedge name
    name = detail["name"]
    for prefix in ("serving_default_", "StatefulPartitionedCall:"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split(":")[0]


class LiteRTGraph(Graph):
    def __init__(self, path, content, factory, inputs, outputs, detail, options) -> None:
        super().__init__(path, inputs, outputs, "litert", detail)
        self._content, self._factory, self._options = content, factory, options

    def runner(self) -> "LiteRTRunner":
        return LiteRTRunner(self)


class LiteRTRunner:
    def __init__(self, graph: LiteRTGraph) -> None:
        self.interp = graph._factory(model_content=graph._content,
                                     num_threads=graph._options.threads)
        self.interp.allocate_tensors()
        by_name_in = {_tensor_name(d): d for d in self.interp.get_input_details()}
        by_name_out = {_tensor_name(d): d for d in self.interp.get_output_details()}
        x_spec, *state_in = graph.inputs
        y_spec, *state_out = graph.outputs
        self._x_idx = by_name_in[x_spec.name]["index"]
        self._s_in = [by_name_in[t.name]["index"] for t in state_in]
        self._y_idx = by_name_out[y_spec.name]["index"]
        self._s_out = [by_name_out[t.name]["index"] for t in state_out]
        self.x = np.zeros(x_spec.shape, np.float32)
        self.y = np.zeros(y_spec.shape, np.float32)
        self.state = [np.zeros(t.shape, np.float32) for t in state_in]

    def run(self) -> None:
        interp = self.interp
        interp.set_tensor(self._x_idx, self.x)
        for idx, buf in zip(self._s_in, self.state):
            interp.set_tensor(idx, buf)
        interp.invoke()
        self.y[...] = interp.get_tensor(self._y_idx)
        for idx, buf in zip(self._s_out, self.state):
            buf[...] = interp.get_tensor(idx)


def load(path: Path, options: BackendOptions) -> LiteRTGraph:
    factory, library = _interpreter_class()
    if factory is None:
        raise BackendError("backend 'litert' needs ai-edge-litert (or tflite-runtime): "
                           "pip install ai-edge-litert")
    content = Path(path).read_bytes()
    try:
        interp = factory(model_content=content, num_threads=options.threads)
        interp.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError on bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"{path}: {library} cannot load it: {first}") from None
    specs = []
    for details in (interp.get_input_details(), interp.get_output_details()):
        group = []
        for d in details:
            if d["dtype"] != np.float32:
                raise BackendError(f"{path}: tensor {_tensor_name(d)!r} is {d['dtype'].__name__}; "
                                   "this runtime feeds float32")
            group.append(TensorSpec(_tensor_name(d), tuple(int(v) for v in d["shape"])))
        specs.append(group)
    version = getattr(__import__(library), "__version__", "?")
    return LiteRTGraph(path, content, factory, specs[0], specs[1],
                       {"library": f"{library} {version}", "threads": options.threads}, options)
