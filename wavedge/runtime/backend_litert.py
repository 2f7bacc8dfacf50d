"""LiteRT backend: ``ai_edge_litert``, falling back to ``tflite_runtime`` where only that
installs (e.g. 32-bit Raspberry Pi OS); ``Graph.detail['library']`` says which one loaded.

Each runner is its own interpreter over the shared model bytes (a TFLite interpreter owns its
tensor buffers, so streams cannot share one). Inputs and outputs are matched by name: the
model's TFLite signature keeps the names of the wavedge signature (TFLite input names cannot
hold dots, so ``state_in.h`` arrives as ``state_in_h``).

Full-integer models (int8 or int16 tensors, one scale per tensor) run too: the runner still
takes and gives float32 for them, quantising inputs and dequantising outputs, and carries the
state as the integers the model wrote (see ``LiteRTIntRunner``). Integer and boolean tensors
without a scale (positions, token ids, masks) pass through as they are.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from wavedge.errors import reason
from wavedge.runtime import accel
from wavedge.runtime.backends import BackendError, BackendOptions, Graph, TensorSpec

PROVIDERS = {"cpu": "the interpreter's own CPU kernels"}  # no delegate is loaded


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


@contextlib.contextmanager
def quiet_stderr():
    """Hide the interpreter's C++ 'INFO: Created TensorFlow Lite XNNPACK delegate' line (it
    writes to file descriptor 2 directly); errors still arrive as Python exceptions."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def load_interpreter(content: bytes, threads: int = 1):
    """An interpreter over ``content`` with its tensors allocated (the library's INFO line
    hidden)."""
    factory = _interpreter_class()[0]
    if factory is None:
        raise BackendError("backend 'litert' needs ai-edge-litert (or tflite-runtime): "
                           "pip install ai-edge-litert")
    with quiet_stderr():
        interp = factory(model_content=content, num_threads=threads)
        interp.allocate_tensors()
    return interp


def providers_here() -> list[str]:
    return list(PROVIDERS)


def library() -> str | None:
    """The interpreter's package and version (``ai_edge_litert 2.0.2``), or None where neither
    it nor tflite-runtime is installed."""
    name = _interpreter_class()[1]
    return name and f"{name} {getattr(__import__(name), '__version__', '?')}"


def _wavedge_name(name: str) -> str:
    """TFLite input names cannot hold dots: ``state_in_h`` is wavedge's ``state_in.h``."""
    for kind in ("state_in_", "state_out_"):
        if name.startswith(kind):
            return kind[:-1] + "." + name[len(kind):]
    return name


