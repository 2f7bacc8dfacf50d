"""The streaming loop behind ``wavedge run``: source -> stream -> sink, with a summary.

Nothing in the loop ends it with a traceback: bad samples follow the stream's policy and are
counted (with a warning line on stderr for the first few), a source that ends stops the loop,
a source that vanishes for good ends it with its error in the summary, a sink that cannot
write (a full disk) likewise, a closed pipe stops it quietly, and SIGTERM or Ctrl-C stop it
after the result in flight is written, the sink flushed. Memory stays flat: latencies go into
a fixed ring of the most recent samples.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from wavedge.errors import InputError, WavedgeError
from wavedge.resets import ResetPolicy, Resetter
from wavedge.runtime import interrupts
from wavedge.runtime.events import Events, Found

LATENCY_WINDOW = 1 << 17  # percentiles over the most recent 131,072 samples
WARN_LIMIT = 5  # warning lines per reason before going quiet (all are still counted)
COMMANDS = ("reset", "stats")  # what a sink's ``inbox`` may carry (``_Loop._command``)
WAITING_POLL_S = 0.05  # how soon the keeper acts while no sample comes: commands, due lines


def _latency(ns: np.ndarray) -> dict:
    """p50, p99 and max in microseconds of latencies in nanoseconds, linear between ranks as
    ``np.percentile``'s default, whose ``np.unique`` imports ``numpy.ma``: 12 ms of a 0.22 s
    ``wavedge run --limit 1``, spent at its exit. Only the ranks read are put in place (a full
    sort of the 131,072-sample ring took 7.6 ms, against 5.3 for ``np.percentile``; a ``stats``
    command asks for it while the run waits)."""
    at = np.array((0.5, 0.99)) * (len(ns) - 1)
    ranks = sorted({*np.floor(at).astype(int), *np.ceil(at).astype(int), len(ns) - 1})
    us = np.partition(ns, ranks)[ranks] / 1000.0
    p50, p99 = np.interp(at, ranks, us)
    return {"p50": float(p50), "p99": float(p99), "max": float(us[-1])}


@dataclass
class Summary:
    samples: int = 0
    dropped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    latency_us: dict = field(default_factory=dict)  # the push alone
    with_sink_us: dict = field(default_factory=dict)  # the push and the sink's write
    seconds: float = 0.0
    truth_samples: int = 0
    truth_correct: int = 0  # agreement heads (class scores, tokens)
    truth_sq_error: float = 0.0  # squared-error heads (regression, Gaussian mean)
    truth_metric: str | None = None  # "agreement" or "squared_error", from the head
    ends: int = 0  # samples that closed a labelled sequence
    ends_correct: int = 0
    interrupted: bool = False
    stopped_by: str | None = None  # SIGTERM or SIGINT
    broken_pipe: bool = False  # the reader of our output went away
    error: str | None = None
    resets: int = 0  # state resets the policy made
    state_resets: Counter = field(default_factory=Counter)  # poisoned state, reset and counted
    reset_policy: str = "state never reset"
    commands: Counter = field(default_factory=Counter)  # from the sink's command topic
    notes: list = field(default_factory=list)  # what the source did (resampling)
    streams: list = field(default_factory=list)  # samples per source, a run of several
    stream_faults: list = field(default_factory=list)  # per source: its drops and repairs
    one_call: bool = False  # ... stepped by one call of a batch graph, not in turn
    ticks: int = 0  # ... calls of the group, or rounds of pushes in turn
    tick_wait_ms: float = 0.0  # how long a tick waited for every source, at most
    written: int | None = None  # results written, where ``events`` chose them
    events: str = ""  # ``Events.describe()``
    found: dict | None = None  # what they found of the truth (``events.Found.totals``)

    def lines(self, error: bool = True) -> list[str]:
        """The summary, a line each; without ``error``, no ``stopped:`` line (a caller that
        ends with the error's own line, as the CLI does)."""
        stop = f" (stopped by {self.stopped_by})" if self.stopped_by else \
            " (interrupted)" if self.interrupted else ""
        out = [f"samples: {self.samples} in {self.seconds:.2f} s{stop}"]
        out.append(f"dropped: {_tally(self.dropped)}; repaired: {_tally(self.repaired)}")
        if self.state_resets:
            out.append("state reset after it was poisoned: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.state_resets.items()))
                + " (the outputs were not finite, or the state passed its limit)")
        if self.streams:
            how = "one call per tick for all (a group)" if self.one_call else "stepped in turn"
            out.append(f"streams: {len(self.streams)}, {how}; samples "
                       + ", ".join(map(str, self.streams)))
            if self.ticks:
                out.append(f"ticks: {self.ticks}, {sum(self.streams) / self.ticks:.2f} samples "
                           f"each (a tick waits up to {self.tick_wait_ms:g} ms for every "
                           "source)")
            for k, faults in enumerate(self.stream_faults):
                if faults:  # which sensor it was
                    out.append(f"  stream {k}: " + ", ".join(
                        f"{what} {n}" for what, n in sorted(faults.items())))
        if self.written is not None:
            out.append(f"written: {self.written} of {self.samples} results ({self.events})")
            if self.found:
                out.append(Found.line(self.found))
        if self.latency_us:
            lat = self.latency_us
            per, with_sink = ("tick", "tick with the sink's writes") if self.streams else \
                ("push", "sample with the sink's write")
            out.append(f"latency per {per}: p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us, "
                       f"max {lat['max']:.1f} us")
            sk = self.with_sink_us
            out.append(f"per {with_sink}: p50 {sk['p50']:.1f} us, p99 "
                       f"{sk['p99']:.1f} us, max {sk['max']:.1f} us")
        if self.truth_samples and self.truth_metric == "squared_error":
            out.append(f"mean squared error against truth: "
                       f"{self.truth_sq_error / self.truth_samples:.4g} over "
                       f"{self.truth_samples} samples")
        elif self.truth_samples:
            out.append(f"agreement with truth: {self.truth_correct / self.truth_samples:.1%} of "
                       f"{self.truth_samples} samples")
        if self.ends:
            out.append(f"at the last sample of each recording: {self.ends_correct}/{self.ends} "
                       f"({self.ends_correct / self.ends:.1%})")
        if self.resets or self.reset_policy != "state never reset":
            out.append(f"resets: {self.resets} ({self.reset_policy})")
        if self.commands:
            out.append("commands: " + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(self.commands.items())))
        out += self.notes
        if self.error and error:
            out.append(f"stopped: {self.error}")
        return out

    def to_json(self) -> dict:
        """The summary for a script (``wavedge run --summary FILE``): the lines' numbers, by
        name; the truth's score as agreement or mean squared error."""
        out = {k: getattr(self, k) for k in (
            "samples", "seconds", "interrupted", "stopped_by", "broken_pipe", "error",
            "latency_us", "with_sink_us", "resets", "reset_policy", "notes")}
        out.update({k: dict(getattr(self, k)) for k in ("dropped", "repaired", "state_resets",
                                                          "commands")})
        if self.truth_samples:
            score = self.truth_correct if self.truth_metric == "agreement" else \
                self.truth_sq_error
            out["truth"] = {"metric": self.truth_metric, "samples": self.truth_samples,
                            "value": score / self.truth_samples}
        if self.ends:
            out["recording_ends"] = {"recordings": self.ends, "correct": self.ends_correct}
        if self.streams:
            out["streams"] = {"samples": self.streams, "one_call": self.one_call,
                              "ticks": self.ticks}
        if self.written is not None:
            out["written"] = {"results": self.written, "how": self.events,
                              "against_truth": self.found}
        return out

    @property
    def all_rejected(self) -> bool:
        """Samples came but not one was used: the input cannot be what the model takes."""
        return self.samples == 0 and sum(self.dropped.values()) > 0


