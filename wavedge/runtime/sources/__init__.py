"""Sources: where samples come from. One module per URL scheme, each with ``open(url, manifest)``
returning an iterable of ``Sample`` with a ``close()``; see ``wavedge.runtime.urls``."""

from __future__ import annotations

import json
import queue
import threading
import time
from itertools import islice

from wavedge.errors import SourceError, reason
from wavedge.runtime import interrupts
from wavedge.runtime.interrupts import POLL_S
from wavedge.runtime.urls import NO_TOP
from wavedge.recordings import RATE_WINDOW, TABLE_PARAMS, Columns, Resampler, Sample, \
    csv_samples, message_lines, target_columns, with_rate

__all__ = ["Pacer", "Sample", "SourceError", "TableOptions", "rate_param"]


SOURCE_TABLE_PARAMS = (*TABLE_PARAMS, "sample_rate", "resample")


RATE_RANGE = (1e-3, 1e6)  # Hz: from one sample in 17 minutes to a MHz ADC
COUNT_RANGE = (0, NO_TOP)
# a live source's arrivals timed by this host: the first ARRIVAL_SKIP left out (lines the port
# held come at once), then windows of RATE_WINDOW of them over ARRIVAL_S at the least (a stall of
# the machine of 20 ms is a third of 64 samples at 1 kHz), until two windows in a row agree
# within the bounds (a broker hands over a kept session's thousands of messages at once on
# connect), ARRIVAL_WINDOWS at the most; a rate off the model's by more than the bounds is said
# (USB and the scheduler bunch lines, so only a plain mismatch: 10 Hz against 50 or 100 Hz is
# what a board set up for another model sends)
ARRIVAL_SKIP = 16
ARRIVAL_S = 2.0
ARRIVAL_BOUNDS = (0.8, 1.25)
ARRIVAL_WINDOWS = 8


def port_reader(url, name: str | None = None) -> tuple[str, str]:
    """What a source of a port (``url.path``) or a pipe (``name``) reads, for
    ``urls.reader_of``: it feeds one stream, since two readers would split its samples."""
    return name or url.path, "two readers would split its samples"


class TableOptions:
    """A source URL's table keys (``wavedge.recordings``): the column map, a stated sample
    rate, and whether to resample to the model's rate."""

    def __init__(self, url, manifest, live: bool = False) -> None:
        self.columns = Columns.from_params(url.params, url.text)
        self.channels = manifest.channels
        self.targets = target_columns(manifest.signature)
        self.stated_hz = url.get("sample_rate", None, float, RATE_RANGE)
        resample = url.get("resample", "0") not in ("0", "", "false", "no")
        self.resampler = Resampler(manifest.sample_rate_hz) \
            if resample and manifest.sample_rate_hz else None
        self.model_hz = manifest.sample_rate_hz
        self.where = url.text
        self.live = live  # samples come as the board makes them: their arrivals are timed
        self.arrival_hz: float | None = None  # the arrivals' rate, once timed
        self.warn = None  # the run's warning line, for what is found while it runs

    def lines(self, lines, where: str, strict: bool = True):
        """The samples of a source's text ``lines`` (``recordings.csv_samples``: CSV,
        ``NAME:VALUE`` pairs or JSON, mixed as a live source may send them), through
        ``samples``; ``strict`` False where a first line may be cut (a port opened mid-line)."""
        return self.samples(csv_samples(lines, self.channels, self.columns, where, strict,
                                        self.targets, mixed=True))

    def samples(self, samples):
        """``samples`` checked against (or resampled to) the model's sample rate; a live
        source's arrivals timed when it has neither timestamps nor a stated rate."""
        if self.live and self.stated_hz is None and self.model_hz:
            samples = self._timed(samples)
        return with_rate(samples, self.model_hz, self.where, self.stated_hz, self.resampler)

    def _timed(self, samples):
        """``samples`` as they come, the rate they arrive at measured once (``ARRIVAL_SKIP``,
        ``RATE_WINDOW``, ``ARRIVAL_S``, ``ARRIVAL_WINDOWS``): a board sending lines without
        timestamps at another rate than the model's had been run as if at the model's, its
        predictions wrong without a word."""
        it, clock = iter(samples), time.monotonic
        begun, last_hz, windows = None, None, 0
        for n, s in enumerate(it):
            if s.time is not None:  # timestamps: with_rate checks those
                break
            if n == ARRIVAL_SKIP:
                begun = (n, clock())
            elif begun and n - begun[0] >= RATE_WINDOW and \
                    (now := clock()) - begun[1] >= ARRIVAL_S:
                hz, begun, windows = (n - begun[0]) / (now - begun[1]), (n, now), windows + 1
                if last_hz is not None and _within(hz / last_hz):
                    self._judge(hz)
                    break
                if windows == ARRIVAL_WINDOWS:
                    break  # arrivals too uneven to judge
                last_hz = hz
            yield s
        else:
            return
        yield s
        yield from it

    def _judge(self, hz: float) -> None:
        self.arrival_hz = hz
        if self._off_rate() and self.warn is not None:  # as found: a service's stop is far off
            self.warn(self._arrival_note())

    def head(self, samples, n: int = RATE_WINDOW) -> int:
        """How many of the first ``n`` samples there are, read as ``samples()`` reads them (a
        wrong column or rate raises here, before the run), through a resampler of their own:
        the run's summary counts the run's samples, not these again."""
        the_runs = self.resampler
        self.resampler = Resampler(self.model_hz) if the_runs is not None else None
        try:
            return sum(1 for _ in islice(self.samples(samples), n))
        finally:
            self.resampler = the_runs

    def notes(self) -> list[str]:
        """What the source did to the samples, for the run summary."""
        done = self.resampler.describe() if self.resampler is not None else None
        out = [done] if done else []
        return out + ([self._arrival_note()] if self._off_rate() else [])

    def _off_rate(self) -> bool:
        return self.arrival_hz is not None and not _within(self.arrival_hz / self.model_hz)

    def _arrival_note(self) -> str:
        return (f"{self.where}: samples arrived at about {self.arrival_hz:.3g} Hz by this host's "
                f"clock, and the model's rate is {self.model_hz:g} Hz: a board sampling at "
                "another rate gives wrong predictions; say its rate with sample_rate=HZ (and "
                "resample=1 to resample), or set the board to the model's")


