"""``wavedge bench``: the numbers an edge engineer needs to choose a backend and precision.

For every installed backend x precision x mode (one sample per call; a chunk of K per call) of a
model directory: init time, first inference, warm-up, per-sample latency (min, p50, p90, p99,
max, std) over several repeats, throughput, duty cycle at the sample rate (from calls back to
back, and from ``push`` paced on each rate's schedule as a live run calls it), peak memory,
artefact size. Beside them, in the same run: the backend's per-call floor (the identity graph
exported with the model), the torch model step by step and a plain numpy step (when torch and the
checkpoint are at hand: baselines the model's family provides, handed in by the caller so that
the runtime imports no torch), and sliding-window re-inference over the last W samples at every
step (what people do without explicit state). Inputs are generated from the model's signature
(``Signature.example_inputs``): sensor values about the normalisation, token ids and actions
over their ranges. Ratios are what to quote: absolute times drift on
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

from wavedge.errors import BackendError, InputError, as_names, parse_json
from wavedge.manifest import load_manifest, verify_file
from wavedge.runtime import accel
from wavedge.runtime.backends import (BackendOptions, available, check_providers, check_threads,
                                      providers_of)
from wavedge.runtime.machine import condition_notes, conditions, conditions_line, describe
from wavedge.runtime.model import FILE_FORMAT, load_checked_graph, load_model
from wavedge.runtime.sources import Pacer
from wavedge.stopping import write_figure, write_whole

BENCH_FORMAT = "wavedge-bench"
BENCH_VERSION = 1


@dataclass(frozen=True)
class BenchOptions:
    samples: int = 2000  # timed calls per repeat (a chunk config times samples / K calls)
    repeats: int = 3
    warmup: int = 200
    threads: int = 1
    providers: tuple[str, ...] = ("cpu",)  # onnxruntime providers (a Jetson: cuda, tensorrt)
    trt_cache: str | None = None  # TensorRT's engine cache (BackendOptions)
    pin_cpu: int | None = None  # pin the process to this CPU (Linux)
    rates_hz: tuple[float, ...] = ()  # duty cycle at these rates too (the manifest's is always in)
    window: int = 100  # sliding-window re-inference: samples re-run at every step
    backends: tuple[str, ...] = ()  # default: every installed one
    precisions: tuple[str, ...] = ()  # default: every precision the model directory has
    streams: int = 1  # > 1: N streams round-robin, in a StreamGroup, and one raw batch call
    paced_s: float = 2.0  # seconds of pushes on each rate's schedule (0: none)

    def __post_init__(self) -> None:
        for name in ("providers", "backends", "precisions"):  # each once, in order
            object.__setattr__(self, name, as_names(getattr(self, name)))

    def validate(self) -> None:
        for name, value, low in (("samples", self.samples, 50), ("repeats", self.repeats, 1),
                                 ("warmup", self.warmup, 0), ("window", self.window, 2),
                                 ("streams", self.streams, 1)):
            if value < low:
                raise InputError(f"bench: {name} must be at least {low}, got {value}")
        check_threads(self.threads, "bench: threads")
        if any(not r > 0 for r in self.rates_hz):
            raise InputError(f"bench: rates must be positive, got {list(self.rates_hz)}")
        if not 0 <= self.paced_s <= 3600:
            raise InputError(f"bench: paced must be 0 to 3600 seconds, got {self.paced_s:g}")

    def rates(self, manifest) -> list[float]:
        """The rates a report gives the duty cycle at: ``rates_hz`` and the manifest's."""
        return sorted({*self.rates_hz, *([manifest.sample_rate_hz]
                                         if manifest.sample_rate_hz else [])})


@dataclass
class Config:
    """One measured configuration: per-sample latencies (us) of every repeat."""

    name: str
    kind: str  # stream, floor, baseline
    backend: str | None
    precision: str | None
    mode: str  # step, unguarded, python, chunk, window, floor, torch, numpy
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


PACED_MIN = 10  # pushes on a rate's schedule at the least (at 10 Hz, one second)