def run(stream, source, sink, limit: int | None = None, warn=None,
        resets: ResetPolicy | None = None, signals: bool = False, started=None,
        status_every_s: float | None = None, events: Events | None = None) -> Summary:
    """Feed ``source`` through ``stream`` into ``sink`` until the source ends, ``limit``
    samples were fed, or Ctrl-C; the state reset where ``resets`` says (before the sample
    that makes it due). With ``signals`` (the main thread only), SIGTERM and SIGINT stop it
    after the result in flight is written; ``started()`` is called once they are installed
    (so that a caller who signals as soon as it sees the start line cannot race them). Returns
    the summary; never raises for bad input, a full disk or a closed pipe. With
    ``status_every_s``, a status line goes to ``warn``'s stderr that often (``_Reporter``).
    With ``events``, the sink gets the results they choose, averaged as they say
    (``wavedge.runtime.events``)."""
    loop = _Loop([stream], sink, limit, warn, resets, status_every_s=status_every_s,
                 events=events)
    it = iter(source)
    return _drive(loop, [source], lambda: next(it, None), loop.feed, signals, started)


def run_many(streams, sources: list, sink, limit: int | None = None, warn=None,
             resets: ResetPolicy | None = None, signals: bool = False,
             started=None, tick_wait_ms: float = 0.0,
             status_every_s: float | None = None, events: Events | None = None) -> Summary:
    """``run`` for several sources, source ``k`` into stream ``k``: ``streams`` is a
    ``StreamGroup`` whose members are keyed 0..n-1 (one backend call per tick for all) or a
    list of ``Stream`` objects (stepped in turn). Each source is read by its own thread; a
    tick steps every stream that has a sample waiting. ``limit`` counts per source; a source
    that ends or fails ends its stream only (the failure is the summary's error). A tick waits
    up to ``tick_wait_ms`` after its oldest sample arrived for every live source to have one
    (``fanin.FanIn``)."""
    from wavedge.runtime.fanin import FanIn

    group = None if isinstance(streams, list) else streams
    members = streams if group is None else [group.member(k) for k in range(len(sources))]
    loop = _Loop(members, sink, limit, warn, resets, group, status_every_s, events)
    fanin = FanIn(sources, loop.lane_ended, loop.source_failed, tick_wait_ms / 1000.0)
    loop.summary.tick_wait_ms = tick_wait_ms
    return _drive(loop, sources, fanin.next_tick, loop.feed_tick, signals, started,
                  fanin.stop)


