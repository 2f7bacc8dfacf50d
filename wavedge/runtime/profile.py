"""``wavedge bench MODEL --profile``: where a graph's time goes, operator by operator, from ONNX
Runtime's own profiler (``SessionOptions.enable_profiling``), through the path a run takes
(``Stream.push`` for the step graph, ``push_chunk`` for the chunk graph): a call's median time
without the profiler, its kernels' time by op type, and the rest, the call's own work around
the kernels. The traces are ONNX Runtime's JSON, which chrome://tracing and ui.perfetto.dev
open.

The profiler costs every node a floor of its own: measured here, it gives no node less than
2-3 us, a Reshape of a few bytes as much as a Relu (a call of the bundled step graph takes 14-19
us without it, 89 under it). So each node's time is taken less the least the profiler gave any
node of that graph: an estimate. On a graph of large ops it accounts for the call (a 64x256
wave-encoder: Conv 88 us of a 133 us call, its kernels 97 % of it); on a small one the
profiler's cost varies by more than its floor (the bundled model's kernels come to more than
its call), and the report says to read the order of the ops, not their times. A control-flow
node (``Scan``: an int8 chunk graph) is counted by the nodes inside it. LiteRT's Python
interpreter has no per-operator profiler (LiteRT's own ``benchmark_model
--enable_op_profiling=true`` is the tool there)."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from wavedge.errors import InputError
from wavedge.manifest import load_manifest
from wavedge.runtime.backends import BackendOptions
from wavedge.runtime.machine import describe
from wavedge.runtime.model import load_model

PROFILE_FORMAT = "wavedge-profile"
TOP_NODES = 5
CONTROL_FLOW = ("Scan", "Loop", "If")  # their subgraphs' nodes are in the trace too


def run_profile(model_dir, options, out_dir: Path | None = None,
                progress=lambda msg: None) -> dict:
    """Profile each precision's step (and chunk) graph on ONNX Runtime with ``options``
    (``bench.BenchOptions``: samples, warm-up, threads, providers, precisions), and time
    the same calls without the profiler; the traces are copied into ``out_dir`` when
    given. Returns the JSON-ready report."""
    options.validate()
    if any(b != "onnxruntime" for b in options.backends):
        raise InputError("bench --profile: ONNX Runtime only; LiteRT's Python interpreter has "
                         "no per-operator profiler (LiteRT's benchmark_model "
                         "--enable_op_profiling=true gives one)")
    from wavedge.runtime.bench import _Samples

    manifest = load_manifest(model_dir, verify_files=False)
    have = sorted({f.precision for f in manifest.files
                   if f.graph == "step" and f.path.endswith(".onnx")})
    unknown = [p for p in options.precisions if p not in have]
    if unknown:
        raise InputError(f"bench --profile: {model_dir} has no ONNX step graph at precision "
                         f"{', '.join(map(repr, unknown))}; it has {', '.join(have)}")
    data = _Samples(manifest.signature)
    plain = BackendOptions(options.threads, options.providers, options.trt_cache)
    graphs = []
    with tempfile.TemporaryDirectory(prefix="wavedge-profile-") as scratch:
        profiled = BackendOptions(options.threads, options.providers, options.trt_cache,
                                  profile=scratch)
        for precision in options.precisions or have:
            progress(f"profile onnxruntime {precision}")
            timed = {kind: us for kind, _, _, us in
                     _drive(load_model(model_dir, "onnxruntime", precision, plain), data,
                            options)}
            model = load_model(model_dir, "onnxruntime", precision, profiled)
            for kind, graph, skipped, _ in _drive(model, data, options):
                written = Path(graph.session.end_profiling())
                entry = {"precision": precision, "graph": kind, "file": graph.path.name,
                         "us_per_call": timed[kind],
                         **summarise(json.loads(written.read_text()), skipped)}
                if out_dir is not None:
                    trace = out_dir / f"profile-{precision}-{kind}.json"
                    shutil.copyfile(written, trace)
                    entry["trace"] = str(trace)
                graphs.append(entry)
    return {"format": PROFILE_FORMAT, "version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {"name": manifest.name, "directory": str(manifest.directory)},
            "machine": describe(),
            "method": {"samples": options.samples, "warmup": options.warmup,
                       "threads": options.threads, "providers": list(options.providers),
                       "kernels": "each node's time in the trace less the least the profiler "
                                  "gave any node of the graph (its own floor)"},
            "graphs": graphs}


def _drive(model, data, options):
    """Push the samples through the step graph, then the chunk graph's calls; yields (kind,
    graph, warm-up calls, median microseconds a call after them) for each graph it ran."""
    stream = model.stream()
    at = itertools.count()
    us = _median_call(lambda: stream.push(data[next(at)]), options.warmup, options.samples)
    yield "step", model.step_graph, options.warmup, us
    if model.chunk_graph is not None:
        block = data.block(model.chunk_samples)
        warm = -(-options.warmup // model.chunk_samples)
        us = _median_call(lambda: stream.push_chunk(block), warm,
                          max(options.samples // model.chunk_samples, 10))
        yield "chunk", model.chunk_graph, warm, us


def _median_call(call, warm: int, calls: int) -> float:
    from wavedge.runtime.bench import _time_calls

    for _ in range(warm):
        call()
    return float(np.median(_time_calls(call, calls, 1)))


def summarise(events: list[dict], skipped: int) -> dict:
    """A trace's calls after the first ``skipped`` (warm-up): microseconds a call by op type
    (nodes of that type) and the slowest nodes, each node's time less the profiler's floor
    (the least it gave any node of the graph)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    kept = runs[skipped:]
    if not kept:
        raise InputError("bench --profile: no call was profiled after the warm-up")
    n = len(kept)
    nodes = [e for e in events if e.get("cat") == "Node" and e["ts"] >= kept[0]["ts"]
             and e["name"].endswith("_kernel_time")
             and e["args"].get("op_name") not in CONTROL_FLOW]
    floor = min((e["dur"] for e in nodes), default=0)
    by_op, by_node, nodes_of = defaultdict(float), defaultdict(float), defaultdict(set)
    for e in nodes:
        op, node = e["args"].get("op_name", "?"), e["name"][:-len("_kernel_time")]
        us = max(e["dur"] - floor, 0) / n
        by_op[op] += us
        by_node[(node, op)] += us
        nodes_of[op].add(node)
    return {"calls": n, "profiler_floor_us": floor, "kernels_us": sum(by_op.values()),
            "ops": [{"op": op, "nodes": len(nodes_of[op]), "us": us}
                    for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])],
            "slowest_nodes": [{"node": node, "op": op, "us": us} for (node, op), us in
                              sorted(by_node.items(), key=lambda kv: -kv[1])[:TOP_NODES]]}


