"""Start-up of `wavedge run --limit 1` in a torch-free venv, as on a board: wall time from
process start to exit and the child's peak RSS, both backends interleaved, N repeats.

    python scripts/bench_startup.py --python .venv-runtime/bin/python --out out/startup.json

The wall time includes the interpreter's start, the imports, the manifest check (checksums of
every file), loading the graphs, opening the replay source (its first rows) and one sample.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import write_json

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "wavedge" / "bundled" / "wave_basic_motions"


def one(python: str, backend: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `wavedge run --limit 1`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "wavedge.cli", "run", str(BUNDLED), "--backend", backend,
                           "--source", f"replay:{BUNDLED / 'recording.csv'}?rate=max",
                           "--sink", "null:", "--limit", "1"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_startup: wavedge run failed: {proc.stderr.strip()}")
    # RUSAGE_CHILDREN's maxrss is the largest child so far: read it per backend in order
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="the venv's python (torch-free)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    probe = subprocess.run([args.python, "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is not None)"],
                           capture_output=True, text=True)
    torch_free = probe.stdout.strip() == "False"
    walls = {"litert": [], "onnxruntime": []}
    rss = {}
    for backend in walls:  # peak RSS: the smaller first, since the counter only grows
        one(args.python, backend)  # warm the file cache
        rss[backend] = one(args.python, backend)[1]
    for _ in range(args.repeats):  # interleaved
        for backend in walls:
            walls[backend].append(one(args.python, backend)[0])
    report = {"what": "wavedge run BUNDLED --source replay:...?rate=max --sink null: --limit 1",
              "python": args.python, "torch_installed": not torch_free,
              "repeats": args.repeats, "backends": {
                  b: {"wall_s_median": round(statistics.median(w), 3),
                      "wall_s_min": round(min(w), 3), "wall_s_max": round(max(w), 3),
                      "peak_rss_mb": round(rss[b], 1)} for b, w in walls.items()}}
    for b, r in report["backends"].items():
        print(f"{b:12s} wall median {r['wall_s_median']:.3f} s "
              f"[{r['wall_s_min']:.3f}, {r['wall_s_max']:.3f}], peak RSS {r['peak_rss_mb']} MB")
    if not torch_free:
        print("note: torch is installed in that venv (a board's venv has none)")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
