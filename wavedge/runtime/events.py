"""What a run writes of a classifier's results (``wavedge run --smooth N --on-change
--min-score P``; ``Events`` in the API), as streaming classifiers are deployed. A gesture or
activity model's class flickers between neighbouring samples, and a board that acts on it (a
relay, an LED, the microcontroller behind ``link:``, a dashboard over MQTT) wants the class when
it changes, held long enough to trust, not a message at every sample. TensorFlow's streaming
speech commands (``RecognizeCommands``: an averaging window and a detection threshold) and Edge
Impulse's continuous mode (a moving average of the results) do the same.

- ``smooth``: each result's class probabilities averaged over the last N results of its
  stream (fewer just after a reset). The result then reads as the average in every sink: its
  ``label`` and ``score`` are the averaged ones, its ``logits`` the log of the averaged
  probabilities (softmax gives the average back); a variance output is the sample's own.
- ``min_score``: a result is written only when its (averaged) score is at least P.
- ``on_change``: a result is written only when its class differs from the last one written
  for its stream; after a reset, the first is written once N results have been averaged.

Every result still counts in the run's summary and its agreement with truth, smoothed as
written: what a user tunes N on. A reset of the stream (``--reset``, the ``reset`` command)
starts its average and its last class anew.

The same keys on one sink's URL (``link:/dev/ttyACM0?smooth=20&on_change=1&min_score=0.8``,
``urls.open_sink``) choose what that sink alone is given (``Selected``): a file beside it may
keep every result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wavedge.errors import InputError, check_count
from wavedge.runtime.heads import ClassHead, heads_for, softmax
from wavedge.runtime.sinks import sink_kind
from wavedge.runtime.stream import Result

MAX_SMOOTH = 100_000  # samples averaged: past it a typo, not a window (a ring of as many rows)


@dataclass(frozen=True)
class Events:
    smooth: int = 1
    on_change: bool = False
    min_score: float = 0.0

    def check(self, signature, what: str = "--smooth, --on-change and --min-score") -> "Events":
        """Itself, or ``InputError`` for settings out of range or a model whose first output
        is not class scores (nothing to average or to change), naming them as ``what``."""
        check_count(self.smooth, "--smooth", 1, MAX_SMOOTH)
        if not 0.0 <= self.min_score <= 1.0:
            raise InputError(f"--min-score: a probability between 0 and 1, got "
                             f"{self.min_score:g}")
        head = heads_for(signature)[0]
        if self.active and not isinstance(head, ClassHead):
            raise InputError(f"{what}: for a model whose first output is class scores; "
                             f"{head.name} is {head.kind}")
        return self

    @property
    def active(self) -> bool:
        return self.smooth > 1 or self.on_change or self.min_score > 0.0

    def describe(self) -> str:
        return ", ".join(
            ([f"averaged over {self.smooth} samples"] if self.smooth > 1 else [])
            + (["on a change of class"] if self.on_change else [])
            + ([f"score at least {self.min_score:g}"] if self.min_score > 0 else []))

    def start(self) -> "StreamEvents":
        """The filter of one stream."""
        return StreamEvents(self)


class StreamEvents:
    """``Events`` over one stream's results: ``__call__(result)`` gives the result as it is
    written (averaged) and whether it is written."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self._ring: np.ndarray | None = None  # the last ``smooth`` results' probabilities
        self.reset()

    def reset(self) -> None:
        self._count, self._last = 0, None

    def __call__(self, result: Result) -> tuple[Result, bool]:
        ev, head = self.events, result.head
        self._count += 1
        if ev.smooth > 1:
            result = self._averaged(result, head.reads[0])
        top, score = head.top(result.values)
        if score < ev.min_score:
            return result, False
        if ev.on_change:
            if top == self._last or self._count < ev.smooth:
                return result, False
            self._last = top
        return result, True

    def _averaged(self, result: Result, at: int) -> Result:
        logits = result.values[at]
        p = softmax(np.asarray(logits, np.float64).reshape(-1))
        if self._ring is None:
            self._ring = np.empty((self.events.smooth, p.size))
        self._ring[(self._count - 1) % self.events.smooth] = p
        mean = self._ring[:min(self._count, self.events.smooth)].mean(axis=0)
        values = list(result.values)
        values[at] = np.log(np.maximum(mean, 1e-30)).astype(logits.dtype).reshape(logits.shape)
        return Result(result.step, values, result._heads)


