"""`make bench-scale`: what the step and chunk graphs cost as the wave-encoder grows.

Wave-encoders from 16x64 to 64x256 (channels x ring size; 6 inputs, 4 classes, random weights:
cost does not depend on them) exported to ONNX (and TFLite where litert-torch is installed),
each run through wavedge's own runner on its backend: the step graph one sample per call, the
chunk graph 32 per call, both per sample. All configurations interleaved in every repeat; the
median of the repeats' medians, and their spread; chunk / step, the median of the repeats'
ratios. Beside each, the MACs per sample and the
achieved GFLOP/s (2 FLOP per MAC) against the core's fp32 peak, and the lowest chunk / step that
peak allows: every sample's MACs run in a chunk as in a step (the recurrence), so a chunk is never
faster than the MACs at the peak. The peak is the higher of two: the flags times the clock
/proc/cpuinfo states (AVX-512: 64 FLOP/cycle, but 32 on AMD's Zen 4, which runs it on 256-bit
units; AVX2 + FMA: 32; else 8), and the best rate ONNX Runtime's own matmul reaches here on one
thread. The second is needed: in a virtual machine /proc/cpuinfo gives the base clock, not the
boost (2.60 GHz stated, 115 GFLOP/s measured on one 32-FLOP/cycle core, 2026-12-02).
Writes JSON and a PNG.

    .venv-tflite/bin/python scripts/bench_scale.py --out out/bench-scale
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from wavedge.stopping import write_figure, write_whole

SIZES = ((16, 64), (16, 256), (32, 256), (64, 256))
D, O, CHUNK = 6, 4, 32


def macs(c: int, n: int) -> int:
    """Per sample: the input drive (D -> c n), the ring convolution (kernel 3, c -> c channels,
    n positions) and the readout (c n -> O)."""
    return D * c * n + 3 * c * c * n + c * n * O


def core_peak_gflops() -> tuple[float | None, str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unknown (no /proc/cpuinfo)"
    fields = [ln.split(":", 1) for ln in info.splitlines() if ":" in ln]
    first = {k.strip(): v.strip() for k, v in reversed(fields)}  # the first CPU's values
    flags = set(first.get("flags", "").split())
    mhz = [float(v) for k, v in fields if k.strip() == "cpu MHz"]
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    if per_cycle == 64 and first.get("vendor_id") == "AuthenticAMD" \
            and first.get("cpu family") == "25":
        per_cycle = 32  # Zen 4 runs AVX-512 on its two 256-bit FMA units (double-pumped)
    if not mhz:
        return None, f"{per_cycle} FLOP/cycle, clock unknown"
    ghz = max(mhz) / 1000
    return per_cycle * ghz, f"{per_cycle} FLOP/cycle (fp32, from the flags) x {ghz:.2f} GHz"


def gemm_gflops(sizes: tuple[int, ...] = (256, 512), calls: int = 30) -> float:
    """The best rate ONNX Runtime's matmul reaches on one thread (square float32 matmuls of
    ``sizes``, best of ``calls`` each): what this core does at least, whatever its stated clock."""
    return max(_gemm_gflops(size, calls) for size in sizes)


def _gemm_gflops(size: int, calls: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.random((size, size), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"a": rng.random((size, size), np.float32)}
    session.run(None, feed)
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def build(c: int, n: int, out: Path, tflite: bool) -> dict:
    import torch

    from wavedge.export.onnx_export import export_graph
    from wavedge.models import build_model

    torch.manual_seed(0)
    model = build_model("wave_rnn", input_size=D, output_size=O, channels=c, ring_size=n).eval()
    files = {}
    for graph, k in (("step", 1), ("chunk", CHUNK)):
        files[("onnxruntime", graph)] = export_graph(model, out / f"{c}x{n}.{graph}.onnx", k)
        if tflite:
            from wavedge.export.tflite_export import export_tflite_graph

            path = out / f"{c}x{n}.{graph}.tflite"
            export_tflite_graph(model, path, k)
            files[("litert", graph)] = path
    return {"signature": model.signature, "files": files}


def runner(path: Path, backend: str, signature, samples: int):
    from wavedge.runtime.model import load_checked_graph

    return load_checked_graph(path, backend, signature, samples).runner()


def measure(configs: dict, calls: int, repeats: int) -> dict:
    """Each configuration's per-sample microseconds, the configurations interleaved."""
    per_repeat: dict = {name: [] for name in configs}
    for _ in range(repeats):
        for name, (run, samples) in configs.items():
            for _ in range(10):
                run.run()
            t = np.empty(calls)
            for i in range(calls):
                t0 = time.perf_counter_ns()
                run.run()
                t[i] = time.perf_counter_ns() - t0
            per_repeat[name].append(float(np.median(t)) / 1000 / samples)
    return {name: {"us_per_sample": float(np.median(v)), "spread": [min(v), max(v)],
                   "per_repeat": v} for name, v in per_repeat.items()}