def _time_paced(fn, rate_hz: float, calls: int) -> np.ndarray:
    """``fn`` timed on ``rate_hz``'s absolute schedule, the process asleep in between, as
    ``replay:`` paces a run and as a live sensor's samples come: the caches, the branch
    predictors and a board's CPU clock are then as a run finds them, not as a loop of calls
    back to back leaves them (the bundled model's push took 16 us back to back and 97 us at
    100 Hz on this VM)."""
    clock, pacer = time.perf_counter_ns, Pacer(rate_hz)
    ts = np.empty(calls, np.int64)
    for i in range(calls):
        pacer.wait()
        t0 = clock()
        fn()
        ts[i] = clock() - t0
    return ts / 1000.0


def _paced(push, rates: list[float], options: BenchOptions, per: int = 1) -> dict:
    """``push`` paced at each rate for ``options.paced_s`` seconds (``PACED_MIN`` to
    ``options.samples`` calls): latency per sample (a call holds ``per``: a group's tick, one
    per stream) and the duty cycle the calls give."""
    out = {}
    for rate in rates:
        us = _time_paced(push, rate, min(options.samples,
                                         max(PACED_MIN, round(rate * options.paced_s))))
        p50, p99 = float(np.percentile(us, 50)), float(np.percentile(us, 99))
        out[f"{rate:g}"] = {"samples": len(us), "p50": p50 / per, "p99": p99 / per,
                            "max": float(us.max()) / per, "duty_cycle": p50 * 1e-6 * rate,
                            "duty_cycle_p99": p99 * 1e-6 * rate}
    return out


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if os.uname().sysname == "Linux" else peak / 1e6


DATA_SAMPLES = 4096


@dataclass(frozen=True)
class Baseline:
    """A step function outside the runtime to time beside it (e.g. the torch model step by
    step): ``make()`` returns ``f(sample)`` with its own state; ``sample`` is what
    ``Stream.push`` takes."""

    name: str  # "torch", "numpy"
    library: str
    make: object  # () -> callable(sample)
    divisor: int = 1  # timed calls per repeat: samples / divisor (at least 50)


class _Samples:
    """Generated inputs, cycled: ``[k]`` is one sample as ``push`` takes it."""

    def __init__(self, signature, n: int = DATA_SAMPLES) -> None:
        # what a caller pushes: the inputs a sample carries (a stochastic model's noise is the
        # stream's own, zeros by default)
        self.names = [i.name for i in signature.fed]
        self.arrays = {k: v for k, v in signature.example_inputs(n).items() if k in self.names}
        self.n = n
        self.single = self.arrays[self.names[0]] if len(self.names) == 1 else None

    def __getitem__(self, k: int):
        k %= self.n
        if self.single is not None:
            return self.single[k]
        return {name: self.arrays[name][k] for name in self.names}

    def block(self, length: int):
        if self.single is not None:
            return self.single[:length]
        return {name: a[:length] for name, a in self.arrays.items()}


def _pin(cpu: int) -> None:
    """Pin this process to ``cpu`` (Linux), or ``InputError`` naming the CPUs it may use."""
    try:
        os.sched_setaffinity(0, {cpu})
    except AttributeError:
        raise InputError("bench: --pin needs Linux (sched_setaffinity)") from None
    except (OSError, ValueError):  # EINVAL past the last CPU, ValueError below 0
        cpus = ", ".join(map(str, sorted(os.sched_getaffinity(0))))
        raise InputError(f"bench: cannot pin to CPU {cpu}; this process may run on CPUs "
                         f"{cpus}") from None


