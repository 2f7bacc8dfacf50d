"""A fault-injecting proxy between two pseudo-terminals, for tests and for trying a bridge on
a bad line by hand:

    python -m wavedge.firmware_bridge.proxy --flip 0.004 --drop 0.003 --insert 0.003 \\
        --duplicate 0.001 --burst 0.001 --delay-ms 2

prints the two ports (``host`` and ``board``) and forwards bytes between them until Ctrl-C or
SIGTERM, corrupting each byte with the given probabilities (flip one bit, drop it, insert a
random byte after it, send it twice), injecting garbage bursts (1-400 random bytes) and
optional delays, in both directions, and counting what it did.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faults:
    flip: float = 0.0  # per byte: flip one random bit
    drop: float = 0.0  # per byte: lose it
    insert: float = 0.0  # per byte: add a random byte after it
    duplicate: float = 0.0  # per byte: send it twice
    burst: float = 0.0  # per byte: add a burst of 1-400 random bytes after it
    delay_ms: float = 0.0  # added before forwarding each chunk
    seed: int = 0

    def total(self) -> float:
        return self.flip + self.drop + self.insert + self.duplicate


@dataclass
class FaultCounts:
    bytes_in: int = 0
    bytes_out: int = 0
    flipped: int = 0
    dropped: int = 0
    inserted: int = 0
    duplicated: int = 0
    bursts: int = 0


def corrupt(data: bytes, faults: Faults, rng: np.random.Generator,
            counts: FaultCounts) -> bytes:
    """``data`` with the faults applied (vectorised: a few numpy passes per chunk)."""
    a = np.frombuffer(data, np.uint8).copy()
    n = len(a)
    counts.bytes_in += n
    u = rng.random(n)
    flip = u < faults.flip
    a[flip] ^= (1 << rng.integers(0, 8, int(flip.sum()))).astype(np.uint8)
    counts.flipped += int(flip.sum())
    c1 = faults.flip + faults.drop
    c2 = c1 + faults.insert
    c3 = c2 + faults.duplicate
    drop = (u >= faults.flip) & (u < c1)
    insert = (u >= c1) & (u < c2)
    dup = (u >= c2) & (u < c3)
    burst = rng.random(n) < faults.burst
    counts.dropped += int(drop.sum())
    counts.inserted += int(insert.sum())
    counts.duplicated += int(dup.sum())
    counts.bursts += int(burst.sum())
    copies = 1 - drop.astype(np.int64) + dup.astype(np.int64)
    kept = np.repeat(a, copies)
    after = np.cumsum(copies)  # index in ``kept`` just after byte i's copies
    lengths = rng.integers(1, 401, int(burst.sum()))
    where = np.concatenate([after[insert], np.repeat(after[burst], lengths)])
    values = rng.integers(0, 256, len(where), dtype=np.uint8)
    out = np.insert(kept, where, values).tobytes() if len(where) else kept.tobytes()
    counts.bytes_out += len(out)
    return out


class FaultProxy:
    """Two pseudo-terminals, ``host_port`` and ``board_port``, joined through the faults."""

    def __init__(self, faults: Faults = Faults(), reverse: Faults | None = None) -> None:
        self.faults = {"to_board": faults, "to_host": reverse if reverse is not None else faults}
        self.counts = {"to_board": FaultCounts(), "to_host": FaultCounts()}
        self._fds = []
        ports = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            ports.append(os.ttyname(slave))
            self._fds.append((master, slave))  # slave kept open: the path lives while it is
        self.host_port, self.board_port = ports
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="wavedge-proxy", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        (host_m, _), (board_m, _) = self._fds
        route = {host_m: (board_m, "to_board"), board_m: (host_m, "to_host")}
        rngs = {k: np.random.default_rng(f.seed + i) for i, (k, f) in
                enumerate(self.faults.items())}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(route), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                dst, direction = route[fd]
                faults = self.faults[direction]
                if faults.delay_ms:
                    time.sleep(faults.delay_ms / 1000.0)
                out = corrupt(data, faults, rngs[direction], self.counts[direction])
                view = memoryview(out)
                while view and not self._stop.is_set():
                    try:
                        view = view[os.write(dst, view):]
                    except BlockingIOError:
                        time.sleep(0.001)
                    except OSError:
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        for master, slave in self._fds:
            for fd in (master, slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("flip", "drop", "insert", "duplicate", "burst"):
        ap.add_argument(f"--{name}", type=float, default=0.0,
                        help=f"probability per byte to {name} (default 0)")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    faults = Faults(args.flip, args.drop, args.insert, args.duplicate, args.burst, args.delay_ms,
                    args.seed)
    # Ctrl-C or SIGTERM stop it, as KeyboardInterrupt, set here: started in the background by
    # a script it inherits SIGINT ignored, which Python then leaves ignored (a CI run launched
    # so hung here). Not an Event set by the handler: the handler runs in the main thread and
    # could meet the Event's lock held by that thread's own wait().
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    with FaultProxy(faults) as proxy:
        # the ports are printed inside the try: a caller may signal as soon as it has read
        # them (measured: 3 of 8 runs raced it when the print came first)
        try:
            print(f"host {proxy.host_port}\nboard {proxy.board_port}", flush=True)
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(f"to board: {proxy.counts['to_board']}\nto host: {proxy.counts['to_host']}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
