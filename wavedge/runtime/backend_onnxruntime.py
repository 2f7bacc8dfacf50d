"""ONNX Runtime backend: CPU by default; CUDA and TensorRT providers selectable (Jetson).

Session settings for streaming latency: one intra-op thread, sequential execution, idle-thread
spinning off (no core burnt between samples), denormals flushed to zero, full graph
optimisation. Each runner binds preallocated numpy buffers with IOBinding once, so ``run()``
copies nothing in or out and allocates nothing; the state ping-pongs between two buffers.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

from wavedge.errors import reason
from wavedge.runtime import accel
from wavedge.runtime.backends import BackendError, BackendOptions, Graph, TensorSpec

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}


def library() -> str | None:
    """``onnxruntime VERSION``, or None where it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return f"onnxruntime {onnxruntime.__version__}"


def providers_here() -> list[str]:
    """The providers this onnxruntime build has, by short name (NVIDIA's onnxruntime-gpu on a
    Jetson: cpu, cuda, tensorrt; PyPI's: cpu)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [short for short, provider in PROVIDERS.items() if provider in have]


def session_options(options: BackendOptions, path: Path | None = None):
    """The session settings above; with ``options.profile``, ONNX Runtime's profiler on,
    its trace named after ``path``'s graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.log_severity_level = 3
    if options.profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(options.profile) / Path(path or "graph").stem)
    return so


def trt_cache_dir(given: str | None = None) -> Path:
    """Where TensorRT's engines are kept between starts: ``given``, else the cache folder
    systemd made for the service (``CacheDirectory=``: a service user may have no home, and a
    unit's home may be read-only), else ``$XDG_CACHE_HOME/wavedge/trt``, else
    ``~/.cache/wavedge/trt``."""
    if given:
        return Path(given)
    if os.environ.get("CACHE_DIRECTORY"):  # several folders are ':'-separated; the first
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "trt"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wavedge" / "trt"