def _tensor_name(detail: dict) -> str:
    """The wavedge name of a TFLite tensor found by its tensor name (models without a
    signature): converters prefix them ("serving_default_y_output")."""
    name = detail["name"].split(":")[0]
    for prefix in ("serving_default_", "StatefulPartitionedCall_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.endswith("_output"):
        name = name[: -len("_output")]
    return _wavedge_name(name)


def io_details(interp) -> tuple[dict, dict]:
    """{wavedge name: tensor details} of the inputs and outputs, from the model's signature
    when it has one (names as the exporter gave them, even where a converter made an output
    the very tensor of an input), else from tensor names."""
    if interp.get_signature_list():
        runner = interp.get_signature_runner()
        return ({_wavedge_name(k): v for k, v in runner.get_input_details().items()},
                {_wavedge_name(k): v for k, v in runner.get_output_details().items()})
    return ({_tensor_name(d): d for d in interp.get_input_details()},
            {_tensor_name(d): d for d in interp.get_output_details()})


def entry_points(interp, probe_index: int):
    """``SetTensor``, ``GetTensor(index, subgraph)`` and ``Invoke`` of the interpreter's C++
    wrapper, without the Python methods around them: 0.6 us of a 5 us call with five tensors
    (measured on the bundled model). The Python ``invoke`` adds only a check that no numpy
    view of the interpreter's buffers is alive, and runners take none (they copy in and out).
    Holding these makes that check fail, so a runner's interpreter is driven through them
    alone. Where the wrapper is not exposed or takes other arguments (an old tflite-runtime),
    the public methods."""
    inner = getattr(interp, "_interpreter", None)
    if inner is not None and all(hasattr(inner, n) for n in ("SetTensor", "GetTensor", "Invoke")):
        try:
            inner.GetTensor(probe_index, 0)
        except TypeError:
            pass
        else:
            return inner.SetTensor, inner.GetTensor, inner.Invoke
    return interp.set_tensor, (lambda index, subgraph: interp.get_tensor(index)), interp.invoke


class LiteRTGraph(Graph):
    def __init__(self, path, content, factory, inputs, outputs, detail, options) -> None:
        super().__init__(path, inputs, outputs, "litert", detail)
        self._content, self._factory, self._options = content, factory, options

    def runner(self) -> "LiteRTRunner":
        if any(t.scale is not None for t in (*self.inputs, *self.outputs)):
            return LiteRTIntRunner(self)
        simple = (self.n_inputs, self.n_outputs, len(self.inputs)) == (1, 1, 2)
        return LiteRTRunner1(self) if simple else LiteRTRunner(self)

    def bare_call(self, feeds: list[np.ndarray]):
        """The loop a careful user writes: ``set_tensor``/``invoke``/``get_tensor`` on one
        interpreter through bound methods, the feeds shaped beforehand (``feeds[i][k]`` is
        call ``k``'s value of input ``i``); a full-integer model is fed integers quantised
        beforehand, so the call is the interpreter's alone."""
        runner = LiteRTRunner(self)
        set_, get, invoke = runner._set, runner._get, runner._invoke  # wavedge's entry points
        feeds = [(Affine(t).quantize(f) if t.scale is not None else f.astype(t.dtype))
                 .reshape(len(f), *t.shape) for t, f in zip(self.inputs, feeds)]
        state = [np.zeros(t.shape, np.dtype(t.dtype)) for t in self.inputs[self.n_inputs:]]
        i = [0]
        if (len(feeds), len(state), len(runner._out_idx)) == (1, 1, 1):
            # the common shape written out, as a user would for their one model
            (xi,), (si,), (yi,), (so,) = runner._in_idx, runner._s_in, runner._out_idx, \
                runner._s_out
            (rows,), n = feeds, len(feeds[0])

            def call1():
                k = i[0]
                set_(xi, rows[k % n])
                set_(si, state[0])
                invoke()
                state[0] = get(so, 0)
                i[0] = k + 1
                return get(yi, 0)

            return call1
        ins = list(zip(runner._in_idx, feeds))

        def call():
            k = i[0]
            for idx, f in ins:
                set_(idx, f[k % len(f)])
            for idx, buf in zip(runner._s_in, state):
                set_(idx, buf)
            invoke()
            state[:] = [get(idx, 0) for idx in runner._s_out]
            i[0] = k + 1
            return [get(idx, 0) for idx in runner._out_idx]

        return call


class LiteRTRunner:
    def __init__(self, graph: LiteRTGraph) -> None:
        with quiet_stderr():
            self.interp = graph._factory(model_content=graph._content,
                                         num_threads=graph._options.threads)
            self.interp.allocate_tensors()
        by_name_in, by_name_out = io_details(self.interp)
        ins, state_in = graph.inputs[:graph.n_inputs], graph.inputs[graph.n_inputs:]
        outs, state_out = graph.outputs[:graph.n_outputs], graph.outputs[graph.n_outputs:]
        self._in_idx = [by_name_in[t.name]["index"] for t in ins]
        self._s_in = [by_name_in[t.name]["index"] for t in state_in]
        self._out_idx = [by_name_out[t.name]["index"] for t in outs]
        self._s_out = [by_name_out[t.name]["index"] for t in state_out]
        self.inputs = [np.zeros(t.shape, t.host_dtype) for t in ins]
        self.x = self.inputs[0]
        self.state = [np.zeros(t.shape, t.host_dtype) for t in state_in]
        self._set, self._get, self._invoke = entry_points(self.interp, self._out_idx[0])

    def run(self) -> list[np.ndarray]:
        self._call()
        get = self._get
        return [get(idx, 0) for idx in self._out_idx]

    def run_row(self) -> list[np.ndarray]:
        self._call()
        get = self._get
        return [get(idx, 0)[0] for idx in self._out_idx]

    def _call(self) -> None:
        """Set the inputs and the state, invoke, take the new state."""
        set_, get = self._set, self._get
        for idx, buf in zip(self._in_idx, self.inputs):
            set_(idx, buf)
        for idx, buf in zip(self._s_in, self.state):
            set_(idx, buf)
        self._invoke()
        # get_tensor returns fresh arrays: take them as they are instead of copying again
        self._prev, self.state = self.state, [get(idx, 0) for idx in self._s_out]

    def rewind(self) -> None:
        """Make the state the one before the last ``run()`` again."""
        self.state = self._prev


class LiteRTRunner1(LiteRTRunner):
    """The common case of one input, one output and one state tensor, without the loops (a
    push is only ~7 us here, so a microsecond of Python is worth saving)."""

    _c = None  # the same call in C (wavedge.runtime.accel), where it is built

    def __init__(self, graph: LiteRTGraph) -> None:
        super().__init__(graph)
        self._xi, self._yi = self._in_idx[0], self._out_idx[0]
        self._si, self._so = self._s_in[0], self._s_out[0]
        self._state = self.state[0]
        fast = accel.module()
        if fast is not None:
            self._c = fast.LiteRT1(self._set, self._get, self._invoke, self._xi, self._si,
                                   self._so, self._yi, self.x, self._state)
            self.run, self.run_row, self.rewind = self._c.run, self._c.run_row, self._c.rewind

    @property
    def state(self) -> list[np.ndarray]:
        return [self._state if self._c is None else self._c.state]

    @state.setter
    def state(self, value: list[np.ndarray]) -> None:
        if self._c is None:
            self._state = value[0]
        else:
            self._c.state = value[0]

    def run(self) -> list[np.ndarray]:
        return [self._call1()]

    def run_row(self) -> list[np.ndarray]:
        return [self._call1()[0]]

    def _call1(self) -> np.ndarray:
        """Set the input and the state, invoke, take the new state; the output."""
        self._set(self._xi, self.x)
        self._set(self._si, self._state)
        self._invoke()
        self._prev, self._state = self._state, self._get(self._so, 0)
        return self._get(self._yi, 0)

    def rewind(self) -> None:
        self._state = self._prev


class Affine:
    """float32 <-> one integer tensor: ``q = clip(round(v / scale) + zero_point)``."""

    def __init__(self, spec: TensorSpec) -> None:
        self.dtype = np.dtype(spec.dtype)
        self.scale, self.zero_point = np.float32(spec.scale), spec.zero_point
        info = np.iinfo(self.dtype)
        self.lo, self.hi = info.min, info.max

    def quantize(self, v: np.ndarray) -> np.ndarray:
        q = np.rint(v / self.scale)
        if self.zero_point:
            q += self.zero_point
        # two ufuncs, not np.clip: 2.2 against 2.8 us for 110 values (np.clip's wrapper)
        np.maximum(q, self.lo, out=q)
        np.minimum(q, self.hi, out=q)
        return q.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        v = q.astype(np.float32)
        if self.zero_point:
            v -= self.zero_point
        v *= self.scale
        return v


class _Passthrough:
    """An unquantised tensor (an integer position, a mask) in a full-integer model."""

    def __init__(self, spec: TensorSpec) -> None:
        self.dtype = np.dtype(spec.dtype)

    def quantize(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, self.dtype)

    dequantize = quantize


def codec(spec: TensorSpec):
    return Affine(spec) if spec.scale is not None else _Passthrough(spec)


class LiteRTIntRunner(LiteRTRunner):
    """A full-integer model behind the float32 runner interface.

    The state is carried as the integers the model wrote (requantised only where its input and
    output scales differ; wavedge's export ties them): streaming never converts it. The float
    ``state`` is made when asked for, and whatever the caller then writes into it (a reset, a
    restore) is quantised back at the next call."""

    def __init__(self, graph: LiteRTGraph) -> None:
        super().__init__(graph)
        n_in, n_out = graph.n_inputs, graph.n_outputs
        state_in, state_out = graph.inputs[n_in:], graph.outputs[n_out:]
        self._qx = [codec(t) for t in graph.inputs[:n_in]]
        self._qs = [codec(t) for t in state_in]
        self._qy = [codec(t) for t in graph.outputs[:n_out]]
        self._ds = [codec(t) for t in state_out]
        self._same_scale = [(i.scale, i.zero_point, i.dtype) == (o.scale, o.zero_point, o.dtype)
                            for i, o in zip(state_in, state_out)]
        self._q_state = [q.quantize(np.zeros(t.shape, t.host_dtype))
                         for q, t in zip(self._qs, state_in)]
        self._f_state: list[np.ndarray] | None = None

    @property
    def state(self) -> list[np.ndarray]:
        if self._f_state is None:
            self._f_state = [q.dequantize(v) for q, v in zip(self._qs, self._q_state)]
        return self._f_state

    @state.setter
    def state(self, value: list[np.ndarray]) -> None:
        self._f_state = list(value)

    def run(self) -> list[np.ndarray]:
        set_, get = self._set, self._get
        if self._f_state is not None:  # handed out: the caller may have written into it
            self._q_state = [q.quantize(v) for q, v in zip(self._qs, self._f_state)]
            self._f_state = None
        for idx, q, buf in zip(self._in_idx, self._qx, self.inputs):
            set_(idx, q.quantize(buf))
        for idx, v in zip(self._s_in, self._q_state):
            set_(idx, v)
        self._invoke()
        self._prev_q = self._q_state
        self._q_state = [get(idx, 0) if same else q.quantize(d.dequantize(get(idx, 0)))
                         for idx, same, q, d in zip(self._s_out, self._same_scale, self._qs,
                                                    self._ds)]
        return [q.dequantize(get(idx, 0)) for idx, q in zip(self._out_idx, self._qy)]

    def rewind(self) -> None:
        self._q_state, self._f_state = self._prev_q, None

    def run_row(self) -> list[np.ndarray]:
        return [v[0] for v in self.run()]


def tensor_spec(path: Path, name: str, d: dict) -> TensorSpec:
    shape = tuple(int(v) for v in d["shape"])
    dtype = np.dtype(d["dtype"])
    scales = d.get("quantization_parameters", {}).get("scales", ())
    if dtype.name in ("float32", "int32", "int64", "bool") and not len(scales):
        return TensorSpec(name, shape, dtype.name)
    if dtype in (np.int8, np.int16) and len(scales) == 1:
        zero_point = int(d["quantization_parameters"]["zero_points"][0])
        return TensorSpec(name, shape, dtype.name, float(scales[0]), zero_point)
    raise BackendError(f"{path}: tensor {name!r} is {dtype.name} without one scale; this "
                       "runtime feeds float32, int32, int64 and bool as they are, and int8/int16 "
                       "with one scale per tensor")


def load(path: Path, options: BackendOptions) -> LiteRTGraph:
    factory, package = _interpreter_class()
    if factory is None:
        raise BackendError("backend 'litert' needs ai-edge-litert (or tflite-runtime): "
                           "pip install ai-edge-litert")
    if options.profile:
        raise BackendError(f"{package}: no per-operator profile from its Python interpreter "
                           "(LiteRT's benchmark_model --enable_op_profiling=true gives one)")
    content = Path(path).read_bytes()
    try:
        interp = load_interpreter(content, options.threads)
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError on bad files
        raise BackendError(f"{path}: {package} cannot load it: {reason(exc)}") from None
    # in file order; wavedge.runtime.model puts them in signature order
    specs = [[tensor_spec(path, name, d) for name, d in details.items()]
             for details in io_details(interp)]
    return LiteRTGraph(path, content, factory, specs[0], specs[1],
                       {"library": library(), "threads": options.threads}, options)