class Found:
    """The written results of a stream against its source's truth, as streaming detectors are
    judged (a keyword spotter's hits, misses and false alarms over a long stream): each run
    of samples of one true class is a change to find; the first result written with that
    class inside it finds it, so many samples after its start; a result written with a
    class other than the truth's is false."""

    def __init__(self) -> None:
        self.changes = self.false = 0
        self.delays: list[int] = []  # samples from a change to the result that found it
        self._truth, self._since, self._found = None, 0, False

    def sample(self, truth: str) -> None:
        """A sample of the stream, with its truth (before its result is judged)."""
        if truth != self._truth:
            self._truth, self._since, self._found = truth, 0, False
            self.changes += 1
        else:
            self._since += 1

    def written(self, label: str) -> None:
        if label != self._truth:
            self.false += 1
        elif not self._found:
            self._found = True
            self.delays.append(self._since)

    @staticmethod
    def totals(all_found: list["Found"]) -> dict | None:
        """Every stream's counts together, or None where no truth came: runs of a true class,
        those found, the samples to find them (min, median, max) and the results written
        with another class."""
        changes = sum(f.changes for f in all_found)
        if not changes:
            return None
        delays = sorted(d for f in all_found for d in f.delays)
        return {"runs": changes, "found": len(delays),
                "delay_samples": {"min": delays[0], "median": delays[len(delays) // 2],
                                  "max": delays[-1]} if delays else None,
                "false": sum(f.false for f in all_found)}

    @staticmethod
    def line(totals: dict) -> str:
        """The summary's line of ``totals``."""
        d = totals["delay_samples"]
        after = f", {d['min']}-{d['max']} samples after (median {d['median']})" if d else ""
        return (f"written against truth: found {totals['found']} of {totals['runs']} runs of a "
                f"true class{after}; {totals['false']} written with another class")


SINK_PARAMS = ("smooth", "on_change", "min_score")  # any sink URL's: what it alone is given


def from_url(url, manifest) -> Events | None:
    """The ``Events`` a sink URL's keys ask for, or None where it gives none."""
    if not any(k in url.params for k in SINK_PARAMS):
        return None
    return Events(url.get("smooth", 1, int, (1, MAX_SMOOTH)),
                  bool(url.get("on_change", 0, int, (0, 1))),
                  url.get("min_score", 0.0, float, (0.0, 1.0))).check(
                      manifest.signature, f"{url.text}: smooth, on_change and min_score")


class Selected:
    """A sink given what ``events`` choose of each stream's results (its URL's keys); the
    loop's reset of a stream (``reset(stream)``) starts that stream's average anew."""

    def __init__(self, sink, events: Events, where: str) -> None:
        self.sink, self.events, self.where = sink, events, where
        self.kind = sink_kind(sink)  # a run of several sinks names its counters by it
        self._streams: dict = {}  # a sample's stream (None: the run's only one) -> its filter
        self.written = self.results = 0
        for name in ("inbox", "flush_due", "check_streams", "begin"):
            if hasattr(sink, name):
                setattr(self, name, getattr(sink, name))

    def write(self, result, sample) -> None:
        k = sample.stream if sample is not None else None
        chosen = self._streams.get(k) or self._streams.setdefault(k, self.events.start())
        self.results += 1
        result, write = chosen(result)
        if write:
            self.sink.write(result, sample)
            self.written += 1

    def counters(self) -> dict:
        """The sink's own, and the results it was given (a status line's, a ``stats``
        command's)."""
        return {**getattr(self.sink, "counters", dict)(), "written": self.written}

    def reset(self, stream=None) -> None:
        if stream in self._streams:
            self._streams[stream].reset()

    def notes(self) -> list[str]:
        return [*getattr(self.sink, "notes", list)(),
                f"sink {self.where}: written {self.written} of {self.results} results "
                f"({self.events.describe()})"]

    def close(self) -> None:
        self.sink.close()