def run_bench(model_dir: str | Path, options: BenchOptions = BenchOptions(),
              progress=lambda msg: None, baselines: tuple[Baseline, ...] | None = None) -> dict:
    """Measure every configuration of ``model_dir``; returns the JSON-ready report.
    ``baselines``: step functions outside the runtime (``wavedge.models.bench_baselines``
    makes the torch and numpy ones from a checkpoint); None: none were asked for."""
    options.validate()
    if options.pin_cpu is not None:
        _pin(options.pin_cpu)
    manifest = load_manifest(model_dir, verify_files=False)  # each load checks its own files
    before = conditions()
    have_precisions = sorted({f.precision for f in manifest.files if f.graph == "step"})
    unknown = [p for p in options.precisions if p not in have_precisions]
    if unknown:  # else a table of the floor alone, and exit 0
        raise InputError(f"bench: {model_dir} has no step graph at precision "
                         f"{', '.join(map(repr, unknown))}; it has {', '.join(have_precisions)}")
    rates = options.rates(manifest)
    data = _Samples(manifest.signature)
    have = available()
    backends = options.backends or tuple(b for b in FILE_FORMAT if have.get(b))
    precisions = options.precisions or tuple(have_precisions)
    configs: list[Config] = []
    artefacts = {}
    notes = []
    for backend in backends:
        if not have.get(backend):
            raise InputError(f"bench: backend {backend!r} is not installed here")
        bopts = _options_for(backend, options, notes)
        for precision in precisions:
            step = manifest.find_file("step", precision, FILE_FORMAT[backend])
            if step is None:
                continue
            if not (manifest.directory / step.path).is_file():  # a board's pruned copy
                if options.backends and options.precisions:
                    verify_file(manifest, step)  # asked for by name: one line, it is missing
                notes.append(f"{backend}/{precision} not measured: {step.path} is not in the "
                             "directory")
                continue
            progress(f"{backend} {precision}")
            try:
                configs += _stream_configs(model_dir, manifest, backend, precision, bopts,
                                           data, options, artefacts)
                if bopts.providers != ("cpu",):
                    notes.append(against_cpu(model_dir, backend, precision, bopts, data))
                if options.streams > 1:
                    configs += _group_configs(model_dir, backend, precision, bopts, data,
                                              options)
            except BackendError as exc:  # one artefact this library cannot run: say so, go on
                if options.backends and options.precisions:
                    raise
                notes.append(f"{backend}/{precision} not measured: {exc}")
                progress(f"  not measured: {exc}")
        floor = _floor_config(manifest, backend, bopts, data, options)
        if floor is not None:
            configs.append(floor)
    if baselines is None:
        notes.append("no --checkpoint: no torch or numpy baselines")
    elif not baselines:
        notes.append("torch is not installed: no torch or numpy baselines")
    else:
        progress(" and ".join(b.name for b in baselines) + " baselines")
        configs += _baseline_configs(baselines, data, options)
    summaries = {c.name: c.summary(rates) for c in configs}
    after = conditions()
    notes += condition_notes(before, after)
    return {"format": BENCH_FORMAT, "version": BENCH_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {"name": manifest.name, "directory": str(manifest.directory),
                      "sample_rate_hz": manifest.sample_rate_hz, "artefacts": artefacts},
            "machine": describe(),
            "conditions": {"before": before, "after": after},
            "method": {"samples": options.samples, "repeats": options.repeats,
                       "warmup": options.warmup, "threads": options.threads,
                       "providers": list(options.providers),
                       "pinned_cpu": options.pin_cpu, "window": options.window,
                       "rates_hz": rates, "paced_s": options.paced_s,
                       "fast_path": any(c.extra.get("push_in_c") for c in configs),
                       "clock": "time.perf_counter_ns around each call; "
                       "per-sample = per-call / samples per call; p50 = median over repeats of "
                       "each repeat's median; other percentiles over all calls"},
            "peak_rss_mb": _peak_rss_mb(),
            "notes": notes,
            "configs": summaries,
            "ratios": _ratios(summaries)}


AGAINST_CPU_RUNS = 4  # runs from reset, of one chunk graph call's samples (32 at least) each