def _drive(loop: "_Loop", sources: list, next_item, feed, signals: bool, started,
           stop=None) -> Summary:
    """The loop both runs share: ``next_item()`` (None: the input ended) into ``feed``."""
    stopper = _Stopper(signals)
    for source in sources:  # a source that finds something while it runs says so at once
        if hasattr(source, "on_warning"):
            source.on_warning(loop.warn)
    try:
        if (begin := getattr(loop.sink, "begin", None)) is not None:
            begin()  # a file sink starts its file anew now, not when it was opened
        feed = loop.guarded(feed)
        if started is not None:
            started()
        while not loop.done:
            # plain attribute writes, not a context manager: this is once per sample (1 us)
            if stopper.requested:
                raise KeyboardInterrupt
            stopper.waiting = True
            try:
                item = next_item()
            finally:
                stopper.waiting = False
            if item is None:
                loop.complete = True
                break
            feed(item)
            if stopper.requested:
                loop.summary.interrupted, loop.summary.stopped_by = True, stopper.requested
                break
    except KeyboardInterrupt:
        loop.summary.interrupted = True
        loop.summary.stopped_by = stopper.requested or "SIGINT"
    except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly
        loop.summary.interrupted = loop.summary.broken_pipe = True
    except WavedgeError as exc:
        loop.summary.error = str(exc)
    finally:
        stopper.restore()
        if stop is not None:
            stop()
        for source in sources:
            source.close()
        loop.close()
    return loop.finish(sources)


class _Stopper:
    """SIGTERM/SIGINT as a request to stop after the current sample; while the loop waits on
    the source (a serial port may block) the signal interrupts the wait instead, since no
    result is in flight then."""

    def __init__(self, install: bool) -> None:
        self.requested: str | None = None
        self.waiting = False  # the loop is waiting on the source: a signal interrupts it
        self._previous = {}
        if install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name
        if not self.waiting:
            return
        # raised there, it can break the lock: the wait polls ``interrupts.check()`` instead
        # (a second signal raises anyway: a wait that never polls must not hold a run)
        if interrupts.asked is None and interrupts.in_lock_code(frame):
            interrupts.asked = self.requested
            return
        raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        interrupts.asked = None