def resolve_providers(names: tuple[str, ...], trt_cache: str | None = None) -> list:
    """Map short names to ORT providers (TensorRT with its engine cache in ``trt_cache``,
    default ``trt_cache_dir()``, so a restart loads the engines instead of building them
    again); raise ``BackendError`` for one that is not built in."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    out: list = []
    for name in names:
        provider = PROVIDERS.get(name, name)
        if provider not in have:
            raise BackendError(f"onnxruntime provider {name!r} is not available in this "
                               f"onnxruntime build; available: {', '.join(have)} (a PC needs "
                               "onnxruntime-gpu in place of onnxruntime, a Jetson NVIDIA's "
                               "wheel for its JetPack: docs/boards.md)")
        if provider == PROVIDERS["cuda"]:
            # float32 as on the CPU: CUDA's default TF32 matmuls and convolutions round to 10
            # bits, and a recurrence carries the rounding from step to step
            out.append((provider, {"use_tf32": "0"}))
        elif provider == PROVIDERS["tensorrt"]:
            cache = trt_cache_dir(trt_cache)
            cache.mkdir(parents=True, exist_ok=True)
            out.append((provider, {"trt_engine_cache_enable": "True",
                                   "trt_engine_cache_path": str(cache),
                                   "trt_timing_cache_enable": "True"}))
        else:
            out.append(provider)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # fallback for any node the accelerator lacks
    return out


ORT_DTYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}


class OrtGraph(Graph):
    def __init__(self, path: Path, session, inputs, outputs, detail) -> None:
        super().__init__(path, inputs, outputs, "onnxruntime", detail)
        self.session = session

    def runner(self) -> "OrtRunner":
        return OrtRunner(self)

    def bare_call(self, feeds: list[np.ndarray]):
        """The loop a careful user writes with IOBinding: preallocated buffers bound once,
        the state ping-ponged between two bindings (nothing copied), through the same C++
        entry point wavedge uses; each call copies the next feed rows in and reads the
        outputs in place (``feeds[i][k]`` is call ``k``'s value of input ``i``, batch
        included or not). On an accelerator, the loop that keeps the state there
        (``bare_call_on_device``)."""
        if on_accelerator(self.session):
            return self.bare_call_on_device(feeds, "cuda")
        runner = OrtRunner(self)
        ins = [(buf, f.reshape(len(f), *buf.shape)) for buf, f in zip(runner.inputs, feeds)]
        calls, outputs = runner._calls, runner._outputs
        i = [0]

        def call(runner=runner):  # the runner owns the bound buffers: it must outlive call
            k = i[0]
            for dst, src in ins:
                np.copyto(dst, src[k % len(src)])
            calls[k & 1]()
            i[0] += 1
            return outputs

        return call

    def bare_call_on_device(self, feeds: list[np.ndarray], device: str):
        """The loop a careful user writes for a GPU: the inputs and the state in the device's
        memory (the state ping-ponged between two bindings, never copied back), each call's
        sample copied over in place, the outputs bound in host memory. On an H200 wavedge's
        runner, which keeps the state in host memory, took 1.18x its time (docs/benchmarks.md)."""
        import onnxruntime as ort

        def on_device(spec):
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(spec.shape), spec.host_dtype,
                                                              device, 0)
            value.update_inplace(np.zeros(spec.shape, spec.host_dtype))  # not zeroed
            return value

        n_in, n_out = self.n_inputs, self.n_outputs
        ins = [on_device(spec) for spec in self.inputs[:n_in]]
        state = [[on_device(spec) for spec in self.inputs[n_in:]] for _ in (0, 1)]
        outputs = [np.zeros(t.shape, t.host_dtype) for t in self.outputs[:n_out]]
        bindings = _ping_pong(self, ins, outputs, state)
        rows = [(value, np.ascontiguousarray(f.reshape(len(f), *spec.shape)))
                for value, spec, f in zip(ins, self.inputs, feeds)]
        run, i = self.session.run_with_iobinding, [0]

        def call(keep=(ins, state)):  # the bound device values must outlive call
            k = i[0]
            for value, src in rows:
                value.update_inplace(src[k % len(src)])
            run(bindings[k & 1])
            i[0] += 1
            return outputs

        return call


class OrtRunner:
    """Two IOBindings over preallocated buffers, ping-ponging the state: run ``k`` reads the
    state from buffer ``k % 2`` and writes the new state into the other, so no state is copied.
    Every buffer has its tensor's dtype (float32, int32, int64 or bool).
    """

    def __init__(self, graph: OrtGraph) -> None:
        session = graph.session
        ins, state_in = graph.inputs[:graph.n_inputs], graph.inputs[graph.n_inputs:]
        outs = graph.outputs[:graph.n_outputs]
        self.inputs = [np.zeros(t.shape, t.host_dtype) for t in ins]
        self.x = self.inputs[0]
        self._outputs = [np.zeros(t.shape, t.host_dtype) for t in outs]
        self._rows = [y[0] for y in self._outputs]  # row 0 of each, for run_row
        self._buffers = ([np.zeros(t.shape, t.host_dtype) for t in state_in],
                         [np.zeros(t.shape, t.host_dtype) for t in state_in])
        self._bindings = _ping_pong(graph, self.inputs, self._outputs, self._buffers)
        self._k = 0
        if on_accelerator(session):
            self._calls = [self._bind_inputs_and_run(session, k, ins, state_in) for k in (0, 1)]
            return  # no C fast path: it runs the bindings as they are
        # the C++ entry point without the Python wrapper's per-call checks (graph capture
        # bookkeeping that costs microseconds); the public method where that is not exposed
        inner = getattr(session, "_sess", None)
        internal = inner is not None and all(hasattr(b, "_iobinding") for b in self._bindings)
        if internal:
            self._calls = [lambda b=b._iobinding: inner.run_with_iobinding(b, None)
                           for b in self._bindings]
        else:
            self._calls = [lambda b=b: session.run_with_iobinding(b) for b in self._bindings]
        fast = accel.module()
        if fast is not None and internal:
            # the same run in C (wavedge.runtime.accel), where it is built
            self._c = fast.OrtPair(inner.run_with_iobinding, *[b._iobinding for b in
                                                                self._bindings],
                                   self._outputs, self._rows, self._buffers + (self.inputs,))
            self.run, self.run_row, self.rewind = self._c.run, self._c.run_row, self._c.rewind

    _c = None

    def _bind_inputs_and_run(self, session, k: int, ins, state_in):
        """Run ``k`` on an accelerator. ONNX Runtime copies an input bound in host memory to
        the device when it is bound, not at each run: bound once, every call on CUDA read the
        first call's sample and state (on an H200, 834 of the bundled recording's 4000 classes
        were the CPU's, the same class at every step). So each call binds its inputs again,
        which copies that call's values over; the outputs come back at each run."""
        binding = self._bindings[k]
        pairs = list(zip(ins, self.inputs)) + list(zip(state_in, self._buffers[k]))

        def call():
            for spec, buf in pairs:
                _bind(binding.bind_input, spec, buf)
            session.run_with_iobinding(binding)
        return call

    @property
    def state(self) -> list[np.ndarray]:
        """The current state buffers (they swap roles after every ``run()``)."""
        return self._buffers[self._k if self._c is None else self._c.k]

    def run(self) -> list[np.ndarray]:
        self._calls[self._k]()
        self._k ^= 1
        return [y.copy() for y in self._outputs]  # the bound buffers are rewritten next run

    def run_row(self) -> list[np.ndarray]:
        self._calls[self._k]()
        self._k ^= 1
        return [y.copy() for y in self._rows]

    def rewind(self) -> None:
        """Make the state the one before the last ``run()`` again (its buffer is untouched)."""
        self._k ^= 1