def _within(ratio: float) -> bool:
    low, high = ARRIVAL_BOUNDS
    return low <= ratio <= high


class LiveSource:
    """What the sources of a board's live samples share: ``table``, their ``TableOptions``,
    takes the run's warning line, for what it finds while the run goes on."""

    table: TableOptions

    def on_warning(self, warn) -> None:
        self.table.warn = warn


class Inbox:
    """What a network source's thread receives (an MQTT message, an HTTP POST's body), waiting
    for the model in a bounded queue that drops its oldest when full (the newest sample is
    the one that matters), ``received`` and ``dropped`` counted."""

    def __init__(self, capacity: int) -> None:
        self.queue: queue.Queue = queue.Queue(capacity)
        self.received = self.dropped = 0
        self.lock = threading.Lock()

    def put(self, payload: bytes) -> None:
        with self.lock:
            self.received += 1
            while True:
                try:
                    self.queue.put_nowait(payload)
                    return
                except queue.Full:
                    try:
                        old = self.queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        continue
                    if hasattr(old, "refuse"):  # a POST waiting on its answer (http: reply=)
                        old.refuse(503, "dropped from the source's full queue")

    def payloads(self, idle_s: float | None, waiting=None):
        """Each payload as it comes; ends after ``idle_s`` without one (None: never).
        ``waiting(seconds since start)`` is called while none comes (a broker not reached)."""
        last = started = time.monotonic()
        while True:
            try:
                payload = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                interrupts.check()
                now = time.monotonic()
                if waiting is not None:
                    waiting(now - started)
                if idle_s is not None and now - last > idle_s:
                    return
                continue
            last = time.monotonic()
            yield payload


def senders(addresses: set, own: str = "port") -> str:
    """How many hosts a network source heard from, and what two or more of them mean (each
    board should have its ``own`` port, or path)."""
    return f"{len(addresses)} sender(s)" + (
        f" (their samples interleave in one stream: give each board its own {own})"
        if len(addresses) > 1 else "")


class Pacer:
    """Releases samples at ``rate_hz`` on an absolute schedule (no drift); ``None`` = no wait."""

    def __init__(self, rate_hz: float | None) -> None:
        self.period_s = 1.0 / rate_hz if rate_hz else 0.0
        self._next = None

    def wait(self) -> None:
        if not self.period_s:
            return
        now = time.perf_counter()
        if self._next is None:
            self._next = now
        delay = self._next - now
        if delay > 0:
            time.sleep(delay)
        self._next += self.period_s


def rate_param(url, manifest) -> float | None:
    """``?rate=`` in Hz, ``max`` for no pacing; default: the manifest's sample rate."""
    raw = url.params.get("rate")
    if raw is None:
        return manifest.sample_rate_hz
    if raw == "max":
        return None
    return url.get("rate", kind=float, within=RATE_RANGE)


REPLIES = ("last", "all")  # reply=: a message answered with its last sample's result, or all
_TEXT = "text/plain; charset=utf-8"


def reply_mode(url, table) -> str | None:
    """A network source's ``reply=`` (None: not asked), refused where it cannot hold."""
    reply = url.get("reply")
    if reply is not None and reply not in REPLIES:
        raise SourceError(f"{url.text}: reply= takes last (the last sample's result) or all "
                          f"(every sample's), not {reply!r}")
    if reply is not None and table.resampler is not None:
        raise SourceError(f"{url.text}: reply= answers a message with its samples' results, "
                          "and resample=1 makes other samples of them; send at the model's "
                          "rate")
    return reply