def against_cpu(model_dir, backend: str, precision: str, bopts: BackendOptions,
                data: "_Samples") -> str:
    """Whether the graphs give the CPU's answers on an accelerator (``--provider cuda``): a
    note of the largest difference of the first output, relative to its scale, and of the
    classes that differ, stepped and in chunks, over runs from reset. CUDA had given every
    sample the first one's answer (an input bound once was copied to the GPU once), which the
    bench's times alone never showed; TensorRT may round to TF32 or float16."""
    cpu = load_model(model_dir, backend, precision, BackendOptions(threads=bopts.threads))
    accelerated = load_model(model_dir, backend, precision, bopts)
    length = max(32, accelerated.chunk_samples)
    classes = accelerated.stream().heads[0].kind == "class_scores"
    worst, differ, total = 0.0, 0, 0
    for run in range(AGAINST_CPU_RUNS):
        rows = [data[k] for k in range(run * length, (run + 1) * length)]
        block = np.stack(rows) if data.single is not None else \
            {name: np.stack([r[name] for r in rows]) for name in data.names}
        want = cpu.stream().push_chunk(block)
        stream = accelerated.stream()
        for got in ([stream.push(r) for r in rows], accelerated.stream().push_chunk(block)):
            got_values = np.stack([r.values[0] for r in got])
            scale = max(1.0, float(np.abs(want.values[0]).max()))
            worst = max(worst, float(np.abs(got_values - want.values[0]).max()) / scale)
            if classes:
                differ += sum(r.class_id != c for r, c in zip(got, want.class_ids))
            total += length
    tolerance = cpu.manifest.raw.get("check", {}).get("tolerance", 1e-5)
    how = f"stepped and in chunks, {AGAINST_CPU_RUNS} runs from reset"
    said = f"largest difference {worst:.2g} of the output's scale" + \
        (f", {differ} of {total} classes differ" if classes else "")
    where = f"{backend}/{precision} on {', '.join(bopts.providers)}"
    if differ or worst > 0.01:
        return f"{where}: NOT the CPU's answers ({said}; {how}): do not deploy on it"
    if worst > 10 * tolerance:  # rounding of its own (TF32, float16): the classes hold
        return (f"{where}: the CPU's classes, the outputs up to {worst:.2g} of their scale off "
                f"(the export's check allows {tolerance:g}; {how})")
    return f"{where}: the CPU's answers ({said}; {how})"


def _pusher(stream, data: "_Samples"):
    """``push`` of the next sample of ``data`` on each call; a one-input model's sample is
    taken from the array as the bare loop takes its feed (``rows[k % n]``), so that the two
    differ by the push alone (``_Samples.__getitem__`` is a Python call, 0.2 us)."""
    i = [0]
    rows = data.single if data.single is not None else data
    n = data.n

    def push():
        k = i[0]
        stream.push(rows[k % n])
        i[0] = k + 1

    return push


