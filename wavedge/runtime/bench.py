"""``wavedge bench``: the numbers an edge engineer needs to choose a backend and precision.

For every installed backend x precision x mode (one sample per call; a chunk of K per call) of a
model directory: init time, first inference, warm-up, per-sample latency (min, p50, p90, p99,
max, std) over several repeats, throughput, duty cycle at the sample rate, peak memory, artefact
size. Beside them, in the same run: the backend's per-call floor (the identity graph exported
with the model), the torch model step by step and a plain numpy step (when torch and the
checkpoint are at hand), and sliding-window re-inference over the last W samples at every step
(what people do without explicit state). Ratios are what to quote: absolute times drift on
shared machines, ratios from one run much less.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavedge.errors import InputError
from wavedge.manifest import load_manifest
from wavedge.runtime.backends import BackendOptions, available
from wavedge.runtime.machine import describe
from wavedge.runtime.model import FILE_FORMAT, expected_io, load_checked_graph, load_model

BENCH_FORMAT = "wavedge-bench"
BENCH_VERSION = 1


@dataclass(frozen=True)
class BenchOptions:
    samples: int = 2000  # timed calls per repeat (a chunk config times samples / K calls)
    repeats: int = 3
    warmup: int = 200
    threads: int = 1
    providers: tuple[str, ...] = ("cpu",)  # onnxruntime providers (a Jetson: cuda, tensorrt)
    pin_cpu: int | None = None  # pin the process to this CPU (Linux)
    rates_hz: tuple[float, ...] = ()  # duty cycle at these rates too (the manifest's is always in)
    window: int = 100  # sliding-window re-inference: samples re-run at every step
    backends: tuple[str, ...] = ()  # default: every installed one
    precisions: tuple[str, ...] = ()  # default: every precision the model directory has
    checkpoint: Path | None = None  # torch model for the torch and numpy baselines

    def validate(self) -> None:
        for name, value, low in (("samples", self.samples, 50), ("repeats", self.repeats, 1),
                                 ("warmup", self.warmup, 0), ("threads", self.threads, 1),
                                 ("window", self.window, 2)):
            if value < low:
                raise InputError(f"bench: {name} must be at least {low}, got {value}")
        if any(not r > 0 for r in self.rates_hz):
            raise InputError(f"bench: rates must be positive, got {list(self.rates_hz)}")


@dataclass
class Config:
    """One measured configuration: per-sample latencies (us) of every repeat."""

    name: str
    kind: str  # stream, floor, baseline
    backend: str | None
    precision: str | None
    mode: str  # step, chunk, window, floor, torch, numpy
    samples_per_call: int
    repeats: list[np.ndarray] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def summary(self, rates_hz: list[float]) -> dict:
        per_repeat_p50 = [float(np.percentile(r, 50)) for r in self.repeats]
        allv = np.concatenate(self.repeats)
        p50 = float(np.median(per_repeat_p50))
        out = {"kind": self.kind, "backend": self.backend, "precision": self.precision,
               "mode": self.mode, "samples_per_call": self.samples_per_call,
               "us_per_sample": {"min": float(allv.min()), "p50": p50,
                                 "p90": float(np.percentile(allv, 90)),
                                 "p99": float(np.percentile(allv, 99)),
                                 "max": float(allv.max()), "std": float(allv.std()),
                                 "p50_per_repeat": per_repeat_p50},
               "throughput_samples_per_s": 1e6 / float(allv.mean()),
               "duty_cycle": {f"{r:g}": p50 * 1e-6 * r for r in rates_hz},
               "duty_cycle_p99": {f"{r:g}": float(np.percentile(allv, 99)) * 1e-6 * r
                                  for r in rates_hz}}
        out.update(self.extra)
        return out


def _time_calls(fn, calls: int, per_call: int) -> np.ndarray:
    clock = time.perf_counter_ns
    ts = np.empty(calls, np.int64)
    for i in range(calls):
        t0 = clock()
        fn()
        ts[i] = clock() - t0
    return ts / 1000.0 / per_call


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if os.uname().sysname == "Linux" else peak / 1e6


def _data(manifest, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.asarray(manifest.mean) + np.asarray(manifest.std)
            * rng.standard_normal((n, manifest.input_size))).astype(np.float32)


def run_bench(model_dir: str | Path, options: BenchOptions = BenchOptions(),
              progress=lambda msg: None) -> dict:
    """Measure every configuration of ``model_dir``; returns the JSON-ready report."""
    options.validate()
    if options.pin_cpu is not None:
        try:
            os.sched_setaffinity(0, {options.pin_cpu})
        except (AttributeError, OSError) as exc:
            raise InputError(f"bench: cannot pin to CPU {options.pin_cpu}: {exc}") from None
    manifest = load_manifest(model_dir)
    rates = sorted({*options.rates_hz, *([manifest.sample_rate_hz] if manifest.sample_rate_hz
                                          else [])})
    data = _data(manifest)
    have = available()
    backends = options.backends or tuple(b for b in FILE_FORMAT if have.get(b))
    precisions = options.precisions or tuple(sorted({f.precision for f in manifest.files
                                                     if f.graph == "step"}))
    bopts = BackendOptions(threads=options.threads, providers=options.providers)
    configs: list[Config] = []
    artefacts = {}
    for backend in backends:
        if not have.get(backend):
            raise InputError(f"bench: backend {backend!r} is not installed here")
        for precision in precisions:
            if manifest.find_file("step", precision, FILE_FORMAT[backend]) is None:
                continue
            progress(f"{backend} {precision}")
            configs += _stream_configs(model_dir, manifest, backend, precision, bopts, data,
                                       options, artefacts)
        floor = _floor_config(manifest, backend, bopts, data, options)
        if floor is not None:
            configs.append(floor)
    notes = []
    if options.checkpoint is not None:
        progress("torch and numpy baselines")
        baselines = _torch_configs(options.checkpoint, data, options)
        if not baselines:
            notes.append("torch is not installed: no torch or numpy baselines")
        configs += baselines
    else:
        notes.append("no --checkpoint: no torch or numpy baselines")
    summaries = {c.name: c.summary(rates) for c in configs}
    return {"format": BENCH_FORMAT, "version": BENCH_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {"name": manifest.name, "directory": str(manifest.directory),
                      "sample_rate_hz": manifest.sample_rate_hz, "artefacts": artefacts},
            "machine": describe(),
            "method": {"samples": options.samples, "repeats": options.repeats,
                       "warmup": options.warmup, "threads": options.threads,
                       "providers": list(options.providers),
                       "pinned_cpu": options.pin_cpu, "window": options.window,
                       "rates_hz": rates, "clock": "time.perf_counter_ns around each call; "
                       "per-sample = per-call / samples per call; p50 = median over repeats of "
                       "each repeat's median; other percentiles over all calls"},
            "peak_rss_mb": _peak_rss_mb(),
            "notes": notes,
            "configs": summaries,
            "ratios": _ratios(summaries)}


def _stream_configs(model_dir, manifest, backend, precision, bopts, data, options,
                    artefacts) -> list[Config]:
    t0 = time.perf_counter()
    model = load_model(model_dir, backend, precision, bopts)
    init_ms = (time.perf_counter() - t0) * 1e3
    fmt = FILE_FORMAT[backend]
    for graph in ("step", "chunk"):
        f = manifest.find_file(graph, precision, fmt)
        if f is not None:
            artefacts[f.path] = f.size_bytes
    library = model.step_graph.detail.get("library", backend)
    out = []
    stream = model.stream()
    t0 = time.perf_counter_ns()
    stream.push(data[0])
    first_us = (time.perf_counter_ns() - t0) / 1000.0
    i = [0]

    def push():
        stream.push(data[i[0] & 4095])
        i[0] += 1

    base = {"library": library, "init_ms": init_ms}
    step = Config(f"{backend}/{precision}/step", "stream", backend, precision, "step", 1,
                  extra={**base, "first_inference_us": first_us,
                         "artefact_bytes": manifest.find_file("step", precision, fmt).size_bytes})
    warm_t0 = time.perf_counter_ns()
    for _ in range(options.warmup):
        push()
    step.extra["warmup_us_per_sample"] = ((time.perf_counter_ns() - warm_t0) / 1000.0
                                          / max(1, options.warmup))
    out.append(step)
    k = model.chunk_samples
    chunk = None
    if model.chunk_graph is not None:
        cstream = model.stream()
        block = data[:k]
        chunk = Config(f"{backend}/{precision}/chunk{k}", "stream", backend, precision, "chunk",
                       k, extra={**base, "artefact_bytes":
                                 manifest.find_file("chunk", precision, fmt).size_bytes})
        for _ in range(max(1, options.warmup // k)):
            cstream.push_chunk(block)
        out.append(chunk)
    wstream = model.stream()
    window = data[:options.window]

    def rerun():  # what a stateless deployment does: reset, run the last W samples, answer
        wstream.reset()
        wstream.push_chunk(window)

    win = Config(f"{backend}/{precision}/window{options.window}", "baseline", backend, precision,
                 "window", 1, extra={**base, "window": options.window})
    out.append(win)
    bare_call = bare_backend_call(model, data)
    bare = Config(f"{backend}/{precision}/bare", "floor", backend, precision, "bare", 1,
                  extra={**base, "what": "the backend alone on the step graph: set the sample "
                         "and state, invoke, read the result and new state (preallocated)"})
    out.insert(1, bare)
    for _ in range(options.warmup):
        bare_call()
    for _ in range(options.repeats):  # interleave the modes so drift hits all alike
        bare.repeats.append(_time_calls(bare_call, options.samples, 1))
        step.repeats.append(_time_calls(push, options.samples, 1))
        if chunk is not None:
            chunk.repeats.append(_time_calls(lambda: cstream.push_chunk(block),
                                             max(20, options.samples // k), k))
        win.repeats.append(_time_calls(rerun, max(20, options.samples // 20), 1))
    return out


def bare_backend_call(model, data: np.ndarray):
    """A function doing one step with the backend alone, as a careful hand-written loop would:
    ONNX Runtime with one IOBinding over preallocated buffers (through the same C++ entry point
    wavedge uses), LiteRT with ``set_tensor``/``invoke``/``get_tensor``."""
    g = model.step_graph
    i = [0]
    if model.backend == "onnxruntime":
        sess = g.session
        bufs = {t.name: np.zeros(t.shape, np.float32) for t in (*g.inputs, *g.outputs)}
        binding = sess.io_binding()
        for t in g.inputs:
            binding.bind_input(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
        for t in g.outputs:
            binding.bind_output(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
        inner = getattr(sess, "_sess", None)
        invoke = ((lambda b=binding._iobinding: inner.run_with_iobinding(b, None))
                  if inner is not None and hasattr(binding, "_iobinding")
                  else (lambda: sess.run_with_iobinding(binding)))
        x, y = bufs[g.inputs[0].name], bufs[g.outputs[0].name]
        s_in = [bufs[t.name] for t in g.inputs[1:]]
        s_out = [bufs[t.name] for t in g.outputs[1:]]
        state = [np.zeros_like(b) for b in s_in]

        def call():
            np.copyto(x[0], data[i[0] & 4095])
            for dst, src in zip(s_in, state):
                np.copyto(dst, src)
            invoke()
            out = y.copy()
            for dst, src in zip(state, s_out):
                np.copyto(dst, src)
            i[0] += 1
            return out

        return call
    runner = g.runner()
    it = runner.interp
    xi, yi, s_in, s_out = runner._x_idx, runner._y_idx, runner._s_in, runner._s_out
    # a full-integer model is fed integers, quantised beforehand: the bare call is the
    # interpreter's alone
    data = runner._qx.quantize(data) if hasattr(runner, "_qx") else data
    state = [np.zeros(t.shape, np.dtype(t.dtype)) for t in g.inputs[1:]]

    def call():
        k = i[0] & 4095
        it.set_tensor(xi, data[k:k + 1])
        for idx, buf in zip(s_in, state):
            it.set_tensor(idx, buf)
        it.invoke()
        out = it.get_tensor(yi)
        state[:] = [it.get_tensor(idx) for idx in s_out]
        i[0] += 1
        return out

    return call


def _floor_config(manifest, backend, bopts, data, options) -> Config | None:
    entry = manifest.find_file("identity", "fp32", FILE_FORMAT[backend])
    if entry is None:
        return None
    want_in, want_out = expected_io(manifest, 1)
    graph = load_checked_graph(manifest.directory / entry.path, backend, want_in, want_out, bopts)
    runner = graph.runner()
    x = runner.x.reshape(-1)
    i = [0]

    def call():  # the same per-call work as a push, on a graph that computes nothing
        x[...] = data[i[0] & 4095]
        runner.run()
        i[0] += 1

    for _ in range(options.warmup):
        call()
    cfg = Config(f"{backend}/floor", "floor", backend, "fp32", "floor", 1,
                 extra={"library": graph.detail.get("library", backend),
                        "what": "identity graph with the step graph's inputs and outputs, "
                                "called as a push calls its backend"})
    for _ in range(options.repeats):
        cfg.repeats.append(_time_calls(call, options.samples, 1))
    return cfg


def _torch_configs(checkpoint: Path, data, options) -> list[Config]:
    try:
        import torch

        from wavedge.models.checkpoint import load_checkpoint
    except ImportError:
        return []
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model
    torch.set_num_threads(options.threads)
    norm = ckpt.meta.get("normalisation") or {}
    mean = np.asarray(norm.get("mean", 0.0), np.float32)
    std = np.asarray(norm.get("std", 1.0), np.float32)
    state = list(model.init_state(1))
    i = [0]

    def torch_step():
        x = torch.from_numpy((data[i[0] & 4095] - mean) / std)[None]
        with torch.inference_mode():
            _, *new = model.step(x, *state)
        state[:] = new
        i[0] += 1

    out = [Config("torch/step", "baseline", None, "fp32", "torch", 1,
                  extra={"library": f"torch {torch.__version__}"})]
    numpy_step = numpy_step_fn(model, mean, std) if model.arch == "wave_rnn" else None
    if numpy_step is not None:
        out.append(Config("numpy/step", "baseline", None, "fp32", "numpy", 1,
                          extra={"library": f"numpy {np.__version__}"}))
    for _ in range(options.warmup):
        torch_step()
    calls = max(50, options.samples // 5)
    for _ in range(options.repeats):
        out[0].repeats.append(_time_calls(torch_step, calls, 1))
        if numpy_step is not None:
            def call():
                numpy_step(data[i[0] & 4095])
                i[0] += 1

            out[1].repeats.append(_time_calls(call, options.samples, 1))
    return out


def numpy_step_fn(model, mean: np.ndarray, std: np.ndarray):
    """A plain numpy Wave-RNN step (the hand-written alternative to a runtime): one GEMV for
    the input drive, the ring convolution as one [c, 3c] @ [3c, n] matmul over the wrapped
    neighbours, one GEMV for the readout. Checked against torch in the tests."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    if "readout.weight" not in sd:
        return None  # a linear readout only; the MLP readout is not covered here
    c, n = model.channels, model.ring_size
    w_in = sd["encoder.weight"]
    b_in = sd.get("encoder.bias", np.zeros(w_in.shape[0], np.float32))  # encoder_bias=False
    u = np.concatenate([sd["ring.weight"][:, :, k] for k in range(3)], axis=1)  # [c, 3c]
    b_u = sd["ring.bias"][:, None]
    w_out, b_out = sd["readout.weight"], sd["readout.bias"]
    inv_std = (1.0 / std).astype(np.float32)
    h = np.zeros((c, n), np.float32)
    left, right = np.roll(np.arange(n), 1), np.roll(np.arange(n), -1)
    stacked = np.empty((3 * c, n), np.float32)

    def step(x: np.ndarray) -> np.ndarray:
        nonlocal h
        xn = (x - mean) * inv_std
        np.take(h, left, axis=1, out=stacked[:c])
        stacked[c:2 * c] = h
        np.take(h, right, axis=1, out=stacked[2 * c:])
        h = np.maximum((w_in @ xn + b_in).reshape(c, n) + u @ stacked + b_u, 0.0)
        return w_out @ h.reshape(-1) + b_out

    return step


