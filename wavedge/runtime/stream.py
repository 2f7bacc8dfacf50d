"""``Stream``: one live input stream through a loaded model, the recurrent state owned here.

``push(sample)`` runs one sample through the step graph; ``push_chunk(samples)`` runs many,
through the chunk graph for every whole chunk and the step graph for the rest; ``reset()``
returns the state to its reset value. A sample is the model's one input (an array of its
shape), or, for a model with several inputs, a mapping of input name to value (or a tuple in
signature order). Samples are raw: the graphs normalise them where the signature says so.
What comes back is a ``Result`` whose fields are the model's output heads
(``wavedge.runtime.heads``): a class and score, a Gaussian mean and variance, top tokens...

Bad samples follow the stream's policy and are counted in ``stats``: for float inputs a
wrong length or type, a non-numeric field, NaN or inf; for integer inputs a value outside the
declared range:

- ``reject``: the sample is not fed to the model; ``push`` raises ``InputError`` saying why.
- ``hold``: bad values are replaced by the last accepted sample's (a whole wrong-length sample
  by the last sample); before any sample was accepted, by the channel means (0 for integers).
- ``zero``: bad values are replaced by 0.

A model with a ``noise`` input (a stochastic network's standard normal draws,
``wavedge.signature``) is fed it by the stream: zeros (``noise="zero"``, the default: the
deterministic mean network) or draws from a generator seeded by ``seed`` (``noise="sample"``,
one stochastic pass; the same seed gives the same stream, and ``push_chunk`` draws what the
same samples pushed one by one would). A sample may also carry it, by name, to replay noise.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from wavedge.errors import InputError, check_count
from wavedge.recordings import F32_MAX
from wavedge.runtime import accel
from wavedge.runtime.heads import ClassHead, GaussianHead, Head, heads_for, softmax
from wavedge.runtime.model import Model

POLICIES = ("reject", "hold", "zero")
NOISE = ("zero", "sample")  # how a stream fills a model's noise inputs
# how often a stream compares its float state with the manifest's limit: two reductions over
# the bundled model's 1,024 state values cost 3 us, a third of a LiteRT push, so every 32nd
# (a non-finite state is caught at once, by its output)
STATE_CHECK_EVERY = 32
_F32 = np.dtype(np.float32)
_MAX, _MIN, _SUM = np.maximum.reduce, np.minimum.reduce, np.add.reduce


def all_finite(y: np.ndarray) -> bool:
    """Every value finite, by one sum: a NaN or inf makes it non-finite, and float32 values
    cannot overflow a float64 sum (a float32 sum of huge finite values could, with a warning).
    A float32 array in C where the fast path is built (0.2 us against 3 us for a chunk's 128
    outputs); up to 64 values as Python floats (0.5 us for 32, against 1.0 for numpy's
    magnitude test)."""
    fast = accel.module()
    if fast is not None and (ok := fast.finite(y)) is not None:
        return ok
    if y.size <= 64:
        return math.isfinite(sum(y.ravel().tolist()))
    return math.isfinite(_SUM(y, axis=None, dtype=np.float64))


def one_number(value) -> int | float | None:
    """The number in ``value`` when it is a one-value sample as the checks accept it (a list
    or tuple of one Python number, a 1-D array of one), else None (the full check then says
    what is wrong, or converts what it can)."""
    if type(value) is np.ndarray:
        v = value.item() if value.shape == (1,) else None
    elif type(value) in (list, tuple) and len(value) == 1:
        v = value[0]
    else:
        return None
    return v if type(v) in (int, float) else None


def _not_array(rows) -> str:
    lengths = unequal_lengths(rows)
    if lengths is None:
        return "not numeric"
    odd = next(i for i, n in enumerate(lengths) if n != lengths[0])
    return (f"its samples differ in length (sample 0: {lengths[0]} values, sample {odd}: "
            f"{lengths[odd]}); push a bad sample alone to have it counted under the policy")


def unequal_lengths(rows) -> list[int] | None:
    """The lengths of ``rows`` when they differ (which numpy calls an inhomogeneous shape,
    and a chunk of them had been called not numeric), else None."""
    try:
        lengths = [len(r) for r in rows]
    except TypeError:
        return None
    return lengths if len(set(lengths)) > 1 else None


def within(a: np.ndarray, bound: float) -> bool:
    """Every value of ``a`` inside [-bound, bound] (a NaN is not): in C for a float32 array
    where the fast path is built (two numpy reductions over the bundled model's 1,024 state
    values cost 3 us)."""
    fast = accel.module()
    if fast is not None and (ok := fast.within(a, bound)) is not None:
        return ok
    if not a.size:  # an empty chunk (a board's list with nothing in it): numpy has no max
        return True
    return bool(_MAX(a, axis=None) <= bound and -bound <= _MIN(a, axis=None))


def ball(bounds) -> float:
    """The radius of the ball about 0 inside every channel's ``(low, high)`` range (-1 when
    some range leaves 0 out): a sample inside it needs no per-channel comparison."""
    low, high = bounds
    if not all(lo < 0 < hi for lo, hi in zip(low, high)):
        return -1.0
    return float(min(min(-lo, hi) for lo, hi in zip(low, high)))


def past_limit(a: np.ndarray, limit: float) -> bool:
    """Some value of ``a`` outside [-limit, limit] (or NaN)."""
    return not within(a, limit)


def state_limits(sig, guards: bool) -> list[tuple[int, float]]:
    """(index, limit) of each state with a declared limit, when the guards are on."""
    return [(k, s.limit) for k, s in enumerate(sig.state) if s.limit and guards]


@dataclass(slots=True)  # slots: the C push writes samples in place (wavedge.runtime._fast)
class StreamStats:
    """Counts since the stream was made (``reset()`` keeps them)."""

    samples: int = 0  # samples fed to the model
    dropped: Counter = field(default_factory=Counter)  # by reason, policy 'reject'
    repaired: Counter = field(default_factory=Counter)  # by reason, policies 'hold' and 'zero'
    state_resets: Counter = field(default_factory=Counter)  # non_finite, exploding


class Result:
    """The model's answer to one sample: ``values`` (one array per output, signature order)
    read through the model's heads. ``record()`` is what sinks write; the primary head's
    fields are properties (``label``, ``score`` ... for class scores; ``mean``, ``variance``
    for a Gaussian)."""

    __slots__ = ("step", "values", "_heads")

    def __init__(self, step: int, values: list[np.ndarray], heads: list[Head]) -> None:
        self.step, self.values, self._heads = step, values, heads

    @property
    def head(self) -> Head:
        return self._heads[0]

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """Every output by name."""
        return dict(zip(self.head.output_names, self.values))

    def record(self) -> dict:
        """Every head's fields: the primary head's at the top level, the others' under their
        output names."""
        out = {"step": self.step, **self.head.record(self.values)}
        for h in self._heads[1:]:
            rec = h.record(self.values)
            out[h.name] = rec[h.name] if list(rec) == [h.name] else rec
        return out

    def text(self) -> str:
        return "  ".join(h.text(self.values) for h in self._heads)

    def _class(self) -> ClassHead:
        return _class_head(self.head)

    @property
    def logits(self) -> np.ndarray:
        return self.values[self._class().reads[0]]

    @property
    def class_id(self) -> int:
        return self._class().class_id(self.values)

    @property
    def label(self) -> str:
        return self._class().label(self.values)

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def score(self) -> float:
        """Softmax probability of the predicted class."""
        return self._class().score(self.values)

    @property
    def mean(self) -> np.ndarray:
        return self.values[self.head.reads[0]]

    @property
    def variance(self) -> np.ndarray:
        return self.values[_gaussian_head(self.head).reads[1]]

    def __repr__(self) -> str:
        return f"Result(step={self.step}, {self.text().strip()})"


def _class_head(head: Head) -> ClassHead:
    if not isinstance(head, ClassHead):
        raise AttributeError(f"the model's output {head.name!r} is {head.spec.kind}, not "
                             "class scores")
    return head


def _gaussian_head(head: Head) -> GaussianHead:
    if not isinstance(head, GaussianHead):
        raise AttributeError(f"the model's output {head.name!r} has no variance")
    return head


class Results:
    """Answers to a chunk of samples: ``values`` (one ``[N, *shape]`` array per output) and
    the step index of each row."""

    def __init__(self, steps: np.ndarray, values: list[np.ndarray], heads: list[Head]) -> None:
        self.steps, self.values, self._heads = steps, values, heads

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        if not len(self):
            return "Results(none)"
        return (f"Results({len(self)} samples, steps {self.steps[0]}..{self.steps[-1]}; last: "
                f"{self[-1].text().strip()})")

    def __getitem__(self, i: int) -> Result:
        return Result(int(self.steps[i]), [v[i] for v in self.values], self._heads)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """Every output by name, ``[N, *shape]``."""
        return dict(zip(self._heads[0].output_names, self.values))

    @property
    def logits(self) -> np.ndarray:
        """``[N, classes]``; a model whose output is not class scores has none (its argmax
        had been given as class ids and labels)."""
        return self.values[_class_head(self._heads[0]).reads[0]]

    @property
    def class_ids(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)

    @property
    def labels(self) -> list[str]:
        names = getattr(self._heads[0], "labels", ())
        return [names[i] if names else str(i) for i in self.class_ids]

    @property
    def mean(self) -> np.ndarray:
        """``[N, *shape]``: the primary output (a Gaussian's mean, a regression's values)."""
        return self.values[self._heads[0].reads[0]]

    @property
    def variance(self) -> np.ndarray:
        return self.values[_gaussian_head(self._heads[0]).reads[1]]


class Stream:
    """One stream's state over a shared ``Model``. Not thread-safe: one stream per thread."""

    def __init__(self, model: Model, policy: str = "reject", guards: bool = True,
                 noise: str = "zero", seed: int | None = None, runner=None) -> None:
        if policy not in POLICIES:
            raise InputError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        if noise not in NOISE:
            raise InputError(f"noise {noise!r} is not one of {', '.join(NOISE)}")
        if seed is not None:  # numpy's own refusal of -1 was a traceback from `run --seed -1`
            seed = check_count(seed, "seed", 0)
        sig = model.signature
        self.model, self.policy, self.signature = model, policy, sig
        self.heads = heads_for(sig)
        self.labels = model.manifest.labels
        self._specs = sig.inputs
        self._shapes = [tuple(i.shape) for i in sig.inputs]
        # a group member's runner is its row of the group's batched runner (wavedge.runtime.group)
        self._step = runner or model.step_graph.runner()
        self._chunk = model.chunk_graph.runner() \
            if model.chunk_graph is not None and runner is None else None
        self._k = model.chunk_samples
        # views on the step graph's bound input buffers (they hold the last accepted sample)
        self._xs = [b.reshape(i.shape) for b, i in zip(self._step.inputs, sig.inputs)]
        self._x = self._xs[0]
        self._fed = sig.fed
        self._row = len(sig.row)  # a line source's row: every fed input's values
        ends = np.cumsum([i.size if i.role != "noise" else 0 for i in sig.inputs])
        self._cuts = [slice(e - i.size, e) if i.role != "noise" else None
                      for e, i in zip(ends.tolist(), sig.inputs)]
        self._noise = [k for k, i in enumerate(sig.inputs) if i.role == "noise"]
        self._rng = np.random.default_rng(seed) if noise == "sample" and self._noise else None
        self._noise_given = False
        self._fast = (self._fed[:1] == sig.inputs[:1] and len(self._fed) == 1
                      and sig.inputs[0].dtype == "float32")
        self._shape = self._shapes[0]
        self._first_fill = [np.asarray(i.normalise.mean, i.dtype).reshape(i.shape)
                            if i.normalise is not None else np.zeros(i.shape, i.dtype)
                            for i in sig.inputs]
        # an integer input of one value (an id, an action) is checked on a Python number:
        # the numpy checks cost 7 us an input, a third of a TEM-t step on LiteRT
        self._ids = [i.range or (np.iinfo(i.dtype).min, np.iinfo(i.dtype).max + 1)
                     if i.dtype in ("int32", "int64") and i.size == 1 else None
                     for i in sig.inputs]
        self._bounds = [(np.asarray(i.bounds[0], _F32), np.asarray(i.bounds[1], _F32))
                        if i.bounds and guards else None for i in sig.inputs]
        self._guards = guards
        b = sig.inputs[0].bounds if guards else None
        # the push fast path checks bounds on Python floats (1-D inputs only): first whether
        # the sample lies in the ball about 0 that every channel's range contains (one
        # math.hypot, 0.17 us, which also rules out NaN and inf), only outside it per channel
        # (0.6 us more)
        self._fast_bounds = (list(b[0]), list(b[1]), ball(b)) \
            if b and len(self._shape) == 1 else None
        # push_chunk's whole-chunk test, per float input: the largest magnitude inside the
        # ball of its bounds (without bounds, the largest float32: finite), None for the rest
        self._chunk_balls = [(ball(i.bounds) if i.bounds and guards else F32_MAX)
                             if i.dtype == "float32" else None for i in sig.inputs]
        self._flat = len(self._shape) == 1
        self._fast = self._fast and (b is None or self._fast_bounds is not None)
        self._limits = state_limits(sig, guards)
        out0 = sig.outputs[0].shape
        self._flat_small = len(out0) == 1 and int(np.prod(out0)) <= 64
        self._checked = 0
        self.stats = StreamStats()
        self._last_drop: str | None = None
        self.reset()
        if runner is None:
            self._accelerate()

    # the index of the next sample: a stream steps once per sample fed
    steps = property(lambda self: self.stats.samples)

    def __repr__(self) -> str:
        m = self.model
        noise = ", noise sampled" if self._rng is not None else ""
        return (f"{type(self).__name__}({self._name()}{m.manifest.name!r} on {m.backend} "
                f"{m.precision}, policy {self.policy}{noise}, {self.steps} "
                f"sample{'' if self.steps == 1 else 's'})")

    def _name(self) -> str:
        return ""

    @property
    def stats(self) -> StreamStats:
        return self._stats

    @stats.setter
    def stats(self, value: StreamStats) -> None:
        """New counters (the C push counts into the object it was made with: made again)."""
        self._stats = value
        if "push" in vars(self):
            self._accelerate()

    def _accelerate(self) -> None:
        """Where the C fast path is built (``wavedge.runtime.accel``), the guarded step, and
        ``push`` of a plain 1-D float32 sample, in C: push / the careful raw loop 1.43 -> 1.05x
        on LiteRT, 1.21 -> 0.97x on ONNX Runtime (the bundled model, ``make bench``,
        2026-12-02). The methods of this class stay the reference, and take whatever the C
        push hands them."""
        fast = accel.module()
        if fast is None or self.signature.outputs[0].dtype != "float32":
            return
        self._run_step = fast.Guard(self._step, self._step.run_row, self._poisoned,
                                    self._guards, self._limits, STATE_CHECK_EVERY)
        if self._fast and self._flat and self._rng is None:  # noise drawn: in Python
            low, high, radius = self._fast_bounds or (None, None, -1.0)
            self.push = fast.Push(Stream.push.__get__(self), self._run_step, low, high, radius,
                                  self._x, Result, self.heads, self.stats,
                                  self._refill_noise if self._noise else None)

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Return the state to its reset value (the counters and step index keep counting)."""
        self._reset_state()
        for x, fill in zip(self._xs, self._first_fill):
            x[...] = fill  # what 'hold' repeats before any sample was accepted

    def _reset_state(self) -> None:
        for buf, spec in zip(self._step.state, self.signature.state):
            buf[...] = spec.reset_array(1)

    def _over_limit(self, state: list | None = None) -> bool:
        return any(past_limit((state or self._step.state)[k], limit) for k, limit in self._limits)

    def _reset_if_past_limit(self) -> None:
        """After a chunk run again sample by sample: its state's limit, whatever the phase of
        the every-32-steps check (a group's members too: their state is their row)."""
        if self._limits and self._over_limit():
            self.stats.state_resets["exploding"] += 1
            self._reset_state()

    def _run_step(self) -> list[np.ndarray]:
        """One call of the step graph on its input buffers. A poisoned state (a non-finite
        output, or, every ``STATE_CHECK_EVERY`` steps, a state past its limit) is reset,
        counted, and the sample run again from reset; a sample that poisons even that is
        dropped (``InputError``), the state reset."""
        values = self._step.run_row()
        if not self._guards:
            return values
        self._checked = checked = self._checked + 1
        # the 1-D small case inline: a method call is a tenth of the guards' cost
        finite = math.isfinite(sum(values[0].tolist())) if self._flat_small \
            else all_finite(values[0])
        if finite and (checked % STATE_CHECK_EVERY or not self._limits):
            return values
        return self._poisoned(values, finite)

    def _poisoned(self, values: list[np.ndarray], finite: bool) -> list[np.ndarray]:
        """A step whose output is not finite, or whose state is due for its limit check:
        the values when the state is within its limit, else the sample run again from reset
        (``_run_step``)."""
        if finite and not self._over_limit():
            return values
        self.stats.state_resets["non_finite" if not finite else "exploding"] += 1
        self._reset_state()
        values = self._step.run_row()
        if all_finite(values[0]):
            return values
        self._reset_state()
        self.stats.dropped["non_finite_output"] += 1
        self._last_drop = "non_finite_output"
        raise InputError(f"step {self.steps}: the model's output is not finite even from "
                         "reset; sample dropped, state reset")

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the current state, one array per signature state (batch axis 1)."""
        return tuple(s.copy() for s in self._step.state)

    @state.setter
    def state(self, values) -> None:
        """Restore a snapshot: one array per state in signature order, or a mapping of state
        name to array (a mapping had been read as its names, a bare array as its rows)."""
        specs = self.signature.state
        names = ", ".join(s.name for s in specs)
        if isinstance(values, np.ndarray):
            raise InputError(f"state: give one array per state ({names}) in a tuple, or a "
                             "mapping by name, not one array; the state is unchanged")
        if isinstance(values, Mapping):
            if set(values) != {s.name for s in specs}:
                raise InputError(f"state: a mapping names the states {names}, got "
                                 f"{', '.join(map(str, values)) or 'none'}; the state is "
                                 "unchanged")
            values = [values[s.name] for s in specs]
        values = list(values)
        if len(values) != len(specs):
            raise InputError(f"state: expected {len(specs)} arrays ({names}), got "
                             f"{len(values)}")
        values = [np.asarray(v) for v in values]
        for buf, v, spec in zip(self._step.state, values, specs):
            if v.shape != buf.shape:
                raise InputError(f"state {spec.name!r}: expected shape {buf.shape}, "
                                 f"got {v.shape}; the state is unchanged")
            if v.dtype.kind not in "biuf":
                raise InputError(f"state {spec.name!r}: not numeric ({v.dtype}); "
                                 "the state is unchanged")
            # a non-finite state only poisons the next step; an int8 graph would even turn
            # NaN into whatever integer this platform's cast gives
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise InputError(f"state {spec.name!r}: not finite; the state is unchanged")
        for buf, v in zip(self._step.state, values):
            buf[...] = v.astype(buf.dtype)

    # -- one sample --------------------------------------------------------------------------
    def push(self, sample, problem: str | None = None) -> Result:
        """Run one raw sample and return the model's answer.

        ``problem`` lets a source report a fault it already found (e.g. ``not_numeric``), so the
        policy counts it under that reason. Raises ``InputError`` when the policy is 'reject'
        and the sample is bad; the state is then unchanged.
        """
        self._prepare(sample, problem)
        values = self._run_step()
        step = self.stats.samples
        self.stats.samples = step + 1
        return Result(step, values, self.heads)

    def _prepare(self, sample, problem: str | None) -> None:
        """Check ``sample`` under the policy and write it into the step graph's input
        buffers (raises ``InputError`` when it is rejected; the buffers are then unchanged)."""
        if (self._fast and problem is None and type(sample) is np.ndarray
                and sample.dtype is _F32 and sample.shape == self._shape
                and self._plain((sample if self._flat else sample.reshape(-1)).tolist())):
            # the common case, checked in plain Python floats (a numpy reduction over six
            # values costs more than the rest of the push)
            self._x[...] = sample
            if self._rng is not None or self._noise_given:
                self._refill_noise()
        else:
            values = self._split(sample)
            # only a noise input may be left out (the stream draws it); a sensor's None is a
            # missing sample, under the policy
            accepted = [self._draw(k) if v is None and k in self._noise
                        else self._accept(k, v, problem) for k, v in enumerate(values)]
            for x, v in zip(self._xs, accepted):
                x[...] = v
            # the buffers hold given noise: the next fast push must not reuse it
            self._given_noise(any(values[k] is not None for k in self._noise))

    def _given_noise(self, given: bool) -> None:
        """Whether the input buffers hold noise a sample carried (the next fast push, in
        Python or in C, refills them with the stream's own)."""
        self._noise_given = given
        if "push" in vars(self):  # the C push's copy of the flag
            self.push.stale = int(given)

    def _refill_noise(self) -> None:
        """The noise inputs' buffers filled with the stream's own noise for one sample (zeros,
        or draws); the C push calls it too, after a sample that carried its own. Both pushes'
        flags go down here, so neither refills a second time."""
        for k in self._noise:
            self._xs[k][...] = self._draw(k)
        self._given_noise(False)

    def _plain(self, vals: list) -> bool:
        """Finite and inside the input's bounds (when it has them)."""
        b = self._fast_bounds
        if b is None:
            return math.isfinite(sum(vals))
        if math.hypot(*vals) <= b[2]:
            return True
        return math.isfinite(sum(vals)) and all(map(operator.le, b[0], vals)) \
            and all(map(operator.le, vals, b[1]))

    def _draw(self, k: int, rows: int | None = None) -> np.ndarray:
        """Noise input ``k``'s values for one sample (or ``rows`` of them): zeros, or draws."""
        shape = self._shapes[k] if rows is None else (rows, *self._shapes[k])
        if self._rng is None:
            return np.zeros(shape, np.float32)
        return self._rng.standard_normal(shape, np.float32)

    def _split(self, sample) -> list:
        """The per-input values of one sample (a mapping by input name, a tuple, or the
        value; with one input, a mapping by channel name too); None for a noise input the
        sample does not carry (the stream fills it)."""
        specs, fed = self._specs, self._fed
        keyed = isinstance(sample, Mapping)
        if len(fed) == 1 and not keyed:
            return [sample if i is fed[0] else None for i in specs]
        if keyed and len(fed) == 1 and fed[0].name not in sample and fed[0].channels:
            return [self._by_channel(sample) if i is fed[0] else None for i in specs]
        if keyed:
            missing = [i.name for i in fed if i.name not in sample]
            if missing:
                self._wrong_shape(f"sample lacks input(s) {missing}")
            return [sample.get(i.name) for i in specs]
        if isinstance(sample, (tuple, list)) and len(sample) in (len(specs), len(fed)):
            given = dict(zip([i.name for i in (specs if len(sample) == len(specs) else fed)],
                             sample))
            return [given.get(i.name) for i in specs]
        if isinstance(sample, np.ndarray) and sample.shape == (self._row,):
            # a line source's row: the fed inputs' values in order (Signature.row)
            return [sample[cut] if cut is not None else None for cut in self._cuts]
        self._wrong_shape(f"the model takes {len(fed)} inputs "
                          f"({', '.join(i.name for i in fed)}): push a dict, a tuple, or a "
                          f"row of their {self._row} values")

    def _by_channel(self, sample: Mapping) -> list:
        """A sample keyed by channel name (a JSON object from a sensor), in channel order;
        other keys (a timestamp, say) are left out."""
        channels = self._fed[0].channels
        missing = [c for c in channels if c not in sample]
        if missing:
            self._wrong_shape(f"sample lacks channel(s) {missing} (a mapping names the "
                              f"channels {list(channels)}, or the input {self._fed[0].name!r})")
        return [sample[c] for c in channels]

    def _wrong_shape(self, message: str):
        self.stats.dropped["wrong_shape"] += 1
        self._last_drop = "wrong_shape"
        raise InputError(f"step {self.steps}: {message}")

    def _accept(self, k: int, value, problem: str | None) -> np.ndarray | int:
        ids = self._ids[k]
        if ids is not None and problem is None:
            v = one_number(value)
            if v is not None and ids[0] <= v < ids[1] and v == int(v):
                return int(v)  # NaN and inf fail the range and go to the full check
        spec, shape = self._specs[k], self._shapes[k]
        where = f"input {spec.name!r}: " if len(self._fed) > 1 else ""
        if value is None:
            return self._bad(k, problem or "not_numeric", None, f"{where}sample is missing "
                             "(None)")
        if problem is not None:
            x = np.asarray(value, dtype=np.float32).reshape(-1)
            usable = (x, np.isfinite(x)) if x.size == spec.size else None
            return self._bad(k, problem, usable, f"sample rejected by the source: {problem}")
        try:
            x = np.asarray(value, dtype=np.float64 if spec.dtype != "bool" else bool)
        except (TypeError, ValueError):
            return self._bad(k, "not_numeric", None, f"{where}sample is not numeric: "
                             f"{value!r:.60}")
        if x.shape not in (shape, (1, *shape)):
            return self._bad(k, "wrong_shape", None, f"{where}sample: expected "
                             f"{int(np.prod(shape))} values, shape {shape}, got shape {x.shape}")
        x = x.reshape(shape)
        if spec.dtype == "float32":
            finite = np.isfinite(x)
            ok = self._ok_values(spec, x, self._bounds[k])
            if ok.all():
                return x.astype(np.float32)
            if not finite.all():
                return self._bad(k, "non_finite", (x, ok), f"{where}sample has NaN/inf in "
                                 f"channel(s) {np.flatnonzero(~finite.reshape(-1)).tolist()}")
            return self._bad(k, "out_of_range", (x, ok), f"{where}value(s) "
                             f"{x[~ok].tolist()[:4]} in channel(s) "
                             f"{self._channel_names(spec, ~ok)} outside the range the model "
                             "accepts (the manifest's bounds)")
        if spec.dtype == "bool":
            return x
        low, high = spec.range or (np.iinfo(spec.dtype).min, np.iinfo(spec.dtype).max + 1)
        ok = np.isfinite(x) & (x == np.round(x)) & (x >= low) & (x < high)
        if ok.all():
            return x.astype(spec.dtype)
        return self._bad(k, "out_of_range", (np.where(ok, x, 0), ok), f"{where}value(s) "
                         f"{x[~ok].tolist()[:4]} outside [{low}, {high})")

    @staticmethod
    def _channel_names(spec, bad: np.ndarray) -> list:
        idx = np.flatnonzero(bad.reshape(-1, spec.shape[-1]).any(axis=0)).tolist()
        return [spec.channels[i] for i in idx] if spec.channels else idx

    def _bad(self, k: int, reason: str, usable, message: str) -> np.ndarray:
        if self.policy == "reject":
            self.stats.dropped[reason] += 1
            self._last_drop = reason
            raise InputError(f"step {self.steps}: {message}")
        self.stats.repaired[reason] += 1
        # the step graph's input buffer still holds the last accepted sample
        fill = self._xs[k].copy() if self.policy == "hold" else np.zeros_like(self._xs[k])
        if usable is None:
            return fill
        x, ok = usable
        return np.where(ok.reshape(fill.shape), x.reshape(fill.shape), fill).astype(fill.dtype)

    # -- many samples ------------------------------------------------------------------------
    def push_chunk(self, samples) -> Results:
        """Run ``samples`` (``[N, *shape]`` raw, or a mapping of input name to such arrays) in
        order; returns ``Results`` for the samples fed.

        Whole chunks go through the chunk graph (when the model has one), the rest one by one.
        Bad rows follow the policy; with 'reject' they are dropped and counted (the good rows
        still run, in order) rather than raising, so a bad row never costs the good ones.
        """
        xs = self._chunk_inputs(samples)
        if not self._clean(xs):
            xs = self._filter_rows(xs)
        n = len(next(x for x in xs if x is not None))
        # the buffers keep the last row below: given noise must not leak into the next push
        self._given_noise(any(xs[k] is not None for k in self._noise))
        xs = [x if x is not None else self._draw(k, n) for k, x in enumerate(xs)]
        outs = [np.empty((n, *o.shape), o.dtype) for o in self.signature.outputs]
        dropped: list[int] = []  # rows that poison the state even from reset
        i = 0
        step, chunk, k = self._step, self._chunk, self._k
        if chunk is not None and n >= k:
            for dst, src in zip(chunk.state, step.state):
                np.copyto(dst, src)
            while n - i >= k:
                for buf, x in zip(chunk.inputs, xs):
                    buf[0] = x[i:i + k]
                ys = chunk.run()
                # the state's limit once per chunk, as push checks it every 32 samples
                finite = all_finite(ys[0])
                if finite and not (self._limits and self._over_limit(chunk.state)):
                    for out, y in zip(outs, ys):
                        out[i:i + k] = y[0]
                    i += k
                    continue
                # a poisoned chunk: its rows again one by one from the state before it (the
                # runner keeps it: rewind), each checked as push checks it, and the limit at
                # its end
                chunk.rewind()
                for dst, src in zip(step.state, chunk.state):
                    np.copyto(dst, src)
                self._step_rows(xs, outs, dropped, i, i + k)
                self._reset_if_past_limit()
                for dst, src in zip(chunk.state, step.state):
                    np.copyto(dst, src)
                i += k
            for dst, src in zip(step.state, chunk.state):
                np.copyto(dst, src)
        self._step_rows(xs, outs, dropped, i, n)
        if n:
            for buf, x in zip(self._xs, xs):
                buf[...] = x[-1]  # the last accepted sample, kept for 'hold'
        if dropped:
            kept = np.ones(n, bool)
            kept[dropped] = False
            outs = [o[kept] for o in outs]
        m = n - len(dropped)
        steps = np.arange(self.steps, self.steps + m)
        self.stats.samples += m
        return Results(steps, outs, self.heads)

    def _step_rows(self, xs, outs, dropped: list, start: int, stop: int) -> None:
        for j in range(start, stop):
            for buf, x in zip(self._xs, xs):
                buf[...] = x[j]
            try:
                values = self._run_step()
            except InputError:
                dropped.append(j)
                continue
            for out, y in zip(outs, values):
                out[j] = y

    def _clean(self, xs: list) -> bool:
        """Every given input of the chunk is float, finite and inside its bounds, tested on
        the largest magnitude against the ball of the bounds (1 us, against 10 for the
        per-row filter that finds which rows are bad); False sends it to the filter."""
        for x, radius in zip(xs, self._chunk_balls):
            if x is None:
                continue
            # a magnitude, not a sum: a sum of huge finite values overflows, with a warning
            if radius is None or not within(x, radius):
                return False
        return True

    def _chunk_inputs(self, samples) -> list:
        """One ``[N, *shape]`` array per input, None for a noise input not given."""
        specs, fed = self._specs, self._fed
        if self._fast and type(samples) is np.ndarray and samples.dtype is _F32 \
                and samples.shape[1:] == self._shape and samples.ndim == len(self._shape) + 1:
            # the common case: the one sensor input as float32 already (4 us less per chunk)
            return [samples, *[None] * (len(specs) - 1)]
        if isinstance(samples, Mapping):
            missing = [i.name for i in fed if i.name not in samples]
            if missing:
                raise InputError(f"push_chunk: samples lack input(s) {missing}")
            raw = [samples.get(i.name) for i in specs]
        elif len(fed) == 1:
            raw = [samples if i is fed[0] else None for i in specs]
        else:
            raise InputError(f"push_chunk: the model takes {len(fed)} inputs "
                             f"({', '.join(i.name for i in fed)}): pass a dict of arrays")
        xs = []
        for spec, shape, r in zip(specs, self._shapes, raw):
            if r is None and spec.role == "noise":
                xs.append(None)  # the stream draws it
                continue
            if r is None:
                raise InputError(f"push_chunk: input {spec.name!r} is missing (None)")
            try:
                x = np.asarray(r, dtype=np.float32 if spec.dtype == "float32" else None)
            except (TypeError, ValueError):
                raise InputError(f"push_chunk: input {spec.name!r}: {_not_array(r)}") from None
            if x.shape == (0,):  # an empty list (a buffer with nothing in it yet): no samples
                x = x.reshape(0, *shape)
            if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
                which = f" for input {spec.name!r}" if len(specs) > 1 else ""
                raise InputError(f"push_chunk: expected shape (N, {', '.join(map(str, shape))})"
                                 f"{which}, got {x.shape}")
            xs.append(x)
        if len({len(x) for x in xs if x is not None}) != 1:
            raise InputError("push_chunk: inputs of different lengths "
                             f"{[len(x) for x in xs if x is not None]}")
        return xs

    def _filter_rows(self, xs: list) -> list:
        """The given inputs' rows under the policy (None, a noise input left to the stream,
        stays None)."""
        given = [k for k, x in enumerate(xs) if x is not None]
        if len(given) == len(xs):
            return self._filter_given(xs, self._specs, self._bounds, self._xs)
        kept = self._filter_given([xs[k] for k in given], [self._specs[k] for k in given],
                                  [self._bounds[k] for k in given], [self._xs[k] for k in given])
        out = [None] * len(xs)
        for k, x in zip(given, kept):
            out[k] = x
        return out

    def _filter_given(self, xs: list, specs: list, bounds: list, lasts: list) -> list:
        oks = [self._ok_values(spec, x, b) for spec, x, b in zip(specs, xs, bounds)]
        bad = np.zeros(len(xs[0]), bool)
        nonfinite = np.zeros(len(xs[0]), bool)
        for ok, x, spec in zip(oks, xs, specs):
            bad |= ~ok.reshape(len(ok), -1).all(axis=1)
            if spec.dtype == "float32":
                nonfinite |= ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not bad.any():
            return [x.astype(spec.dtype, copy=False) for spec, x in zip(specs, xs)]
        floats = all(s.dtype == "float32" for s in specs)
        counts = self.stats.dropped if self.policy == "reject" else self.stats.repaired
        counts["non_finite" if floats else "bad_value"] += int((bad & nonfinite).sum())
        counts["out_of_range"] += int((bad & ~nonfinite).sum())
        counts += Counter()  # drop zero counts
        if self.policy == "reject":
            return [x[~bad].astype(spec.dtype, copy=False) for spec, x in zip(specs, xs)]
        out = []
        for x, ok, last, spec in zip(xs, oks, lasts, specs):
            x = x.copy()
            for r in np.flatnonzero(bad):  # rows in order, so 'hold' carries the last good
                if self.policy == "hold":
                    if r > 0:
                        last = x[r - 1]
                    x[r] = np.where(ok[r], x[r], last)
                else:
                    x[r] = np.where(ok[r], x[r], 0)
            out.append(x.astype(spec.dtype))
        return out

    @staticmethod
    def _ok_values(spec, x: np.ndarray, bounds=None) -> np.ndarray:
        if spec.dtype == "float32":
            ok = np.isfinite(x)
            if bounds is not None:
                ok &= (x >= bounds[0]) & (x <= bounds[1])
            return ok
        if spec.dtype == "bool" or spec.range is None:
            return np.ones(x.shape, bool)
        return (x >= spec.range[0]) & (x < spec.range[1])