def format_profile(report: dict) -> str:
    """The report as text: a table of op types per graph."""
    from wavedge.runtime.bench import columns

    out = []
    for g in report["graphs"]:
        call, kernels = g["us_per_call"], g["kernels_us"]
        rest = "the rest the call's own work around them" if kernels <= call else (
            "more than the call: the profiler's cost per node is more than its floor here, "
            "so read the order of the ops, not their times")
        out.append(f"onnxruntime {g['precision']} {g['graph']} graph ({g['file']}): {call:.1f} us "
                   f"a call without the profiler (median); its kernels about {kernels:.1f} us "
                   f"({kernels / call:.0%}), {rest}")
        rows = [[o["op"], str(o["nodes"]), f"{o['us']:.2f}", f"{o['us'] / max(kernels, 1e-9):.1%}"]
                for o in g["ops"]]
        out += ["  " + line for line in columns(["op", "nodes", "us/call", "of the kernels"],
                                                rows)]
        out.append("  slowest nodes: " + ", ".join(f"{s['node']} ({s['op']}) {s['us']:.2f} us"
                                                   for s in g["slowest_nodes"]))
        if "trace" in g:
            out.append(f"  trace: {g['trace']} (chrome://tracing, ui.perfetto.dev)")
    floors = sorted({g["profiler_floor_us"] for g in report["graphs"]})
    out.append(f"Kernel times: each node's in ONNX Runtime's trace (whole microseconds) less "
               f"the least it gave any node of its graph ({', '.join(map(str, floors))} us: the "
               "profiler's own cost), an estimate; a call's time is measured without it.")
    return "\n".join(out)