class Awaited:
    """A message whose sender waits on its answer (``reply=``): its samples out of the table
    (``out``, final at ``all_out``) and taken by the run (``took``, from the loop's thread),
    each as its jsonl record or why it was refused, in order; ``done`` once all are taken, or
    it is refused, when ``then(self)`` is called too (a datagram sent back)."""

    def __init__(self, body: bytes, then=None) -> None:
        self.body, self.lines, self.then = body, (0, 0), then
        self.out, self.records, self.first_refusal = 0, [], None
        self.whole = False
        self.refused: tuple[int, str] | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def took(self, sample, result, why: str | None = None) -> None:
        from wavedge.runtime.sinks import record

        line = sample.line - self.lines[0]  # its line of the message, as the board counts
        row = record(result, sample) if result is not None else {"line": line, "refused": why}
        with self.lock:
            self.records.append(row)
            if result is None and self.first_refusal is None:
                self.first_refusal = f"line {line}: {why}"
            self._check()

    def all_out(self) -> None:
        with self.lock:
            self.whole = True
            self._check()

    def _check(self) -> None:
        if self.whole and len(self.records) == self.out and not self.done.is_set():
            self._finish()  # once: a sample taken after a 504 answers nothing again

    def refuse(self, status: int, why: str) -> None:
        with self.lock:
            if not self.done.is_set():
                self.refused = (status, why)
                self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.then is not None:
            self.then(self)

    def answer(self, reply: str) -> tuple[int, str, str]:
        """(HTTP status, body, content type): 200 and the last taken sample's record (or
        every sample's, refusals by line), 204 when the message held no sample, 422 when the
        run refused them all, or the status it was refused with."""
        from wavedge.runtime.sinks import json_text

        if self.refused is not None:
            return self.refused[0], self.refused[1], _TEXT
        taken = [r for r in self.records if "refused" not in r]
        if not self.records:
            return 204, "", ""
        if not taken:
            return 422, f"no sample taken ({self.first_refusal})", _TEXT
        body = json_text(taken[-1]) if reply == "last" else \
            "[" + ", ".join(json_text(r) for r in self.records) + "]"
        return 200, body, "application/json"


class Answers:
    """What a source that answers on its own channel (``reply=`` over a datagram, a serial
    line) sent back: each awaited message's answer as one JSON text (its record, or
    ``{"refused": WHY}``; nothing for a message with no sample), counted, and one that cannot
    go counted with its reason, never the end of the run."""

    def __init__(self, reply: str | None) -> None:
        self.reply, self.sent, self.failed, self.why = reply, 0, 0, None

    def send(self, awaited: Awaited, write) -> None:
        status, text, kind = awaited.answer(self.reply)
        if status == 204:
            return
        try:
            write(text if kind == "application/json" else json.dumps({"refused": text}))
            self.sent += 1
        except OSError as exc:  # too long for a datagram, no route, a port gone, closed
            self.failed += 1
            self.why = reason(exc)

    def note(self) -> str:
        if self.reply is None:
            return ""
        return f"; reply={self.reply}: {self.sent} answered" + (
            f", {self.failed} could not be (the last: {self.why})" if self.failed else "")


class Replies:
    """The messages of a source that may answer them (``reply=``, its ``mode``; None: it does
    not): their lines to the table, each one's span of lines kept, and each sample tied to
    the message it came from (the table pipeline reads no line ahead of the sample it yields,
    so the message being read is the sample's)."""

    def __init__(self, url, table: TableOptions) -> None:
        self.mode = reply_mode(url, table)
        self.reading: Awaited | None = None

    def samples(self, table: TableOptions, messages, where: str, strict: bool = True):
        """The samples of ``messages`` through ``table``, each of an awaited message carrying
        its ``receipt`` when the source answers."""
        samples = table.lines(self.lines(messages), where, strict)
        return samples if self.mode is None else self.receipted(samples)

    def lines(self, messages):
        """The lines of ``messages``: payloads, or ``Awaited`` ones, in order."""
        read = 0
        for message in messages:
            awaited = message if isinstance(message, Awaited) else None
            lines = message_lines(message if awaited is None else awaited.body)
            if awaited is not None:
                awaited.lines, self.reading = (read, read + len(lines)), awaited
            yield from lines
            read += len(lines)
            if awaited is not None:  # the table asks past its last line: its samples are out
                self.reading = None
                awaited.all_out()

    def receipted(self, samples):
        """``samples``, each of an awaited message carrying its ``receipt``."""
        for sample in samples:
            awaited = self.reading
            if awaited is not None and sample.line is not None and \
                    awaited.lines[0] < sample.line <= awaited.lines[1]:
                awaited.out += 1
                sample.receipt = awaited.took
            yield sample