class _Keeper:
    """While the loop waits for a sample, answers the sink's commands and writes out the
    lines a file sink holds once they are due: done only between samples, a board whose
    sensor went quiet answered at its next sample, and the results before a pause reached
    the file (or `jsonl:- | consumer`) only when the sensor spoke again. ``loop.lock`` keeps
    it out of a sample in flight."""

    def __init__(self, loop: "_Loop") -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, args=(loop,), daemon=True,
                                        name="wavedge-keeper")
        self._thread.start()

    def _keep(self, loop: "_Loop") -> None:
        due = getattr(loop.sink, "flush_due", None)
        while not self._stop.wait(WAITING_POLL_S):
            if loop.inbox or (due is not None and due(check=True)):
                with loop.lock:
                    loop.keep_now(due)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Reporter:
    """A status line every ``every_s`` seconds while the run lasts, from a thread of its own:
    a service's journal had only the summary at its stop, weeks later, so a sensor gone quiet
    or a run dropping samples showed nowhere while it ran. A quiet sensor shows as 0/s."""

    def __init__(self, loop: "_Loop", every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, args=(loop, every_s),
                                        daemon=True, name="wavedge-status")
        self._thread.start()

    def _report(self, loop: "_Loop", every_s: float) -> None:
        before = None
        while not self._stop.wait(every_s):
            with loop.lock:
                now = loop.snapshot()
            loop.say(status_line(now, before))
            before = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def status_line(now: dict, before: dict | None) -> str:
    """One line of ``snapshot()``: the totals, the rate since the last line, the drops."""
    got = now["samples"] - (before["samples"] if before else 0)
    span = now["seconds"] - (before["seconds"] if before else 0.0)
    lat = now["latency_us"]
    streams = f" (per stream {', '.join(map(str, now['streams']))})" if "streams" in now else ""
    timing = f"latency p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us" if now["samples"] \
        else "no sample yet"
    if "written" in now:  # --on-change and the like: what reached the sink
        timing += f"; written {now['written']}"
    sink = "; sink: " + ", ".join(f"{k} {v}" for k, v in now["sink"].items()) \
        if now.get("sink") else ""  # a link's or a broker's losses, as they happen
    return (f"status: {now['samples']} samples in {_seconds(now['seconds'])}{streams}, "
            f"{got / max(span, 1e-9):.1f}/s over the last {_seconds(span)}; dropped: "
            f"{_tally(now['dropped'])}; repaired: {_tally(now['repaired'])}; {timing}{sink}")


