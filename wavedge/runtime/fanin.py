"""Several sources read at once, for a run of several streams (``loop.run_many``).

Each source is read by its own thread (a serial port or a broker blocks its reader, and one
slow sensor must not stall the rest) into its own bounded queue; ``next_tick()`` waits until
some source has a sample (see below) and hands back at most one sample per source, in order
per source (a source's extra samples wait for the next ticks; a reader whose queue is full
waits, so a fast source cannot grow memory). A source that ends or fails ends its own stream only;
``next_tick()`` returns None once every source has ended.

A tick waits for every live source to have a sample, for at most ``wait_s`` after the oldest
sample waiting arrived, as a serving system's dynamic batching waits for a fuller batch:
sensors of one rate deliver at their own phases, and a tick per arrival would call a group's
batch graph once per sample instead of once per instant (2 sources at 1 kHz each: 7,990
ticks for 8,000 samples without the wait). A late or stalled source costs the others at most
``wait_s`` of latency; the deadline runs from the arrival, so a backlog never waits again.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from wavedge.errors import WavedgeError
from wavedge.runtime import interrupts
from wavedge.runtime.interrupts import POLL_S

QUEUE_PER_SOURCE = 64  # samples read ahead per source before its reader waits
TICK_WAIT_MS = 2.0  # the longest default wait of a tick for its late sources
_END = object()
_CUT = object()  # the end of a source that stopped mid-recording (``replay:?limit=``)


def default_wait_ms(rate_hz: float | None) -> float:
    """A tick's default wait: one sample period at the model's rate, at most ``TICK_WAIT_MS``
    (a sensor later than one period is a tick behind; at a model's 10 Hz the 2 ms cost no
    throughput and bound the latency a stalled sensor adds)."""
    return min(TICK_WAIT_MS, 1000.0 / rate_hz) if rate_hz else TICK_WAIT_MS


def _closes(item) -> bool:
    """A source's end or failure, queued after its samples."""
    return item is _END or item is _CUT or isinstance(item, WavedgeError)


class FanIn:
    def __init__(self, sources: list, ended, failed, wait_s: float = 0.0) -> None:
        # callbacks: (k, whether its last sample ended a recording) and (k, exc)
        self._ended, self._failed = ended, failed
        self._wait_s = wait_s
        # per source: (arrival time, a sample or its end or failure)
        self._pending = [deque() for _ in sources]
        self._live = len(sources)
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._read, args=(k, s), daemon=True,
                                          name=f"wavedge-source-{k}")
                         for k, s in enumerate(sources)]
        for t in self._threads:
            t.start()

    def _read(self, k: int, source) -> None:
        try:
            for sample in source:
                sample.stream = k
                if not self._put(k, sample):
                    return
            self._put(k, _CUT if getattr(source, "cut", False) else _END)
        except WavedgeError as exc:
            self._put(k, exc)
        except Exception as exc:  # noqa: BLE001 - a reader thread must report, not vanish
            self._put(k, WavedgeError(f"{type(exc).__name__}: {exc}"))

    def _put(self, k: int, item) -> bool:
        """Queue ``item`` for source ``k`` once there is room, unless the run stopped."""
        with self._cond:
            while len(self._pending[k]) >= QUEUE_PER_SOURCE and not self._stopped:
                self._cond.wait(0.1)
            if self._stopped:
                return False
            pending = self._pending[k]
            pending.append((time.monotonic(), item))
            if self._wakes(pending, item):
                self._cond.notify_all()
            return True

    def _wakes(self, pending: deque, item) -> bool:
        """Whether the tick's wait must wake for this item: an end or failure, the first
        sample waiting (the wait's deadline starts), or the last one missing. Any other
        arrival changes nothing the wait acts on: waking for each cost 5.7 passes of
        ``next_tick``'s loop a tick with 8 paced sources, and 82 against 58 us of CPU a
        sample on ONNX Runtime (docs/benchmarks.md)."""
        if _closes(item):
            return True
        if len(pending) > 1:
            return False
        filled = sum(1 for p in self._pending if p)
        return filled == 1 or filled >= self._live

    def next_tick(self) -> list | None:
        """(source index, sample) pairs, at most one per source; None when all have ended."""
        with self._cond:
            while True:
                heads = self._heads()
                if heads:
                    due = min(arrived for arrived, _ in heads.values()) + self._wait_s
                    left = due - time.monotonic()
                    if len(heads) == self._live or left <= 0:
                        for k in heads:
                            self._pending[k].popleft()
                        self._cond.notify_all()  # room for the readers
                        return [(k, sample) for k, (_, sample) in heads.items()]
                    self._cond.wait(min(left, POLL_S))
                elif not self._live:
                    return None
                else:
                    self._cond.wait(POLL_S)
                interrupts.check()

    def _heads(self) -> dict:
        """Each source's first waiting sample, by source; an end (or failure) at the head is
        acted on first, after the samples before it."""
        heads = {}
        for k, pending in enumerate(self._pending):
            while pending and _closes(pending[0][1]):
                self._mark(k, pending.popleft()[1])
            if pending:
                heads[k] = pending[0]
        return heads

    def _mark(self, k: int, what) -> None:
        self._live -= 1
        if what is _END or what is _CUT:
            self._ended(k, what is _END)
        else:
            self._failed(k, what)

    def stop(self) -> None:
        """Let the readers go (each ends at its next sample; the sources are closed next)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
