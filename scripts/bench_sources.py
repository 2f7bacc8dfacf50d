"""Several sensors through `wavedge run`'s loop: one group call per tick against the streams
stepped in turn, and what a tick's wait for every source saves, both backends, interleaved.

    python scripts/bench_sources.py --out out/bench/sources.json

Part 1, per tick: a tick of n samples (the signature's example inputs) pushed three ways on
the bundled model: a group on the batch-8 step graph given the tick by key in key order (as
`wavedge run` gives it: the whole-tick path), the same in another key order (the per-member
path), and n streams on the batch-1 graph in turn; median us per tick over the repeats' medians.

Part 2, a run: n replay sources of the bundled recording paced at RATE through
`loop.run_many` (what `wavedge run` drives) into `null:`, three ways: a group whose tick takes
what has arrived (`--tick-wait 0`), a group whose tick waits for every source (the default
wait), and the streams in turn; the process's CPU time per sample (the readers' threads
included: on this 2-core VM they are most of it) and the samples per tick.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import numpy as np

from _report import write_json
from wavedge.runtime import load_model, open_sink, open_source
from wavedge.runtime.bench import _time_calls, tick_ways
from wavedge.runtime.fanin import default_wait_ms
from wavedge.runtime.loop import run_many
from wavedge.runtime.machine import describe

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "wavedge" / "bundled" / "wave_basic_motions"
BACKENDS = ("onnxruntime", "litert")


def _spread(values: list) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "repeats": [round(v, 2) for v in values]}


def per_tick(sizes: list, repeats: int) -> dict:
    ways = {}
    for be in BACKENDS:
        group_model = load_model(BUNDLED, be, streams=8, use_chunk=False)
        single = load_model(BUNDLED, be, use_chunk=False)
        for n in sizes:
            in_order = tick_ways(group_model, single, n)
            other = tick_ways(group_model, single, n, order=list(reversed(range(n))))
            ways[(be, n, "group, by key in key order")] = in_order["group"]
            ways[(be, n, "group, by key in another order")] = other["group"]
            ways[(be, n, "in turn")] = in_order["in turn"]
    for call in ways.values():
        _time_calls(call, 200, 1)
    times = {k: [] for k in ways}
    for _ in range(repeats):
        for key, call in ways.items():
            times[key].append(float(np.median(_time_calls(call, 300, 1))))
    return {f"{be}/{n}/{way}": _spread(t) for (be, n, way), t in times.items()}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_run(be: str, n: int, way: str, rate: float, samples: int) -> tuple[float, float]:
    """(CPU us per sample, samples per tick) of one run of n paced replay sources."""
    model = load_model(BUNDLED, be, streams=1 if way == "in turn" else n, use_chunk=False)
    if way == "in turn":
        streams = [model.stream() for _ in range(n)]
    else:
        streams = model.group()
        for k in range(n):
            streams.add(k)
    wait = default_wait_ms(model.manifest.sample_rate_hz) if way == "group, tick waits" else 0.0
    url = f"replay:{BUNDLED / 'recording.csv'}?rate={rate:g}&limit={samples}"
    sources = [open_source(url, model.manifest) for _ in range(n)]
    c0 = _cpu_s()
    summary = run_many(streams, sources, open_sink("null:", model.manifest), tick_wait_ms=wait)
    if summary.error or summary.samples != n * samples:
        raise SystemExit(f"bench_sources: the run failed: {summary.error or summary.samples}")
    return (_cpu_s() - c0) / summary.samples * 1e6, summary.samples / summary.ticks


def runs(sizes: list, rate: float, samples: int, repeats: int) -> dict:
    ways = ("group, tick takes what arrived", "group, tick waits", "in turn")
    got = {}
    for _ in range(repeats):  # interleaved
        for be in BACKENDS:
            for n in sizes:
                for way in ways:
                    cpu, fill = one_run(be, n, way, rate, samples)
                    got.setdefault(f"{be}/{n}/{way}", ([], []))
                    got[f"{be}/{n}/{way}"][0].append(cpu)
                    got[f"{be}/{n}/{way}"][1].append(fill)
    return {k: {"cpu_us_per_sample": _spread(c), "samples_per_tick": _spread(f)}
            for k, (c, f) in got.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="part 1's interleaved repeats")
    ap.add_argument("--run-repeats", type=int, default=3, help="part 2's interleaved repeats")
    ap.add_argument("--rate", type=float, default=1000.0, help="part 2: each source's Hz")
    ap.add_argument("--samples", type=int, default=2000, help="part 2: samples per source")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    report = {"what": __doc__.split("\n\n", 2)[2].strip(), "machine": describe(),
              "wait_ms": default_wait_ms(load_model(BUNDLED).manifest.sample_rate_hz),
              "rate_hz": args.rate, "samples_per_source": args.samples,
              "per_tick_us": per_tick([2, 4, 8], args.repeats),
              "runs": runs([2, 8], args.rate, args.samples, args.run_repeats)}
    for key, r in report["per_tick_us"].items():
        print(f"per tick  {key:45s} {r['median']:7.1f} us [{r['min']:.1f}, {r['max']:.1f}]")
    for key, r in report["runs"].items():
        c, f = r["cpu_us_per_sample"], r["samples_per_tick"]
        print(f"run       {key:45s} cpu {c['median']:6.1f} us/sample "
              f"[{c['min']:.1f}, {c['max']:.1f}], {f['median']:.2f} samples a tick")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
