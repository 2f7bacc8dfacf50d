"""Runtime overhead benchmark: ``make bench`` (or ``python benchmarks/bench_runtime.py``).

For one model directory (default: the bundled wave-encoder), in one process and interleaved so
that drift on a shared machine hits every configuration alike:

- ``bare``: the backend alone on the same graph - copy the sample and state into the bound
  input buffers, run, copy the output and the new state out (IOBinding, preallocated buffers);
- ``session.run``: ORT's plain ``run()`` with a feed dict (how most people call it);
- ``push``: ``Stream.push`` (validation, normalisation, state, result object);
- ``push_chunk``: per sample, via the chunk graph;
- ``torch step``: the PyTorch model's ``step`` per sample (when torch is installed).

Reports the median per call of each of ``--repeats`` rounds, the median over rounds and the
spread; ratios are computed from the same rounds. Writes JSON to ``--out``.
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

from wavedge.runtime import load_model  # noqa: E402


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
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "wavedge/bundled/wave_basic_motions"))
    ap.add_argument("--checkpoint", default=str(ROOT / "wavedge/bundled/wave_basic_motions.pt"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "out/bench/runtime.json"))
    args = ap.parse_args(argv)

    model = load_model(args.model_dir)
    rng = np.random.default_rng(0)
    data = (np.asarray(model.manifest.mean) + np.asarray(model.manifest.std)
            * rng.standard_normal((4096, model.input_size))).astype(np.float32)
    stream = model.stream()
    i = [0]

    def push():
        stream.push(data[i[0] & 4095])
        i[0] += 1

    # the bare backend call: one IOBinding over preallocated buffers, through the same C++
    # entry point wavedge uses; set inputs (sample, state), invoke, read outputs (y, state)
    sess = model.step_graph.session
    spec = {t.name: t.shape for t in (*model.step_graph.inputs, *model.step_graph.outputs)}
    bufs = {name: np.zeros(shape, np.float32) for name, shape in spec.items()}
    binding = sess.io_binding()
    for t in model.step_graph.inputs:
        binding.bind_input(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
    for t in model.step_graph.outputs:
        binding.bind_output(t.name, "cpu", 0, np.float32, t.shape, bufs[t.name].ctypes.data)
    invoke = (lambda b=binding._iobinding: sess._sess.run_with_iobinding(b, None)) \
        if hasattr(binding, "_iobinding") else (lambda: sess.run_with_iobinding(binding))
    x_in, state_in, y_out, state_out = (bufs["x"], bufs["state_in.h"], bufs["y"],
                                        bufs["state_out.h"])
    state = np.zeros_like(state_in)

    def bare():
        np.copyto(x_in[0], data[i[0] & 4095])
        np.copyto(state_in, state)
        invoke()
        y = y_out.copy()
        np.copyto(state, state_out)
        i[0] += 1
        return y

    feeds = {"x": data[:1], "state_in.h": np.zeros(state_in.shape, np.float32)}

    def session_run():
        y, h = sess.run(None, feeds)
        feeds["state_in.h"] = h
        return y

    k = model.chunk_samples
    chunk_stream = model.stream()
    block = data[:k]

    def chunk():
        chunk_stream.push_chunk(block)

    configs = {"bare": (bare, 1), "session.run": (session_run, 1), "push": (push, 1),
               "push_chunk": (chunk, k)}
    torch_info = None
    try:
        import torch

        from wavedge.models.checkpoint import load_checkpoint

        torch.set_num_threads(1)
        tmodel = load_checkpoint(args.checkpoint).model
        th = tmodel.init_state(1)[0]
        tx = torch.from_numpy(data[:1])

        def torch_step():
            nonlocal th
            with torch.inference_mode():
                _, th = tmodel.step(tx, th)

        configs["torch step"] = (torch_step, 1)
        torch_info = torch.__version__
    except ImportError:
        pass

    rounds = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (fn, per) in configs.items():
            calls = args.calls if per == 1 else max(50, args.calls // per)
            if name == "torch step":
                calls = max(300, args.calls // 5)
            rounds[name].append(timed(fn, calls) / per)
    med = {n: float(np.median(v)) for n, v in rounds.items()}
    ratios = {"push / bare": [p / b for p, b in zip(rounds["push"], rounds["bare"])],
              "push_chunk / push": [c / p for c, p in zip(rounds["push_chunk"], rounds["push"])]}
    if "torch step" in rounds:
        ratios["torch step / push"] = [t / p for t, p in zip(rounds["torch step"], rounds["push"])]
    result = {
        "model": model.manifest.name,
        "backend": model.step_graph.detail,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch_info},
        "method": f"{args.repeats} interleaved rounds; per round the median of {args.calls} "
                  "calls after 200 warm-up calls; single thread",
        "us_per_sample": {n: {"median": med[n], "min": min(v), "max": max(v)}
                          for n, v in rounds.items()},
        "ratios": {n: {"median": float(np.median(v)), "min": min(v), "max": max(v)}
                   for n, v in ratios.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['model']} on {result['backend'].get('library')}, {result['machine']['cpu']}")
    print(f"{'configuration':<14} {'us/sample p50':>14} {'min':>8} {'max':>8}")
    for n, v in result["us_per_sample"].items():
        print(f"{n:<14} {v['median']:>14.2f} {v['min']:>8.2f} {v['max']:>8.2f}")
    for n, v in result["ratios"].items():
        print(f"{n:<20} {v['median']:>8.2f}  (rounds {v['min']:.2f}-{v['max']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