def _options_for(backend: str, options: BenchOptions, notes: list) -> BackendOptions:
    """The bench's backend options for ``backend``. A backend measured because it is installed
    (no ``--backend``) runs on the providers of those asked that it has, and a note says so (a
    Jetson's ``--provider cuda`` is asked of ONNX Runtime); one named is refused a provider it
    lacks."""
    providers = options.providers
    lacking = [p for p in providers if p not in providers_of(backend)]
    if options.backends:
        check_providers(backend, providers)
    elif lacking:
        providers = tuple(p for p in providers if p not in lacking) or ("cpu",)
        notes.append(f"{backend} on {', '.join(providers)}: it has no provider "
                     f"{', '.join(lacking)}")
    return BackendOptions(threads=options.threads, providers=providers,
                          trt_cache=options.trt_cache)


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
    push = _pusher(stream, data)
    push_unguarded = _pusher(model.stream(guards=False), data)
    previous = accel.use(False)  # the same push through the Python reference alone
    push_python = _pusher(model.stream(), data)
    accel.use(previous)

    # this model's push in C, not only the module built (a TEM-t's two ids push in Python)
    base = {"library": library, "init_ms": init_ms, "push_in_c": "push" in vars(stream)}
    step = Config(f"{backend}/{precision}/step", "stream", backend, precision, "step", 1,
                  extra={**base, "first_inference_us": first_us,
                         "artefact_bytes": manifest.find_file("step", precision, fmt).size_bytes})
    warm_t0 = time.perf_counter_ns()
    for _ in range(options.warmup):
        push()
    step.extra["warmup_us_per_sample"] = ((time.perf_counter_ns() - warm_t0) / 1000.0
                                          / max(1, options.warmup))
    out.append(step)
    unguarded = Config(f"{backend}/{precision}/step-unguarded", "stream", backend, precision,
                       "unguarded", 1, extra={**base, "what": "push without the input bounds and "
                                         "state health checks, to measure their cost"})
    for _ in range(options.warmup):
        push_unguarded()
    out.append(unguarded)
    python = Config(f"{backend}/{precision}/step-python", "stream", backend, precision,
                    "python", 1, extra={**base, "what": "push through the Python reference "
                                        "alone, without the C fast path (wavedge.runtime.accel)"})
    if accel.available():
        for _ in range(options.warmup):
            push_python()
        out.append(python)
    k = model.chunk_samples
    chunk = None
    if model.chunk_graph is not None:
        cstream = model.stream()
        block = data.block(k)
        chunk = Config(f"{backend}/{precision}/chunk{k}", "stream", backend, precision, "chunk",
                       k, extra={**base, "artefact_bytes":
                                 manifest.find_file("chunk", precision, fmt).size_bytes})
        for _ in range(max(1, options.warmup // k)):
            cstream.push_chunk(block)
        out.append(chunk)
    wstream = model.stream()
    window = data.block(options.window)

    def rerun():  # what a stateless deployment does: reset, run the last W samples, answer
        wstream.reset()
        wstream.push_chunk(window)

    win = Config(f"{backend}/{precision}/window{options.window}", "baseline", backend, precision,
                 "window", 1, extra={**base, "window": options.window})
    out.append(win)
    bare_call = model.step_graph.bare_call([data.arrays[n] for n in data.names])
    bare = Config(f"{backend}/{precision}/bare", "floor", backend, precision, "bare", 1,
                  extra={**base, "what": "the backend alone on the step graph: set the sample "
                         "and state, invoke, read the result and new state (preallocated)"})
    out.insert(1, bare)
    for _ in range(options.warmup):
        bare_call()
    for _ in range(options.repeats):  # interleave the modes so drift hits all alike
        bare.repeats.append(_time_calls(bare_call, options.samples, 1))
        step.repeats.append(_time_calls(push, options.samples, 1))
        unguarded.repeats.append(_time_calls(push_unguarded, options.samples, 1))
        if accel.available():
            previous = accel.use(False)  # the checks all_finite and within in Python too
            python.repeats.append(_time_calls(push_python, options.samples, 1))
            accel.use(previous)
        if chunk is not None:
            chunk.repeats.append(_time_calls(lambda: cstream.push_chunk(block),
                                             max(20, options.samples // k), k))
        win.repeats.append(_time_calls(rerun, max(20, options.samples // 20), 1))
    if options.paced_s:
        step.extra["paced"] = _paced(push, options.rates(manifest), options)
    return out


def _group_configs(model_dir, backend, precision, bopts, data, options) -> list[Config]:
    """N streams three ways, interleaved: N ``Stream`` objects pushed in turn (what a board
    with N sensors does without groups), one ``StreamGroup`` of N (one call per tick; and per
    chunk, where the directory has the batch chunk graph), and the batch graph called by hand
    (the floor a careful user reaches); per sample per stream."""
    n = options.streams
    group_model = load_model(model_dir, backend, precision, bopts, streams=n)
    single = load_model(model_dir, backend, precision, bopts, use_chunk=False)
    if data.single is None:
        raise InputError("bench --streams: the model takes several inputs; groups are "
                         "benchmarked on models of one input")
    ticks = data.single[:DATA_SAMPLES // n * n].reshape(-1, n, *data.single.shape[1:])
    streams = [single.stream() for _ in range(n)]
    group = group_model.group()
    for _ in range(n):
        group.add()
    batch = group_model.batch
    feeds = np.zeros((len(ticks), batch, *ticks.shape[2:]), np.float32)
    feeds[:, :n] = ticks
    bare_call = group_model.step_graph.bare_call([feeds])
    i = [0]

    def round_robin():
        tick = ticks[i[0] % len(ticks)]
        for s, x in zip(streams, tick):
            s.push(x)
        i[0] += 1

    def grouped():
        group.push(ticks[i[0] % len(ticks)])
        i[0] += 1

    k = group_model.chunk_samples
    blocks = ticks[:len(ticks) // k * k].reshape(-1, k, n, *ticks.shape[2:]).swapaxes(1, 2) \
        .copy()  # [blocks, streams, k, *shape]

    def grouped_chunk():
        group.push_chunk(blocks[i[0] % len(blocks)])
        i[0] += 1

    library = group_model.step_graph.detail.get("library", backend)
    what = {"round-robin": f"{n} Streams on the batch-1 step graph, one push each per tick",
            "group": f"one StreamGroup of {n} (graph batch {batch}): one push per tick",
            "group-bare": f"the batch-{batch} step graph called by hand: the tick's samples "
                          "and the state set, invoke, outputs read"}
    calls = [round_robin, grouped, bare_call]
    if group_model.chunk_graph is not None and len(blocks):
        what[f"group-chunk{k}"] = f"the same group, push_chunk of {k} samples per stream"
        calls.append(grouped_chunk)
    per = {f"group-chunk{k}": n * k}
    out = [Config(f"{backend}/{precision}/streams{n}-{mode}", "stream" if mode != "group-bare"
                  else "floor", backend, precision, mode, per.get(mode, n) // n,
                  extra={"library": library, "streams": n, "batch": batch, "what": what[mode],
                         "per": "us per sample per stream (one tick / streams)"})
           for mode in what]
    for call in calls:
        for _ in range(options.warmup):
            call()
    for _ in range(options.repeats):  # interleaved, as the other configurations
        for cfg, call in zip(out, calls):
            m = per.get(cfg.mode, n)
            cfg.repeats.append(_time_calls(call, max(20, options.samples // m), m))
    if options.paced_s:  # a tick on each rate's schedule, as a run of N sensors calls it
        group_cfg = next(c for c in out if c.mode == "group")
        group_cfg.extra["paced"] = _paced(grouped, options.rates(group_model.manifest), options, n)
    return out


def group_against_turn(group_model, single_model, n: int, rounds: int = 5,
                       ticks: int = 20) -> tuple[float, float]:
    """Us per tick of ``n`` streams two ways, measured here and now: one group of ``n`` on
    ``group_model``'s batch graph, and ``n`` streams of ``single_model`` pushed in turn; each
    tick given by key, as ``wavedge run`` gives it; interleaved rounds after one to warm up,
    the median. ``wavedge run`` steps its sources the cheaper way: a batch graph costs the
    same for any number of members, so a few streams can be cheaper in turn (2 on the bundled
    batch-8 graph: 10.9 us a tick in turn against 29.2 on LiteRT, 21.6 against 33.3 on ONNX
    Runtime; ``make bench-sources``)."""
    ways = {call: [] for call in tick_ways(group_model, single_model, n).values()}
    for r in range(rounds + 1):
        for call, medians in ways.items():
            us = float(np.median(_time_calls(call, ticks, 1)))
            if r:
                medians.append(us)
    grouped, turn = (float(np.median(m)) for m in ways.values())
    return grouped, turn


def tick_ways(group_model, single_model, n: int, order: list | None = None) -> dict:
    """One tick of ``n`` samples (the signature's example inputs), given by key as ``wavedge
    run`` gives it, pushed two ways; each a call to time: ``"group"``, a group of members
    0..n-1 on ``group_model``'s batch graph, the tick's keys in ``order`` (default 0..n-1),
    and ``"in turn"``, ``n`` streams of ``single_model``."""
    data = _Samples(group_model.signature, n)
    tick = {k: data[k] for k in (order or range(n))}
    group = group_model.group()
    for k in range(n):
        group.add(k)
    streams = [single_model.stream() for _ in range(n)]

    def in_turn():
        for k, stream in enumerate(streams):
            stream.push(tick[k])

    return {"group": lambda: group.push(tick), "in turn": in_turn}


def _floor_config(manifest, backend, bopts, data, options) -> Config | None:
    entry = manifest.find_file("identity", "fp32", FILE_FORMAT[backend])
    if entry is None or not (manifest.directory / entry.path).is_file():
        return None
    graph = load_checked_graph(verify_file(manifest, entry), backend, manifest.signature, 1,
                               bopts)
    runner = graph.runner()
    xs = [(buf.reshape(-1), data.arrays[n].reshape(data.n, -1))
          for buf, n in zip(runner.inputs, data.names)]
    i = [0]

    def call():  # the same per-call work as a push, on a graph that computes nothing
        k = i[0] % data.n
        for buf, src in xs:
            buf[...] = src[k]
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


def _baseline_configs(baselines: tuple[Baseline, ...], data: _Samples,
                      options: BenchOptions) -> list[Config]:
    """Time each baseline step function, interleaved over the repeats."""
    out, calls = [], []
    i = [0]
    for b in baselines:
        step = b.make()
        cfg = Config(f"{b.name}/step", "baseline", None, "fp32", b.name, 1,
                     extra={"library": b.library})

        def call(step=step):
            step(data[i[0]])
            i[0] += 1

        for _ in range(options.warmup):
            call()
        out.append(cfg)
        calls.append((call, max(50, options.samples // b.divisor)))
    for _ in range(options.repeats):
        for cfg, (call, n) in zip(out, calls):
            cfg.repeats.append(_time_calls(call, n, 1))
    return out


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
        pairs[f"{b}/{prec}: step / step unguarded"] = (step,
                                                        p50(f"{b}/{prec}/step-unguarded"))
        pairs[f"{b}/{prec}: step python / bare"] = (p50(f"{b}/{prec}/step-python"),
                                                    p50(f"{b}/{prec}/bare"))
        for rate, paced in c.get("paced", {}).items():
            pairs[f"{b}/{prec}: step paced at {rate} Hz / step"] = (paced["p50"], step)
        chunk = next((n for n in s if n.startswith(f"{b}/{prec}/chunk")), None)
        if chunk:
            pairs[f"{b}/{prec}: chunk / step"] = (p50(chunk), step)
        group = next((n for n in s if n.startswith(f"{b}/{prec}/streams")
                      and n.endswith("-group")), None)
        if group:
            base = group[:-len("-group")]
            pairs[f"{b}/{prec}: group / raw batch call"] = (p50(group), p50(base + "-group-bare"))
            pairs[f"{b}/{prec}: round-robin / group"] = (p50(base + "-round-robin"), p50(group))
            gchunk = next((n for n in s if n.startswith(base + "-group-chunk")), None)
            if gchunk:
                pairs[f"{b}/{prec}: group chunk / group step"] = (p50(gchunk), p50(group))
            for rate, paced in s[group].get("paced", {}).items():
                pairs[f"{b}/{prec}: group paced at {rate} Hz / group"] = (paced["p50"],
                                                                         p50(group))
        for key, (a, bb) in pairs.items():
            if a is not None and bb:
                out[key] = a / bb
    return out


def columns(head: list[str], rows: list[list[str]], rule: bool = False) -> list[str]:
    """A table's lines: the first column left-aligned, the others right-aligned, each as wide
    as its widest cell (a configuration's name grows with ``--streams``; fixed widths ran
    the cells together)."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join([cells[0].ljust(widths[0])]
                       + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()
             for cells in [head, *rows]]
    return lines[:1] + (["-" * len(lines[0])] if rule else []) + lines[1:]


def format_table(report: dict) -> str:
    """The report as a terminal table."""
    m = report["machine"]
    lines = [f"{report['model']['name']} on {m['cpu']} ({m['arch']}, {m['cores']} cores, flags: "
             f"{' '.join(m['flags']) or 'none of interest'}), threads {report['method']['threads']}"
             f", push in {'C' if report['method'].get('fast_path') else 'Python'}"]
    rates = report["method"]["rates_hz"]
    rows = []
    for name, c in report["configs"].items():
        u, reps = c["us_per_sample"], c["us_per_sample"]["p50_per_repeat"]
        rows.append([name, f"{u['p50']:.2f}", f"{min(reps):.2f}-{max(reps):.2f}",
                     f"{u['p90']:.2f}", f"{u['p99']:.2f}", f"{u['max']:.1f}", f"{u['std']:.2f}",
                     f"{c['throughput_samples_per_s']:,.0f}"]
                    + [f"{c['duty_cycle'][format(r, 'g')]:.3%}" for r in rates])
    lines += columns(["configuration", "p50", "p50 spread", "p90", "p99", "max", "std",
                      "samples/s"] + [f"duty@{r:g}Hz" for r in rates], rows, rule=True)
    lines.append(f"(us per sample, calls back to back; p50 spread: the lowest and highest of "
                 f"the {report['method']['repeats']} repeats' medians; duty: p50 / the period)")
    lines += _paced_table(report)
    for name, c in report["configs"].items():
        if "init_ms" in c and c["mode"] == "step":
            lines.append(f"{name}: init {c['init_ms']:.1f} ms, first inference "
                         f"{c['first_inference_us']:.0f} us, warm-up {c['warmup_us_per_sample']:.1f}"
                         f" us/sample, step artefact {c['artefact_bytes']:,} bytes")
    if "conditions" in report:  # reports from before 2026-12-04 have none
        lines.append(conditions_line(report["conditions"]["before"],
                                     report["conditions"]["after"]))
    lines.append(f"peak memory of the process: {report['peak_rss_mb']:.0f} MB")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    lines.append("ratios (p50, same run):")
    width = max(map(len, report["ratios"]), default=0)
    lines += [f"  {k:<{width}} {v:8.2f}" for k, v in report["ratios"].items()]
    return "\n".join(lines)


def _paced_table(report: dict) -> list[str]:
    """The step pushed (a group's tick) on each rate's schedule beside its back-to-back p50,
    both per sample (per stream)."""
    rows = [[name, rate, str(p["samples"]), f"{p['p50']:.2f}", f"{p['p99']:.2f}",
             f"{p['max']:.1f}", f"{p['duty_cycle']:.3%}", f"{p['duty_cycle_p99']:.3%}",
             f"{p['p50'] / c['us_per_sample']['p50']:.2f}"]
            for name, c in report["configs"].items() for rate, p in c.get("paced", {}).items()]
    if not rows:
        return []
    return [f"paced: push (a group's: a tick) on each rate's schedule for "
            f"{report['method']['paced_s']:g} s, the process asleep between samples as in a run "
            "(what a live sensor's run costs; us per sample, a group's per stream; duty: a "
            "call's p50 / the period):"] + \
        columns(["configuration", "Hz", "samples", "p50", "p99", "max", "duty", "duty p99",
                 "p50 / back to back"], rows, rule=True)


def write_report(report: dict, out_dir: Path) -> list[Path]:
    """Write ``bench.json`` (and ``bench.png`` when matplotlib is installed) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_whole(out_dir / "bench.json", json.dumps(report, indent=2) + "\n")]
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
    write_figure(fig, path, 110)
    return path


def load_report(path: str | Path) -> dict:
    """Read a bench JSON; ``InputError`` naming the file when it is not one."""
    path = Path(path)
    try:
        report = parse_json(path.read_text(encoding="utf-8"))
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
    lines = []
    for tag, label, r in (("A", label_a, a), ("B", label_b, b)):
        lines.append(f"{tag}: {label}: {r['model']['name']} on {r['machine']['cpu']}")
        if "conditions" in r:  # a throttled board's run is not its best: said beside it
            c = r["conditions"]
            lines.append(f"   {conditions_line(c['before'], c['after'])}")
    common = [n for n in a["configs"] if n in b["configs"]]
    rows = []
    for n in common:
        ca, cb = a["configs"][n], b["configs"][n]
        rows.append((n, ca["us_per_sample"]["p50"], cb["us_per_sample"]["p50"]))
        # a board's push on its sensor's schedule, where both runs timed it at that rate
        rows += [(f"{n} paced at {r} Hz", ca["paced"][r]["p50"], cb["paced"][r]["p50"])
                 for r in ca.get("paced", {}) if r in cb.get("paced", {})]
    lines += columns(["configuration", "A p50 us", "B p50 us", "B / A"],
                     [[n, f"{pa:.2f}", f"{pb:.2f}", f"{pb / pa:.2f}"] for n, pa, pb in rows])
    only = sorted(set(a["configs"]) ^ set(b["configs"]))
    if only:
        lines.append(f"in one report only: {', '.join(only)}")
    lines += columns(["ratios within each run", "A", "B"],
                     [[f"  {k}", f"{a['ratios'][k]:.2f}", f"{b['ratios'][k]:.2f}"]
                      for k in a["ratios"] if k in b["ratios"]])
    if not common:
        lines.append("no configuration in common")
    return "\n".join(lines)