def on_accelerator(session) -> bool:
    """Whether the session runs nodes on a provider other than the CPU (CUDA, TensorRT)."""
    return any(p != PROVIDERS["cpu"] for p in session.get_providers())


def _bind(method, spec: TensorSpec, buf: np.ndarray) -> None:
    method(spec.name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)


def _ping_pong(graph: OrtGraph, inputs: list, outputs: list, states) -> list:
    """The two IOBindings that ping-pong the state: binding ``k`` reads ``states[k]`` and
    writes ``states[1 - k]``. Each value is a host buffer (bound by its address) or an
    ``OrtValue`` in a device's memory."""
    def bind(b, output: bool, spec: TensorSpec, value) -> None:
        if isinstance(value, np.ndarray):
            _bind(b.bind_output if output else b.bind_input, spec, value)
        else:
            (b.bind_ortvalue_output if output else b.bind_ortvalue_input)(spec.name, value)

    bindings = []
    for k in (0, 1):
        b = graph.session.io_binding()
        for spec, value in zip(graph.inputs, [*inputs, *states[k]]):
            bind(b, False, spec, value)
        for spec, value in zip(graph.outputs, [*outputs, *states[1 - k]]):
            bind(b, True, spec, value)
        bindings.append(b)
    return bindings


def _started(path: Path, session, providers: list, said: str) -> None:
    """Refuse a session that runs without a provider it was asked for. ONNX Runtime's Python
    API, when a provider fails to start (TensorRT without its libraries), prints a banner on
    standard output, where `wavedge run --sink jsonl:-` writes its results, and retries on
    CUDA and the CPU: on an H200, `--provider tensorrt` alone ran on CUDA, said only by that
    banner."""
    asked = [p[0] if isinstance(p, tuple) else p for p in providers]
    lost = [short for short, name in PROVIDERS.items()
            if name in asked and name not in session.get_providers()]
    if lost:
        why = re.search(r"^EP Error (.*?)\s+when using", said, re.S | re.M)
        why = re.sub(r"^\S+:\d+ .*?\) (?=[A-Z])", "", why.group(1)).strip() if why else \
            "it did not start"
        raise BackendError(f"{path}: onnxruntime could not start provider "
                           f"{', '.join(lost)}: {why.splitlines()[0]} (leave "
                           f"{' '.join('--provider ' + p for p in lost)} out to run without it)")


def load(path: Path, options: BackendOptions) -> OrtGraph:
    """Create a session for ``path``; raises ``BackendError`` naming the file on failure."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("backend 'onnxruntime' needs the onnxruntime package: "
                           "pip install onnxruntime") from None
    providers = resolve_providers(options.providers, options.trt_cache)
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):  # its fallback's banner: see _started
            session = ort.InferenceSession(str(path), session_options(options, path),
                                           providers=providers)
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise BackendError(f"{path}: onnxruntime cannot load it: {reason(exc)}") from None
    _started(path, session, providers, said.getvalue())
    inputs, outputs = [], []
    for group, target in ((session.get_inputs(), inputs), (session.get_outputs(), outputs)):
        for t in group:
            if t.type not in ORT_DTYPES or not all(isinstance(d, int) for d in t.shape):
                raise BackendError(f"{path}: tensor {t.name!r} is {t.type} {t.shape}; wavedge "
                                   f"graphs have {', '.join(ORT_DTYPES.values())} tensors of "
                                   "fixed shape")
            target.append(TensorSpec(t.name, tuple(t.shape), ORT_DTYPES[t.type]))
    detail = {"library": library(),
              "providers": session.get_providers(), "threads": options.threads}
    return OrtGraph(path, session, inputs, outputs, detail)
