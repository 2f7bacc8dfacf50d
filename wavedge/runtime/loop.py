"""The streaming loop behind ``wavedge run``: source -> stream -> sink, with a summary.

Nothing in the loop ends it with a traceback: bad samples follow the stream's policy and are
counted (with a warning line on stderr for the first few), a source that ends stops the loop,
a source that vanishes for good ends it with its error in the summary, and Ctrl-C stops it
cleanly. Memory stays flat: latencies go into a fixed ring of the most recent samples.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from wavedge.errors import InputError, WavedgeError
from wavedge.resets import ResetPolicy, Resetter

LATENCY_WINDOW = 1 << 17  # percentiles over the most recent 131,072 samples
WARN_LIMIT = 5  # warning lines per reason before going quiet (all are still counted)


@dataclass
class Summary:
    samples: int = 0
    dropped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    latency_us: dict = field(default_factory=dict)
    seconds: float = 0.0
    truth_samples: int = 0
    truth_correct: int = 0  # agreement heads (class scores, tokens)
    truth_sq_error: float = 0.0  # squared-error heads (regression, Gaussian mean)
    truth_metric: str | None = None  # "agreement" or "squared_error", from the head
    ends: int = 0  # samples that closed a labelled sequence
    ends_correct: int = 0
    interrupted: bool = False
    error: str | None = None
    resets: int = 0  # state resets the policy made
    reset_policy: str = "state never reset"
    notes: list = field(default_factory=list)  # what the source did (resampling)

    def lines(self) -> list[str]:
        out = [f"samples: {self.samples} in {self.seconds:.2f} s"
               + (" (interrupted)" if self.interrupted else "")]
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        fixes = ", ".join(f"{k} {v}" for k, v in sorted(self.repaired.items())) or "none"
        out.append(f"dropped: {drops}; repaired: {fixes}")
        if self.latency_us:
            lat = self.latency_us
            out.append(f"latency per push: p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us, "
                       f"max {lat['max']:.1f} us")
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
        out += self.notes
        if self.error:
            out.append(f"stopped: {self.error}")
        return out

    @property
    def all_rejected(self) -> bool:
        """Samples came but not one was used: the input cannot be what the model takes."""
        return self.samples == 0 and sum(self.dropped.values()) > 0


def run(stream, source, sink, limit: int | None = None, warn=None,
        resets: ResetPolicy | None = None) -> Summary:
    """Feed ``source`` through ``stream`` into ``sink`` until the source ends, ``limit``
    samples were fed, or Ctrl-C; the state reset where ``resets`` says (before the sample
    that makes it due). Returns the summary; never raises for bad input."""
    warn = warn or (lambda msg: print(f"wavedge: warning: {msg}", file=sys.stderr))
    summary = Summary()
    resetter = Resetter(resets or ResetPolicy())
    summary.reset_policy = resetter.policy.describe()
    ring = np.zeros(LATENCY_WINDOW, np.int64)
    warned: Counter = Counter()
    prev = None  # the previous sample, to see where a labelled sequence ends
    prev_result = None
    clock = time.perf_counter_ns
    started = clock()
    complete = False  # the source ended by itself, so its last sample closes a recording
    try:
        for sample in source:
            if resetter.due(sample.sequence, sample.time if sample.time is not None
                            else time.monotonic()):
                stream.reset()
            t0 = clock()
            try:
                result = stream.push(sample.values, sample.problem)
            except InputError as exc:
                reason = _last_reason(stream)
                warned[reason] += 1
                if warned[reason] <= WARN_LIMIT:
                    warn(str(exc) + (" (further warnings of this kind suppressed)"
                                     if warned[reason] == WARN_LIMIT else ""))
                continue
            ring[summary.samples % LATENCY_WINDOW] = clock() - t0
            summary.samples += 1
            sink.write(result, sample)
            if sample.truth is not None:
                _score_truth(summary, result, sample.truth)
            if prev is not None and prev.sequence is not None and prev.truth is not None \
                    and sample.sequence != prev.sequence:
                _score_end(summary, prev_result, prev.truth)
            prev, prev_result = sample, result
            if limit is not None and summary.samples >= limit:
                break
        else:
            complete = True
    except KeyboardInterrupt:
        summary.interrupted = True
    except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly
        summary.interrupted = True
    except WavedgeError as exc:
        summary.error = str(exc)
    finally:
        source.close()
        try:
            sink.close()
        except BrokenPipeError:
            pass
    if complete and prev is not None and prev.sequence is not None and prev.truth is not None:
        _score_end(summary, prev_result, prev.truth)
    summary.seconds = (clock() - started) / 1e9
    summary.resets = resetter.resets
    summary.notes = list(getattr(source, "notes", list)())
    summary.dropped = Counter(stream.stats.dropped)
    summary.repaired = Counter(stream.stats.repaired)
    if summary.samples:
        lat = ring[:min(summary.samples, LATENCY_WINDOW)] / 1000.0
        summary.latency_us = {"p50": float(np.percentile(lat, 50)),
                              "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}
    return summary


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


def _last_reason(stream) -> str:
    return getattr(stream, "_last_drop", None) or "bad_sample"
