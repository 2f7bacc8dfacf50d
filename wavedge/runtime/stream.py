"""``Stream``: one live input stream through a loaded model, the recurrent state owned here.

``push(sample)`` runs one sample through the step graph; ``push_chunk(samples)`` runs many,
through the chunk graph for every whole chunk and the step graph for the rest; ``reset()``
returns the state to its reset value. Samples are raw sensor values: the graphs normalise them
(the manifest's per-channel mean and std are part of each graph).

Bad samples (wrong length or type, a non-numeric field, NaN or inf) follow the stream's policy
and are counted in ``stats``:

- ``reject``: the sample is not fed to the model; ``push`` raises ``InputError`` saying why.
- ``hold``: bad values are replaced by the last accepted sample's (a whole wrong-length sample
  by the last sample); before any sample was accepted, by the channel means.
- ``zero``: bad values are replaced by 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from wavedge.errors import InputError
from wavedge.runtime.model import Model, softmax

POLICIES = ("reject", "hold", "zero")
_F32 = np.dtype(np.float32)


@dataclass
class StreamStats:
    """Counts since the stream was made (``reset()`` keeps them)."""

    samples: int = 0  # samples fed to the model
    dropped: Counter = field(default_factory=Counter)  # by reason, policy 'reject'
    repaired: Counter = field(default_factory=Counter)  # by reason, policies 'hold' and 'zero'


class Result:
    """The model's answer to one sample: ``logits`` and, lazily, class, label and score."""

    __slots__ = ("step", "logits", "_labels")

    def __init__(self, step: int, logits: np.ndarray, labels: tuple[str, ...]) -> None:
        self.step, self.logits, self._labels = step, logits, labels

    @property
    def class_id(self) -> int:
        return int(self.logits.argmax())

    @property
    def label(self) -> str:
        return self._labels[self.class_id] if self._labels else str(self.class_id)

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def score(self) -> float:
        """Softmax probability of the predicted class."""
        return float(self.probabilities[self.class_id])

    def __repr__(self) -> str:
        return f"Result(step={self.step}, label={self.label!r}, score={self.score:.3f})"


class Results:
    """Answers to a chunk of samples: ``logits [N, O]`` and the step index of each row."""

    def __init__(self, steps: np.ndarray, logits: np.ndarray, labels: tuple[str, ...]) -> None:
        self.steps, self.logits, self._labels = steps, logits, labels

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, i: int) -> Result:
        return Result(int(self.steps[i]), self.logits[i], self._labels)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def class_ids(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)

    @property
    def labels(self) -> list[str]:
        return [self._labels[i] if self._labels else str(i) for i in self.class_ids]


