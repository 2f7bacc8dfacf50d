"""A long unattended run on every backend and precision of a model directory: memory,
latency over time and int8 agreement with fp32, written to a file (``make soak``).

    python -m wavedge.runtime.soak MODEL_DIR --samples 10000000 --out out/soak

For each backend, the fp32 stream and every other precision's stream are fed the same
generated samples (the signature's inputs, ``Signature.example_inputs``) one ``push`` at a time,
interleaved. Every ``--window`` samples it records the process's resident memory, each
stream's latency percentiles over that window, and how often each lower precision's primary
output agrees with fp32's (argmax for class scores and tokens, else the mean absolute
difference). No torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from wavedge.manifest import load_manifest
from wavedge.runtime.backends import available
from wavedge.runtime.model import FILE_FORMAT, load_model
from wavedge.stopping import write_whole


def _rss_mb() -> float:
    """Resident set size now (``/proc/self/statm``; peak RSS on other systems)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _agreement(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    if kind in ("class_scores", "token_logits"):
        return float(np.mean(a.argmax(-1) == b.argmax(-1)))
    return float(np.mean(np.abs(a - b)))


def soak_backend(model_dir: Path, backend: str, samples: int, window: int, seed: int = 0,
                 progress=None) -> dict:
    manifest = load_manifest(model_dir)
    fmt = FILE_FORMAT[backend]
    precisions = sorted({f.precision for f in manifest.files if f.format == fmt
                         and f.graph == "step"}, key=lambda p: p != "fp32")
    streams = {p: load_model(model_dir, backend, p).stream() for p in precisions}
    sig = manifest.signature
    data = sig.example_inputs(max(window, 4096), seed)
    names = [i.name for i in sig.fed]
    n_data = len(data[names[0]])
    rows = [dict(zip(names, vals)) for vals in zip(*(data[n] for n in names))]
    feed = [r[names[0]] if len(names) == 1 else r for r in rows]
    kind = sig.outputs[0].kind
    curve = []
    lat = {p: np.empty(window, np.int64) for p in precisions}
    ys = {p: np.empty((window, *sig.outputs[0].shape), np.float32) for p in precisions}
    done, started = 0, time.perf_counter()
    while done < samples:
        n = min(window, samples - done)
        for j in range(n):
            x = feed[(done + j) % n_data]
            for p, s in streams.items():
                t0 = time.perf_counter_ns()
                r = s.push(x)
                lat[p][j] = time.perf_counter_ns() - t0
                ys[p][j] = r.values[0]
        done += n
        point = {"samples": done, "seconds": round(time.perf_counter() - started, 2),
                 "rss_mb": round(_rss_mb(), 2), "latency_us": {}}
        for p in precisions:
            us = lat[p][:n] / 1000.0
            point["latency_us"][p] = {q: round(float(np.percentile(us, v)), 2)
                                      for q, v in (("p50", 50), ("p99", 99), ("max", 100))}
            if p != "fp32":
                point[f"{p}_vs_fp32"] = round(_agreement(kind, ys[p][:n], ys["fp32"][:n]), 5)
        curve.append(point)
        if progress:
            progress(f"{backend}: {done:,}/{samples:,} samples, RSS {point['rss_mb']} MB")
    rss = [c["rss_mb"] for c in curve]
    half = rss[len(rss) // 2:]
    return {"backend": backend, "precisions": precisions, "samples": samples,
            "window": window, "agreement": "argmax agreement" if kind in (
                "class_scores", "token_logits") else "mean absolute difference",
            "rss_mb_first": rss[0], "rss_mb_last": rss[-1],
            "rss_mb_growth_second_half": round(max(half) - min(half), 2),
            "stream_stats": {p: {"dropped": dict(s.stats.dropped),
                                 "state_resets": dict(s.stats.state_resets)}
                             for p, s in streams.items()},
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--window", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path("out/soak"))
    args = ap.parse_args(argv)
    if args.samples < 1 or args.window < 1:
        print("soak: error: --samples and --window must be at least 1", file=sys.stderr)
        return 1
    backends = [b for b, ok in available().items() if ok]
    report = {"model_dir": str(args.model_dir), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "backends": [soak_backend(args.model_dir, b, args.samples, args.window,
                                        progress=lambda m: print(f"soak: {m}",
                                                                 file=sys.stderr))
                           for b in backends]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_whole(args.out / "soak.json", json.dumps(report, indent=1) + "\n")
    for b in report["backends"]:
        last = b["curve"][-1]
        print(f"{b['backend']}: {b['samples']:,} samples x {len(b['precisions'])} precisions, "
              f"RSS {b['rss_mb_first']} -> {b['rss_mb_last']} MB (second half spread "
              f"{b['rss_mb_growth_second_half']} MB), last window p50 "
              + ", ".join(f"{p} {v['p50']} us" for p, v in last["latency_us"].items())
              + "".join(f", {k} {v}" for k, v in last.items() if k.endswith("_vs_fp32")))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
