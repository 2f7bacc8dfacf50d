"""A board's round trip to `wavedge run`: one sample sent, its prediction back, interleaved.

    python scripts/bench_reply.py --out out/bench/reply.json

Three runs of the bundled model, each on the loopback, into `null:`: an `http:` source with
`reply=last` (a POST answered with its prediction), a `udp:` source with `reply=last` (a
datagram answered to its sender), and a plain `http:` source (a POST answered `204` before the
model steps: HTTP's own round trip, the floor of the first). The client sends the recording's
samples one at a time, in turn to each run, as a board would (one kept-alive connection per
HTTP run); each repeat's p50, p90 and p99 in milliseconds after a warm-up, and the spread of
the repeats' p50s.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import write_json
from wavedge.runtime.machine import describe

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "wavedge" / "bundled" / "wave_basic_motions"
WAYS = {"http reply=last": "http://127.0.0.1:{port}/imu?reply=last",
        "udp reply=last": "udp://127.0.0.1:{port}?reply=last",
        "http (204 at once)": "http://127.0.0.1:{port}/imu"}


def _port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Board:
    """One way's run and the board's end of it."""

    def __init__(self, way: str) -> None:
        self.udp = way.startswith("udp")
        self.port = _port(socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM)
        url = WAYS[way].format(port=self.port)
        self.run = subprocess.Popen([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED),
                                     "--source", url, "--sink", "null:"],
                                    stderr=subprocess.DEVNULL)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if self.udp else None
        self.conn = None if self.udp else http.client.HTTPConnection("127.0.0.1", self.port,
                                                                     timeout=10)

    def ready(self, row: str) -> None:
        for _ in range(300):  # the run's start-up: its port answers once it is listening
            try:
                return self.send(row, timeout=0.1)
            except OSError:
                if not self.udp:
                    self.conn.close()
                time.sleep(0.05)
        raise SystemExit("the run did not start")

    def send(self, row: str, timeout: float = 10.0) -> float:
        t = time.perf_counter()
        if self.udp:
            self.sock.settimeout(timeout)
            self.sock.sendto(row.encode(), ("127.0.0.1", self.port))
            self.sock.recv(65535)
        else:
            self.conn.request("POST", "/imu", row)
            self.conn.getresponse().read()
        return time.perf_counter() - t

    def close(self) -> None:
        self.run.terminate()
        self.run.wait(30)


def _pcts(seconds: list) -> dict:
    xs = sorted(seconds)
    return {f"p{p}": round(xs[int(p / 100 * (len(xs) - 1))] * 1e3, 3) for p in (50, 90, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000, help="per way and repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [",".join(r.split(",")[2:])
            for r in (BUNDLED / "recording.csv").read_text().splitlines()[1:]]
    boards = {way: _Board(way) for way in WAYS}
    try:
        for board in boards.values():
            board.ready(rows[0])
        runs = {way: [] for way in WAYS}
        for _ in range(args.repeats):
            times = {way: [] for way in WAYS}
            for k in range(args.warmup + args.samples):
                for way, board in boards.items():
                    took = board.send(rows[k % len(rows)])
                    if k >= args.warmup:
                        times[way].append(took)
            for way in WAYS:
                runs[way].append(_pcts(times[way]))
    finally:
        for board in boards.values():
            board.close()
    report = {"machine": describe(), "samples": args.samples, "repeats": args.repeats,
              "ways": {way: {"p50 median": statistics.median(r["p50"] for r in rs),
                             "p50 range": [min(r["p50"] for r in rs),
                                           max(r["p50"] for r in rs)], "repeats": rs}
                       for way, rs in runs.items()}}
    for way, r in report["ways"].items():
        print(f"{way:<20} p50 {r['p50 median']:.3f} ms (repeats {r['p50 range'][0]:.3f}-"
              f"{r['p50 range'][1]:.3f}), p99 of the repeats "
              + ", ".join(f"{x['p99']:.3f}" for x in r["repeats"]))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