def plot(rows: list, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:  # the bench extra: the JSON holds every number
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for graph, marker in (("step", "o-"), ("chunk", "s--")):
            pts = [r for r in rows if r["backend"] == backend and r["graph"] == graph]
            ax.plot([r["macs"] for r in pts], [r["us_per_sample"] for r in pts], marker,
                    label=f"{backend} {graph}{CHUNK if graph == 'chunk' else ''}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per sample")
    ax.set_ylabel("us per sample")
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, 110)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench-scale"))
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import litert_torch  # noqa: F401

        tflite = True
    except ImportError:
        tflite = False
    args.out.mkdir(parents=True, exist_ok=True)
    configs, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for c, n in SIZES:
            built = build(c, n, Path(tmp), tflite)
            for (backend, graph), path in built["files"].items():
                k = 1 if graph == "step" else CHUNK
                name = f"{backend}/{c}x{n}/{graph}"
                configs[name] = (runner(path, backend, built["signature"], k), k)
                meta[name] = {"backend": backend, "size": f"{c}x{n}", "graph": graph,
                              "macs": macs(c, n)}
            print(f"exported {c}x{n}", flush=True)
        results = measure(configs, args.calls, args.repeats)
    nominal, stated = core_peak_gflops()
    measured = gemm_gflops()
    peak = max(nominal or 0.0, measured)  # > 0: the matmul ran
    how = (f"the higher of {stated} = {nominal and round(nominal, 1)} GFLOP/s and ONNX "
           f"Runtime's matmul on one thread, {measured:.1f} GFLOP/s measured")
    rows = []
    for name, r in results.items():
        m = meta[name]
        gflops = 2 * m["macs"] / (r["us_per_sample"] * 1e3)
        rows.append({**m, **r, "gflops": gflops, "share_of_peak": gflops / peak})
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for c, n in SIZES:
            step, chunk = (next(r for r in rows if r["backend"] == backend and
                                r["size"] == f"{c}x{n}" and r["graph"] == g)
                           for g in ("step", "chunk"))
            # the ratio in each repeat (a size's step and chunk run next to each other), then
            # their median: a busy spell on this shared machine moved single repeats up to 2x
            ratios = [a / b for a, b in zip(chunk["per_repeat"], step["per_repeat"])]
            chunk["chunk_over_step"] = float(np.median(ratios))
            chunk["chunk_over_step_spread"] = [min(ratios), max(ratios)]
            # the recurrence runs once per sample in a chunk too: at best at the core's peak
            floor = 2 * chunk["macs"] / (peak * 1e3) / step["us_per_sample"]
            chunk["chunk_over_step_at_peak"] = floor
            # what a chunk / step of 0.5 asks: the chunk's rate as a share of the peak
            chunk["share_of_peak_for_half"] = 2 * floor
            print(f"{backend} {c}x{n}: step {step['us_per_sample']:.2f} us "
                  f"({step['gflops']:.1f} GFLOP/s), chunk{CHUNK} "
                  f"{chunk['us_per_sample']:.2f} us/sample, chunk / step "
                  f"{chunk['chunk_over_step']:.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
                  f" (a chunk at the core's peak: {floor:.2f}; 0.5 needs the chunk at "
                  f"{chunk['share_of_peak_for_half']:.0%} of the peak, it runs at "
                  f"{chunk['share_of_peak']:.0%})")
    report = {"peak_gflops_per_core": peak, "peak_estimate": how,
              "peak_from_flags_and_clock": nominal, "peak_measured_matmul": measured,
              "calls": args.calls,
              "repeats": args.repeats, "chunk_samples": CHUNK, "threads": 1, "rows": rows,
              "method": "median of each repeat's median per call, over samples per call; the "
                        "configurations interleaved in every repeat; one thread"}
    write_whole(args.out / "bench-scale.json", json.dumps(report, indent=1) + "\n")
    if not plot(rows, args.out / "bench-scale.png"):
        print("no matplotlib here: no PNG (pip install matplotlib)")
    print(f"peak per core: {peak:.1f} GFLOP/s ({how}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