class Stream:
    """One stream's state over a shared ``Model``. Not thread-safe: one stream per thread."""

    def __init__(self, model: Model, policy: str = "reject") -> None:
        if policy not in POLICIES:
            raise InputError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        m = model.manifest
        self.model, self.policy = model, policy
        self.labels = m.labels
        self.channels = m.input_size
        self._shape = (self.channels,)
        self._mean = np.asarray(m.mean, np.float32)
        self._reset_values = [s.reset_value for s in m.state]
        self._step = model.step_graph.runner()
        self._chunk = model.chunk_graph.runner() if model.chunk_graph is not None else None
        self._k = model.chunk_samples
        self._x = self._step.x.reshape(-1)  # a view on the step graph's bound input
        self.stats = StreamStats()
        self._last_drop: str | None = None
        self.steps = 0  # index of the next sample
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Return the state to its reset value (the counters and step index keep counting)."""
        for buf, value in zip(self._step.state, self._reset_values):
            buf.fill(value)
        self._x[...] = self._mean  # what 'hold' repeats before any sample was accepted

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the current state, one array per manifest state entry (batch axis 1)."""
        return tuple(s.copy() for s in self._step.state)

    @state.setter
    def state(self, values) -> None:
        for buf, v in zip(self._step.state, values):
            v = np.asarray(v, np.float32)
            if v.shape != buf.shape:
                raise InputError(f"state: expected shape {buf.shape}, got {v.shape}")
            buf[...] = v

    # -- one sample --------------------------------------------------------------------------
    def push(self, sample, problem: str | None = None) -> Result:
        """Run one raw sample (``D`` numbers) and return the model's answer.

        ``problem`` lets a source report a fault it already found (e.g. ``not_numeric``), so the
        policy counts it under that reason. Raises ``InputError`` when the policy is 'reject'
        and the sample is bad; the state is then unchanged.
        """
        if (problem is None and type(sample) is np.ndarray and sample.dtype is _F32
                and sample.shape == self._shape and math.isfinite(sum(sample.tolist()))):
            # the common case, checked in plain Python floats (a numpy reduction over six
            # values costs more than the rest of the push)
            self._x[...] = sample
        else:
            self._x[...] = self._accept(sample, problem)
        y = self._step.run()
        step = self.steps
        self.steps += 1
        self.stats.samples += 1
        return Result(step, y[0], self.labels)

    def _accept(self, sample, problem: str | None) -> np.ndarray:
        if problem is None:
            try:
                x = np.asarray(sample, dtype=np.float32)
            except (TypeError, ValueError):
                return self._bad("not_numeric", None, f"sample is not numeric: {sample!r:.60}")
            if x.shape not in (self._shape, (1, self.channels)):
                return self._bad("wrong_shape", None, f"sample: expected {self.channels} "
                                 f"values, shape ({self.channels},), got shape {x.shape}")
            x = x.reshape(self.channels)
            finite = np.isfinite(x)
            if finite.all():
                return x
            return self._bad("non_finite", (x, finite), f"sample has NaN/inf in channel(s) "
                             f"{np.flatnonzero(~finite).tolist()}")
        x = np.asarray(sample, dtype=np.float32).reshape(-1)
        usable = (x, np.isfinite(x)) if x.size == self.channels else None
        return self._bad(problem, usable, f"sample rejected by the source: {problem}")

    def _bad(self, reason: str, usable, message: str) -> np.ndarray:
        if self.policy == "reject":
            self.stats.dropped[reason] += 1
            self._last_drop = reason
            raise InputError(f"step {self.steps}: {message}")
        self.stats.repaired[reason] += 1
        # the step graph's input buffer still holds the last accepted sample
        fill = self._x.copy() if self.policy == "hold" else np.zeros(self.channels, np.float32)
        if usable is None:
            return fill.copy()
        x, finite = usable
        return np.where(finite, x, fill).astype(np.float32)

    # -- many samples ------------------------------------------------------------------------
    def push_chunk(self, samples) -> Results:
        """Run ``samples`` (``[N, D]`` raw) in order; returns ``Results`` for the samples fed.

        Whole chunks go through the chunk graph (when the model has one), the rest one by one.
        Bad rows follow the policy; with 'reject' they are dropped and counted (the good rows
        still run, in order) rather than raising, so a bad row never costs the good ones.
        """
        try:
            x = np.asarray(samples, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("push_chunk: samples are not numeric") from None
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise InputError(f"push_chunk: expected shape (N, {self.channels}), got {x.shape}")
        xn = self._filter_rows(x)
        n, out = len(xn), np.empty((len(xn), self.model.manifest.output_size), np.float32)
        i = 0
        step, chunk = self._step, self._chunk
        if chunk is not None and n >= self._k:
            for dst, src in zip(chunk.state, step.state):
                np.copyto(dst, src)
            while n - i >= self._k:
                chunk.x[0] = xn[i:i + self._k]
                out[i:i + self._k] = chunk.run()[0]
                i += self._k
            for dst, src in zip(step.state, chunk.state):
                np.copyto(dst, src)
        for j in range(i, n):
            self._x[...] = xn[j]
            out[j] = step.run()[0]
        if n:
            self._x[...] = xn[-1]  # the last accepted sample, kept for 'hold'
        steps = np.arange(self.steps, self.steps + n)
        self.steps += n
        self.stats.samples += n
        return Results(steps, out, self.labels)

    def _filter_rows(self, x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        bad = ~finite.all(axis=1)
        if not bad.any():
            return x
        if self.policy == "reject":
            self.stats.dropped["non_finite"] += int(bad.sum())
            return x[~bad]
        self.stats.repaired["non_finite"] += int(bad.sum())
        x = x.copy()
        last = self._x
        for r in np.flatnonzero(bad):  # rows in order, so 'hold' carries the last good values
            if self.policy == "hold":
                if r > 0:
                    last = x[r - 1]
                x[r] = np.where(finite[r], x[r], last)
            else:
                x[r] = np.where(finite[r], x[r], 0.0)
        return x
