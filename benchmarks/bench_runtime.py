"""Runtime overhead benchmark: ``make bench`` (or ``python benchmarks/bench_runtime.py``).

For one model directory (default: the bundled wave-encoder), in one process, interleaved so
that drift on a shared machine hits every configuration alike, for every installed backend:

- ``<backend> bare``: the backend alone on the same step graph - set the inputs (sample and
  state), invoke, read the outputs (result and new state), with preallocated buffers
  (ORT: one IOBinding through the same C++ entry point wavedge uses; LiteRT: ``set_tensor``,
  ``invoke``, ``get_tensor``);
- ``<backend> push``: ``Stream.push`` (checks, state, result object) on raw samples;
- ``<backend> push_chunk``: per sample, a chunk of K samples per call;
- ``onnxruntime session.run``: ORT's plain ``run()`` with a feed dict (how most people call it);
- ``torch step``: the PyTorch model's ``step`` per sample (when torch is installed).

Each round takes the median of ``--calls`` calls per configuration; the report gives the median
over ``--repeats`` rounds with the spread, and ratios computed round by round. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wavedge.runtime import available, load_model  # noqa: E402


def timed(fn, calls: int) -> float:
    """Median microseconds per call of ``fn`` over ``calls`` calls (after 200 warm-up calls)."""
    for _ in range(200):
        fn()
    ts = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        ts[i] = clock() - t0
    return float(np.median(ts)) / 1000.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ort_bare(model, data, counter):
    """ORT alone: one IOBinding, copy sample and state in, run, copy result and state out."""
    g = model.step_graph
    sess = g.session
    bufs = {t.name: np.zeros(t.shape, np.float32) for t in (*g.inputs, *g.outputs)}
    binding = sess.io_binding()
    for t in g.inputs:
        binding.bind_input(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
    for t in g.outputs:
        binding.bind_output(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
    invoke = (lambda b=binding._iobinding: sess._sess.run_with_iobinding(b, None)) \
        if hasattr(binding, "_iobinding") else (lambda: sess.run_with_iobinding(binding))
    x, s_in, y, s_out = (bufs[g.inputs[0].name], bufs[g.inputs[1].name],
                         bufs[g.outputs[0].name], bufs[g.outputs[1].name])
    state = np.zeros_like(s_in)

    def bare():
        np.copyto(x[0], data[counter[0] & 4095])
        np.copyto(s_in, state)
        invoke()
        out = y.copy()
        np.copyto(state, s_out)
        counter[0] += 1
        return out

    feeds = {g.inputs[0].name: data[:1], g.inputs[1].name: np.zeros(s_in.shape, np.float32)}

    def session_run():
        out, h = sess.run(None, feeds)
        feeds[g.inputs[1].name] = h
        return out

    return bare, session_run


def litert_bare(model, data, counter):
    """LiteRT alone: set_tensor (sample, state), invoke, get_tensor (result, state)."""
    runner = model.step_graph.runner()
    it = runner.interp
    xi, si, yi, so = runner._x_idx, runner._s_in[0], runner._y_idx, runner._s_out[0]
    state = np.zeros(model.step_graph.inputs[1].shape, np.float32)

    def bare():
        nonlocal state
        it.set_tensor(xi, data[counter[0]:counter[0] + 1] if counter[0] < 4095 else data[:1])
        it.set_tensor(si, state)
        it.invoke()
        out = it.get_tensor(yi)
        state = it.get_tensor(so)
        counter[0] = (counter[0] + 1) & 4095
        return out

    return bare


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?",
                    default=str(ROOT / "wavedge/bundled/wave_basic_motions"))
    ap.add_argument("--checkpoint", default=str(ROOT / "wavedge/bundled/wave_basic_motions.pt"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "out/bench/runtime.json"))
    args = ap.parse_args(argv)

    configs = {}
    counter = [0]
    libraries = {}
    name = None
    for backend in ("onnxruntime", "litert"):
        if not available()[backend]:
            continue
        model = load_model(args.model_dir, backend=backend)
        name = model.manifest.name
        libraries[backend] = model.step_graph.detail.get("library")
        rng = np.random.default_rng(0)
        data = (np.asarray(model.manifest.mean) + np.asarray(model.manifest.std)
                * rng.standard_normal((4096, model.input_size))).astype(np.float32)
        if backend == "onnxruntime":
            bare, session_run = ort_bare(model, data, counter)
            configs["onnxruntime session.run"] = (session_run, 1)
        else:
            bare = litert_bare(model, data, counter)
        configs[f"{backend} bare"] = (bare, 1)
        stream = model.stream()

        def push(stream=stream, data=data):
            stream.push(data[counter[0] & 4095])
            counter[0] += 1

        configs[f"{backend} push"] = (push, 1)
        k = model.chunk_samples
        chunk_stream, block = model.stream(), data[:k]
        configs[f"{backend} push_chunk"] = (lambda s=chunk_stream, b=block: s.push_chunk(b), k)

    torch_version = None
    try:
        import torch

        from wavedge.models.checkpoint import load_checkpoint

        torch.set_num_threads(1)
        tmodel = load_checkpoint(args.checkpoint).model
        state = list(tmodel.init_state(1))
        tx = torch.zeros(1, tmodel.input_size)

        def torch_step():
            with torch.inference_mode():
                _, *new = tmodel.step(tx, *state)
            state[:] = new

        configs["torch step"] = (torch_step, 1)
        torch_version = torch.__version__
    except ImportError:
        pass

    rounds = {n: [] for n in configs}
    for _ in range(args.repeats):
        for n, (fn, per) in configs.items():
            calls = args.calls if per == 1 else max(50, args.calls // per)
            if n == "torch step":
                calls = max(300, args.calls // 5)
            rounds[n].append(timed(fn, calls) / per)

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rounds[a], rounds[b])]

    ratios = {}
    for backend in libraries:
        ratios[f"{backend}: push / bare"] = ratio(f"{backend} push", f"{backend} bare")
        ratios[f"{backend}: push_chunk / push"] = ratio(f"{backend} push_chunk", f"{backend} push")
        if "torch step" in rounds:
            ratios[f"torch step / {backend} push"] = ratio("torch step", f"{backend} push")
    result = {
        "model": name, "libraries": libraries,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch_version, "threads": 1},
        "method": f"{args.repeats} interleaved rounds; per round the median of {args.calls} calls "
                  "(chunks: calls / K) after 200 warm-up calls; single thread",
        "us_per_sample": {n: {"median": float(np.median(v)), "min": min(v), "max": max(v)}
                          for n, v in rounds.items()},
        "ratios": {n: {"median": float(np.median(v)), "min": min(v), "max": max(v)}
                   for n, v in ratios.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: {', '.join(libraries.values())}; {result['machine']['cpu']}")
    print(f"{'configuration':<28} {'us/sample p50':>14} {'min':>8} {'max':>8}")
    for n, v in result["us_per_sample"].items():
        print(f"{n:<28} {v['median']:>14.2f} {v['min']:>8.2f} {v['max']:>8.2f}")
    for n, v in result["ratios"].items():
        print(f"{n:<34} {v['median']:>6.2f}  (rounds {v['min']:.2f}-{v['max']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