def _ratios(s: dict) -> dict:
    """The ratios to quote, each from p50s of this one run."""
    out = {}

    def p50(name):
        return s[name]["us_per_sample"]["p50"] if name in s else None

    for c in s.values():
        if c["kind"] != "stream" or c["mode"] != "step":
            continue
        b, prec = c["backend"], c["precision"]
        step = c["us_per_sample"]["p50"]
        pairs = {
            f"{b}/{prec}: step / bare": (step, p50(f"{b}/{prec}/bare")),
            f"{b}/{prec}: step / floor": (step, p50(f"{b}/floor")),
            f"{b}/{prec}: window / step": (p50(next((n for n in s if n.startswith(
                f"{b}/{prec}/window")), "")), step),
            f"{b}/{prec}: torch step / step": (p50("torch/step"), step),
            f"{b}/{prec}: numpy step / step": (p50("numpy/step"), step),
        }
        chunk = next((n for n in s if n.startswith(f"{b}/{prec}/chunk")), None)
        if chunk:
            pairs[f"{b}/{prec}: chunk / step"] = (p50(chunk), step)
        for key, (a, bb) in pairs.items():
            if a is not None and bb:
                out[key] = a / bb
    return out


def format_table(report: dict) -> str:
    """The report as a terminal table."""
    m = report["machine"]
    lines = [f"{report['model']['name']} on {m['cpu']} ({m['arch']}, {m['cores']} cores, flags: "
             f"{' '.join(m['flags']) or 'none of interest'}), threads {report['method']['threads']}"]
    rates = report["method"]["rates_hz"]
    head = (f"{'configuration':<34}{'p50':>9}{'p50 spread':>15}{'p90':>9}{'p99':>9}{'max':>10}"
            f"{'std':>8}"
            f"{'samples/s':>12}" + "".join(f"{'duty@' + format(r, 'g') + 'Hz':>13}"
                                          for r in rates))
    lines += [head, "-" * len(head)]
    for name, c in report["configs"].items():
        u = c["us_per_sample"]
        duty = "".join(f"{c['duty_cycle'][format(r, 'g')]:>12.3%} " for r in rates)
        reps = u["p50_per_repeat"]
        spread = f"{min(reps):.2f}-{max(reps):.2f}"
        lines.append(f"{name:<34}{u['p50']:>9.2f}{spread:>15}{u['p90']:>9.2f}{u['p99']:>9.2f}"
                     f"{u['max']:>10.1f}{u['std']:>8.2f}{c['throughput_samples_per_s']:>12,.0f}"
                     + duty)
    lines.append(f"(us per sample; p50 spread: the lowest and highest of the "
                 f"{report['method']['repeats']} repeats' medians)")
    for name, c in report["configs"].items():
        if "init_ms" in c and c["mode"] == "step":
            lines.append(f"{name}: init {c['init_ms']:.1f} ms, first inference "
                         f"{c['first_inference_us']:.0f} us, warm-up {c['warmup_us_per_sample']:.1f}"
                         f" us/sample, step artefact {c['artefact_bytes']:,} bytes")
    lines.append(f"peak memory of the process: {report['peak_rss_mb']:.0f} MB")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    lines.append("ratios (p50, same run):")
    lines += [f"  {k:<44} {v:8.2f}" for k, v in report["ratios"].items()]
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> list[Path]:
    """Write ``bench.json`` (and ``bench.png`` when matplotlib is installed) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.json"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    png = plot(report, out_dir / "bench.png")
    if png is not None:
        paths.append(png)
    return paths


def plot(report: dict, path: Path) -> Path | None:
    """Latency per sample of every configuration (p50 bar, p90-p99 whisker), log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(report["configs"])
    u = [report["configs"][n]["us_per_sample"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    y = np.arange(len(names))
    colors = {"stream": "#2a7ab9", "floor": "#999999", "baseline": "#d9822b"}
    ax.barh(y, [v["p50"] for v in u], color=[colors[report["configs"][n]["kind"]]
                                              for n in names])
    ax.errorbar([v["p90"] for v in u], y, xerr=[[0] * len(u), [v["p99"] - v["p90"] for v in u]],
                fmt="|", color="black", capsize=3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per sample (bar: p50; mark: p90, whisker to p99)")
    ax.set_title(f"{report['model']['name']} - {report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_report(path: str | Path) -> dict:
    """Read a bench JSON; ``InputError`` naming the file when it is not one."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a bench report ({exc})") from None
    if not isinstance(report, dict) or report.get("format") != BENCH_FORMAT:
        raise InputError(f"{path}: not a wavedge bench report (format {BENCH_FORMAT!r})")
    if report.get("version") != BENCH_VERSION:
        raise InputError(f"{path}: bench report version {report.get('version')!r} is not "
                         f"supported (this wavedge reads version {BENCH_VERSION})")
    return report


def compare(a: dict, b: dict, label_a: str = "A", label_b: str = "B") -> str:
    """Configurations present in both reports, p50 side by side and B / A."""
    lines = [f"A: {label_a}: {a['model']['name']} on {a['machine']['cpu']}",
             f"B: {label_b}: {b['model']['name']} on {b['machine']['cpu']}",
             f"{'configuration':<34}{'A p50 us':>11}{'B p50 us':>11}{'B / A':>9}"]
    common = [n for n in a["configs"] if n in b["configs"]]
    for n in common:
        pa = a["configs"][n]["us_per_sample"]["p50"]
        pb = b["configs"][n]["us_per_sample"]["p50"]
        lines.append(f"{n:<34}{pa:>11.2f}{pb:>11.2f}{pb / pa:>9.2f}")
    only = sorted(set(a["configs"]) ^ set(b["configs"]))
    if only:
        lines.append(f"in one report only: {', '.join(only)}")
    lines.append(f"ratios within each run:{'':<23}{'A':>8}{'B':>8}")
    for k in a["ratios"]:
        if k in b["ratios"]:
            lines.append(f"  {k:<44}{a['ratios'][k]:>8.2f}{b['ratios'][k]:>8.2f}")
    if not common:
        lines.append("no configuration in common")
    return "\n".join(lines)