def _tally(counts: dict) -> str:
    """Counts by reason as the summary and the status line say them: "a 1, b 2", or none."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


class _Lane:
    """One stream of a run: its resets, what it writes (``events``) and the last sample and
    result (to see where a labelled recording ends)."""

    def __init__(self, k: int, stream, policy: ResetPolicy, events: Events | None) -> None:
        self.k, self.stream, self.resetter = k, stream, Resetter(policy)
        self.events = events.start() if events is not None and events.active else None
        self.found = Found()
        self.sink_reset = None  # a sink's ``reset(stream)``: one that averages per stream
        self.key = None  # the stream's index in samples (None: the run's only one)
        self.prev = self.prev_result = None
        self.samples = 0
        self.ended = False  # its source ended, failed, or it reached the limit

    def reset(self) -> None:
        self.stream.reset()
        if self.events is not None:
            self.events.reset()
        if self.sink_reset is not None:
            self.sink_reset(self.key)


class _Loop:
    """One run's streams, sink and counters; ``feed`` takes one sample through the one
    stream, ``feed_tick`` one sample each through several (a group's call, or in turn)."""

    def __init__(self, streams: list, sink, limit, warn, resets, group=None,
                 status_every_s: float | None = None, events: Events | None = None) -> None:
        self.sink, self.limit, self.group = sink, limit, group
        self.status_every_s = status_every_s
        self.warn = warn or (lambda msg: print(f"wavedge: warning: {msg}", file=sys.stderr))
        # the status lines: beside the warnings, or on stderr as "wavedge: status: ..."
        self.say = warn or (lambda msg: print(f"wavedge: {msg}", file=sys.stderr, flush=True))
        self.summary = Summary()
        policy = resets or ResetPolicy()
        self.lanes = [_Lane(k, s, policy, events) for k, s in enumerate(streams)]
        for lane in self.lanes:
            lane.sink_reset = getattr(sink, "reset", None)
            lane.key = lane.k if len(self.lanes) > 1 else None
        if self.lanes[0].events is not None:
            self.summary.written, self.summary.events = 0, events.describe()
        self.lane = self.lanes[0]
        self.stream = self.lane.stream
        self.summary.reset_policy = policy.describe()
        self.ring = np.zeros(LATENCY_WINDOW, np.int64)  # push
        self.sink_ring = np.zeros(LATENCY_WINDOW, np.int64)  # push and sink write
        self.warned: Counter = Counter()
        self.complete = False  # the source ended by itself: its last sample closes a recording
        self.done = limit is not None and limit <= 0
        self.pushes = 0
        self.started = time.perf_counter_ns()
        self.inbox = getattr(sink, "inbox", None)  # commands (a deque of (command, reply))
        self.lock = threading.Lock()  # a sample in flight, the keeper or the reporter
        self._keeper: _Keeper | None = None
        self._reporter: _Reporter | None = None

    def guarded(self, feed):
        """``feed``, or with a sink that takes commands or holds lines (``flush_due``),
        ``feed`` under ``lock`` and a thread that keeps the sink while the loop waits; with a
        status interval, under ``lock`` too, and the thread that says the status."""
        keep = self.inbox is not None or hasattr(self.sink, "flush_due")
        if not keep and not self.status_every_s:
            return feed

        def locked(item) -> None:
            with self.lock:
                feed(item)

        self._keeper = _Keeper(self) if keep else None
        if self.status_every_s:
            self._reporter = _Reporter(self, self.status_every_s)
        return locked

    def feed(self, sample) -> None:
        lane, stream = self.lane, self.stream
        if self.inbox:
            self._commands()
        if lane.resetter.due(sample.sequence, sample.time if sample.time is not None
                             else time.monotonic()):
            lane.reset()
        t0 = time.perf_counter_ns()
        try:
            result = stream.push(sample.values, sample.problem)
        except InputError as exc:
            self._warn(lane, exc, sample)
            return
        at = self.pushes % LATENCY_WINDOW
        self.ring[at] = time.perf_counter_ns() - t0
        self.pushes += 1
        try:
            self._written(lane, result, sample)
        finally:  # a write that failed (a full disk) counts to its failure, not as 0 us
            self.sink_ring[at] = time.perf_counter_ns() - t0
        self.done = self.limit is not None and lane.samples >= self.limit

    def feed_tick(self, tick: list) -> None:
        """``tick``: (stream index, sample) pairs, at most one per stream."""
        if self.inbox:
            self._commands()
        for k, sample in tick:
            if self.lanes[k].ended and sample.receipt is not None:  # its sender is told now
                sample.receipt(sample, None, "its stream has ended (--limit)")
        tick = [(self.lanes[k], sample) for k, sample in tick if not self.lanes[k].ended]
        for lane, sample in tick:
            if lane.resetter.due(sample.sequence, sample.time if sample.time is not None
                                 else time.monotonic()):
                lane.reset()
        t0 = time.perf_counter_ns()
        results = self._push_tick(tick)
        at = self.pushes % LATENCY_WINDOW
        self.ring[at] = time.perf_counter_ns() - t0
        self.pushes += 1
        try:
            self._write_tick(tick, results)
        finally:
            self.sink_ring[at] = time.perf_counter_ns() - t0
        self.done = all(lane.ended for lane in self.lanes)

    def _write_tick(self, tick: list, results: dict) -> None:
        for lane, sample in tick:
            result = results.get(lane.k)
            if result is None:
                continue
            self._written(lane, result, sample)
            if self.limit is not None and lane.samples >= self.limit:
                lane.ended = True

    def _push_tick(self, tick: list) -> dict:
        """One result per stream stepped, by lane index (a group's members are keyed so),
        warnings for the rest."""
        if self.group is None:
            out = {}
            for lane, sample in tick:
                try:
                    out[lane.k] = lane.stream.push(sample.values, sample.problem)
                except InputError as exc:
                    self._warn(lane, exc, sample)
            return out
        res = self.group.push({lane.k: sample.values for lane, sample in tick},
                              {lane.k: sample.problem for lane, sample in tick
                               if sample.problem is not None})
        if res.errors:
            given = {lane.k: sample for lane, sample in tick}
            for k, exc in res.errors.items():
                self._warn(self.lanes[k], exc, given[k])
        return {k: res[k] for k in res.keys()}

    def _warn(self, lane: _Lane, exc: InputError, sample) -> None:
        """A warning line for a sample the stream refused, naming its stream when there are
        several and its line or .npy row where it came from one (the step alone cannot find
        it: a refused sample takes no step)."""
        reason = _last_reason(lane.stream)
        if sample.receipt is not None:
            sample.receipt(sample, None, str(exc))
        self.warned[reason] += 1
        if self.warned[reason] <= WARN_LIMIT:
            where = f"stream {lane.k}: " if len(self.lanes) > 1 else ""
            where += _position(sample)
            why = f" ({sample.detail})" if sample.detail and sample.problem == reason else ""
            self.warn(where + str(exc) + why + (" (further warnings of this kind suppressed)"
                                                if self.warned[reason] == WARN_LIMIT else ""))

    def _written(self, lane: _Lane, result, sample) -> None:
        """A result fed: counted, written to the sink, scored against the source's truth."""
        summary = self.summary
        summary.samples += 1
        lane.samples += 1
        truth = _known(sample.truth)
        if lane.events is None:
            self.sink.write(result, sample)
        else:
            result, write = lane.events(result)
            if truth is not None:
                lane.found.sample(truth)
            if write:
                self.sink.write(result, sample)
                summary.written += 1
                if truth is not None:
                    lane.found.written(result.head.label(result.values))
        if sample.receipt is not None:  # its sender's answer: averaged as written, never held
            sample.receipt(sample, result)
        if truth is not None:
            _score_truth(summary, result, truth)
        prev = lane.prev
        # a change from no sequence too: the first part of a source that sent its header again
        if prev is not None and _known(prev.truth) is not None and \
                sample.sequence != prev.sequence:
            _score_end(summary, lane.prev_result, prev.truth)
        lane.prev, lane.prev_result = sample, result

    def lane_ended(self, k: int, whole: bool = True) -> None:
        """Source ``k`` ended by itself: its last sample closes a recording, unless it
        stopped mid-way through one (``whole`` False)."""
        lane = self.lanes[k]
        if not lane.ended and whole:
            self._close_recording(lane)
        lane.ended = True

    def source_failed(self, k: int, exc: WavedgeError) -> None:
        self.lanes[k].ended = True
        message = f"source {k}: {exc}"
        self.summary.error = f"{self.summary.error}; {message}" if self.summary.error \
            else message

    def _close_recording(self, lane: _Lane) -> None:
        prev = lane.prev
        if prev is not None and prev.sequence is not None and _known(prev.truth) is not None:
            _score_end(self.summary, lane.prev_result, prev.truth)
            lane.prev = None

    def _commands(self) -> None:
        """Every command waiting (one per sample left a burst waiting for as many samples)."""
        while self.inbox:
            self._command(*self.inbox.popleft())

    def _command(self, command: dict, reply) -> None:
        """``reset`` the state now (every stream's), or answer ``stats`` with the run's
        counters so far."""
        name = command["command"]
        self.summary.commands[name] += 1
        if name == "reset":
            for lane in self.lanes:
                lane.reset()
            reply(command, {"ok": True, "step": self.summary.samples})
            return
        reply(command, {"ok": True, **self.snapshot()})

    def snapshot(self) -> dict:
        """The run's counters so far: the ``stats`` command's answer and the status line's."""
        n = min(self.pushes, LATENCY_WINDOW)
        lat = _latency(self.ring[:n] if n else np.zeros(1))
        dropped, repaired, state_resets = self._counts()
        return {"samples": self.summary.samples,
                "seconds": round((time.perf_counter_ns() - self.started) / 1e9, 3),
                "dropped": dict(dropped), "repaired": dict(repaired),
                "state_resets": dict(state_resets),
                "resets": sum(lane.resetter.resets for lane in self.lanes)
                + self.summary.commands["reset"],
                "latency_us": {"p50": lat["p50"], "p99": lat["p99"]},
                **({"streams": [lane.samples for lane in self.lanes]}
                   if len(self.lanes) > 1 else {}),
                **({"written": self.summary.written} if self.summary.written is not None
                   else {}),
                "sink": getattr(self.sink, "counters", dict)()}

    def _counts(self) -> tuple[Counter, Counter, Counter]:
        """Dropped, repaired and state-reset counts over every stream."""
        out = Counter(), Counter(), Counter()
        for lane in self.lanes:
            st = lane.stream.stats
            for total, c in zip(out, (st.dropped, st.repaired, st.state_resets)):
                total.update(c)
        return out

    def keep_now(self, flush_due) -> None:
        """The keeper's turn: commands answered, due lines written. A sink that cannot take
        them ends the run, as from the loop's, at the loop's next turn."""
        try:
            if self.inbox:
                self._commands()
            if flush_due is not None:
                flush_due()
        except BrokenPipeError:  # the reader of our output went away: a quiet stop
            self.summary.interrupted = self.summary.broken_pipe = True
            self.done = True
        except WavedgeError as exc:  # a full disk
            self.summary.error = self.summary.error or str(exc)
            self.done = True

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.stop()
        if self._keeper is not None:
            self._keeper.stop()
        try:
            self._commands()  # those that came after the last sample: answered, not lost
            self.sink.close()
        except BrokenPipeError:
            self.summary.broken_pipe = True
        except WavedgeError as exc:  # the last lines could not be written (a full disk)
            self.summary.error = self.summary.error or str(exc)

    def finish(self, sources: list) -> Summary:
        summary = self.summary
        if self.complete and len(self.lanes) == 1 and not getattr(sources[0], "cut", False):
            self._close_recording(self.lane)
        summary.seconds = (time.perf_counter_ns() - self.started) / 1e9
        summary.resets = sum(lane.resetter.resets for lane in self.lanes)
        summary.notes = [n for s in sources for n in getattr(s, "notes", list)()] + \
            list(getattr(self.sink, "notes", list)())
        blind = [lane.k for lane in self.lanes if lane.resetter.blind]
        if blind:  # the bundled digit-rows model resets at each digit: silently never did
            which = "the source" if len(self.lanes) == 1 else \
                "source(s) " + ", ".join(map(str, blind))
            summary.notes.append(f"resets at each recording: {which} gave no recording "
                                 "(sequence) column, so the state was never reset at one")
        summary.dropped, summary.repaired, summary.state_resets = self._counts()
        if summary.written is not None:
            summary.found = Found.totals([lane.found for lane in self.lanes])
        if len(self.lanes) > 1:
            summary.streams = [lane.samples for lane in self.lanes]
            summary.stream_faults = [
                Counter({f"dropped {k}": v for k, v in lane.stream.stats.dropped.items()})
                + Counter({f"repaired {k}": v for k, v in lane.stream.stats.repaired.items()})
                + Counter({f"reset ({k})": v for k, v in lane.stream.stats.state_resets.items()})
                for lane in self.lanes]
            summary.one_call = self.group is not None
            summary.ticks = self.pushes
        if self.pushes:
            n = min(self.pushes, LATENCY_WINDOW)
            for name, ring in (("latency_us", self.ring), ("with_sink_us", self.sink_ring)):
                setattr(summary, name, _latency(ring[:n]))
        return summary


def _known(truth: str | None) -> str | None:
    """A sample's truth, None when its label is blank: nobody knows it (a logged walk's last
    step, whose next observation nobody saw), and it had been scored as a disagreement."""
    return truth if truth is None or str(truth).strip() else None


def _score_truth(summary: Summary, result, truth: str) -> None:
    """The primary head's score against the source's truth: agreement or squared error."""
    score = result.head.score_truth(result.values, truth)
    if score is None:
        return
    summary.truth_samples += 1
    summary.truth_metric = "agreement" if isinstance(score, bool) else "squared_error"
    if isinstance(score, bool):
        summary.truth_correct += score
    else:
        summary.truth_sq_error += score


def _score_end(summary: Summary, result, truth: str) -> None:
    """Agreement at the last sample of a labelled recording (agreement heads only)."""
    score = result.head.score_truth(result.values, truth)
    if isinstance(score, bool):
        summary.ends += 1
        summary.ends_correct += score


def _position(sample) -> str:
    """Where in its input a sample sits, as a warning's prefix."""
    where = sample.where()
    return f"{where}, " if where else ""


def _last_reason(stream) -> str:
    return getattr(stream, "_last_drop", None) or "bad_sample"
