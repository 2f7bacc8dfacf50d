"""``StreamGroup``: many live streams stepped by one backend call.

A board with eight sensors runs one model on eight streams. Stepping eight ``Stream`` objects
round-robin costs eight backend calls per tick, and at this model size the call's fixed cost
dominates; a group runs the model's step graph of batch B (``wavedge export --batch B``) once
for all its streams. Each member is a ``Stream`` in its own right: its own state (its row of
the batched state), its own bad-sample policy and counters, its own noise, ``reset()`` and
``state``; members join (``add``) and leave (``remove``) at any time, up to B of them.

``push`` takes one sample per member (a mapping by key, or a sequence or array in the order of
``keys``) and returns ``GroupResults``: a ``Result`` per member that was stepped, and an
``InputError`` per member whose sample was rejected (its state unchanged, as ``Stream.push``
leaves it). A member left out of a push is not stepped. The guards are the stream's: a member
whose output is not finite (or, every ``STATE_CHECK_EVERY`` pushes, whose state passed its
limit) is reset and its sample run again from reset; one that poisons even that is dropped.

``push_chunk`` takes N samples for every member and runs whole chunks of them through the
chunk graph of the group's batch (one call per chunk for all members), the rest through
``push``; it returns ``GroupChunkResults`` (``results[key]`` is that member's ``Results``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from wavedge.errors import InputError
from wavedge.runtime import accel
from wavedge.runtime.stream import (_F32, STATE_CHECK_EVERY, Result, Results, Stream,
                                     StreamStats, all_finite, ball, past_limit, within,
                                     state_limits, unequal_lengths)

class _Row:
    """One member's row of the group's batched runner, behind the runner interface a
    ``Stream`` reads (input buffers and state, batch axis of 1)."""

    def __init__(self, runner, slot: int) -> None:
        self._runner, self._slot = runner, slot
        self.inputs = [b[slot:slot + 1] for b in runner.inputs]
        self.x = self.inputs[0]

    @property
    def state(self) -> list[np.ndarray]:
        return [s[self._slot:self._slot + 1] for s in self._runner.state]

    def run(self):  # pragma: no cover - a member is stepped by its group
        raise InputError("a group member is stepped by its group: StreamGroup.push")


class _Counts(StreamStats):
    """A member's stats, its sample count kept by its group (``StreamGroup._count``: a push
    of every member adds 1 to one integer; a Python increment per member cost 2 us of a 30 us
    tick)."""

    def __init__(self, group: "StreamGroup", slot: int) -> None:
        self._group, self._slot = group, slot
        super().__init__()

    @property
    def samples(self) -> int:
        return self._group._count(self._slot)

    @samples.setter
    def samples(self, value: int) -> None:
        self._group._set_count(self._slot, value)


class Member(Stream):
    """A stream of a ``StreamGroup`` (its ``key`` and ``slot``, the row it holds); push it
    through the group."""

    def __init__(self, group: "StreamGroup", key, slot: int, policy: str, guards: bool,
                 noise: str, seed: int | None) -> None:
        self.key, self.slot, self._group = key, slot, group
        super().__init__(group.model, policy, guards, noise, seed,
                         runner=_Row(group._runner, slot))
        self.stats = _Counts(group, slot)

    def _name(self) -> str:
        return f"{self.key!r} of a group, " if self._group else f"{self.key!r}, left its group, "

    def push(self, sample, problem: str | None = None):
        self._in_group()
        raise InputError(f"stream {self.key!r} belongs to a group: push it with "
                         "StreamGroup.push({key: sample}) or StreamGroup.push_chunk")

    push_chunk = push

    def reset(self) -> None:
        self._in_group()
        super().reset()

    def _set_state(self, values) -> None:
        self._in_group()
        Stream.state.fset(self, values)

    state = property(Stream.state.fget, _set_state, doc=Stream.state.__doc__)

    def _leave(self) -> None:
        """Its group took it out (``StreamGroup.remove``): the row is the next member's, so
        the handle keeps a copy of its state and counters as they were and writes nothing
        (a reset through a kept handle had reset whichever member took the row over)."""
        self._step = _Left([s.copy() for s in self._step.state])
        s = self.stats
        self.stats = StreamStats(s.samples, s.dropped.copy(), s.repaired.copy(),
                                 s.state_resets.copy())
        self._group = None

    def _in_group(self) -> None:
        if self._group is None:
            raise InputError(f"stream {self.key!r} has left its group (StreamGroup.remove); "
                             "StreamGroup.add makes a new one")


class _Left:
    """A removed member's row: its state when it left."""

    def __init__(self, state: list[np.ndarray]) -> None:
        self.state = state


class _Steps:
    """Each slot's step index at one push: the group's bases then (which later pushes replace,
    never change in place) and its tick count."""

    __slots__ = ("base", "ticks")

    def __init__(self, base: np.ndarray, ticks: int) -> None:
        self.base, self.ticks = base, ticks

    def __getitem__(self, slot: int) -> int:
        return int(self.base[slot]) + self.ticks


class GroupResults:
    """One push's answers: ``results[key]`` (a ``Result``), ``errors`` (key -> the
    ``InputError`` of a member whose sample was dropped), ``values`` (one ``[B, *shape]``
    array per output, row = the member's slot)."""

    def __init__(self, values: list, stepped: dict, steps: "_Steps", errors: dict) -> None:
        self.values, self.errors = values, errors
        self._stepped, self._steps = stepped, steps  # key -> member; slot -> its step index

    def keys(self) -> list:
        return list(self._stepped)

    def __len__(self) -> int:
        return len(self._stepped)

    def __getitem__(self, key) -> Result:
        try:
            m = self._stepped[key]
        except KeyError:
            raise KeyError(f"stream {key!r} was not stepped by this push") from None
        return Result(int(self._steps[m.slot]), [v[m.slot] for v in self.values], m.heads)

    def items(self):
        return ((k, self[k]) for k in self._stepped)

    def __repr__(self) -> str:
        return f"GroupResults({_shown(self, lambda r: r.text().strip())})"

    def __iter__(self):
        return iter(self.keys())


class GroupChunkResults:
    """One ``push_chunk``'s answers: ``results[key]`` (that member's ``Results``, the samples
    it fed), ``errors`` (key -> the ``InputError`` of each of its samples dropped)."""

    def __init__(self, group: "StreamGroup") -> None:
        self._group = group
        self._parts: list = []  # (values [B, n, *shape] per output, slot -> first step, n)
        self.errors: dict = {}

    def add_chunk(self, values: list, steps: np.ndarray, n: int) -> None:
        self._parts.append((values, steps, n, None))

    def add(self, res: GroupResults) -> None:
        self._parts.append(([v[:, None] for v in res.values], res._steps, 1, res._stepped))
        for key, exc in res.errors.items():
            self.errors.setdefault(key, []).append(exc)

    def keys(self) -> list:
        return list(self._group.keys)

    def __getitem__(self, key) -> Results:
        m = self._group.member(key)
        parts = [(vals, steps, n) for vals, steps, n, stepped in self._parts
                 if stepped is None or key in stepped]
        outs = [np.concatenate([vals[j][m.slot] for vals, _, _ in parts])
                if parts else np.empty((0, *o.shape), o.dtype)
                for j, o in enumerate(self._group.model.signature.outputs)]
        steps = np.concatenate([np.arange(s[m.slot], s[m.slot] + n) for _, s, n in parts]) \
            if parts else np.empty(0, np.int64)
        return Results(steps, outs, m.heads)

    def items(self):
        return ((k, self[k]) for k in self.keys())

    def __repr__(self) -> str:
        return f"GroupChunkResults({_shown(self, lambda r: f'{len(r)} samples')})"


def _shown(results, what) -> str:
    """A group's results in a line: each member's by key, then the keys with dropped samples."""
    shown = "; ".join(f"{k!r}: {what(r)}" for k, r in results.items()) or "no stream stepped"
    bad = ", ".join(map(repr, results.errors))
    return shown + (f"; dropped: {bad}" if bad else "")


class StreamGroup:
    """Up to ``model.batch`` streams over one model's batched step graph (see the module)."""

    def __init__(self, model, guards: bool = True) -> None:
        self.model, self.guards = model, guards
        self.capacity = model.step_graph.batch
        self._runner = model.step_graph.runner()
        self._chunk = model.chunk_graph.runner() if model.chunk_graph is not None else None
        self._k = model.chunk_samples
        self._members: dict = {}
        self._by_slot: list[Member | None] = [None] * self.capacity
        sig = model.signature
        self._limits = state_limits(sig, guards)
        # the whole-batch fast path: one float input, checked in one numpy pass for all rows
        spec = sig.inputs[0]
        self._vector = len(sig.inputs) == 1 and spec.dtype == "float32"
        self._shape = tuple(spec.shape)
        b = spec.bounds if guards else None
        self._lo = np.asarray(b[0], _F32) if b else None
        self._hi = np.asarray(b[1], _F32) if b else None
        self._ball = ball(b) if b else -1.0
        self._pushes = 0
        # the whole tick's tests, looked up once (C where built; None from C: not a
        # contiguous float32 array, which the Python then tests)
        fast = accel.module()
        self._inside = fast.within if fast else within
        self._finite = fast.finite if fast else all_finite
        # each slot's samples fed (= its steps): _base[slot] + _ticks, where _ticks counts
        # the samples every member fed (a push or chunk of all of them: one int add); _base
        # is replaced, never changed in place, so results keep the one they were made with
        self._base = np.zeros(self.capacity, np.int64)
        self._ticks = 0
        self._order: list[Member] = []  # members by key order of joining
        self._layout()

    # -- members -----------------------------------------------------------------------------
    @property
    def keys(self) -> list:
        return [m.key for m in self._order]

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        m = self.model
        return (f"StreamGroup({len(self)} of {self.capacity} streams"
                f"{': ' + ', '.join(map(repr, self.keys)) if self._order else ''}; "
                f"{m.manifest.name!r} on {m.backend} {m.precision})")

    def member(self, key) -> Member:
        try:
            return self._members[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key, which no member has
            raise InputError(f"no stream {key!r} in this group "
                             f"(streams: {', '.join(map(str, self.keys)) or 'none'})") from None

    def add(self, key=None, policy: str = "reject", noise: str = "zero",
            seed: int | None = None) -> Member:
        """A new member from the reset state, under ``key`` (default: the lowest free
        integer); raises ``InputError`` when the group is full or the key is taken."""
        if len(self._order) == self.capacity:
            raise InputError(f"the group is full: its graphs step {self.capacity} streams per "
                             "call (export with --batch N for more)")
        if key is None:
            key = next(i for i in range(self.capacity + len(self._members) + 1)
                       if i not in self._members)
        try:
            hash(key)
        except TypeError:
            raise InputError(f"stream key {key!r}: a key is a name or a number (one that "
                             f"cannot change), not a {type(key).__name__}") from None
        if key in self._members:
            raise InputError(f"the group already has a stream {key!r}")
        slot = self._by_slot.index(None)
        m = Member(self, key, slot, policy, self.guards, noise, seed)
        self._members[key], self._by_slot[slot] = m, m
        self._order.append(m)
        self._layout()
        return m

    def remove(self, key) -> None:
        """Take a member out; its row is free for the next ``add``. A handle kept on it still
        reads its state and counters as they were; a push, reset or new state through it is
        refused."""
        m = self.member(key)
        del self._members[key]
        self._by_slot[m.slot] = None
        self._order.remove(m)
        self._layout()
        m._leave()

    def _layout(self) -> None:
        slots = [m.slot for m in self._order]
        # members in rows 0..n-1 in key order take plain slices; otherwise an index array
        self._rows = slice(0, len(slots)) if slots == list(range(len(slots))) \
            else np.asarray(slots, np.intp)
        self._all = {m.key: m for m in self._order}  # a full push's stepped (never mutated)

    def _count(self, slot: int) -> int:
        return int(self._base[slot]) + self._ticks

    def _set_count(self, slot: int, value: int) -> None:
        self._base = self._base.copy()  # copy on write: earlier results hold it
        self._base[slot] = value - self._ticks

    # -- pushing -----------------------------------------------------------------------------
    def push(self, samples, problems: dict | None = None) -> GroupResults:
        """One sample per member: a mapping ``{key: sample}`` (members left out are not
        stepped), or a sequence or ``[n, *shape]`` array in the order of ``keys``.
        ``problems`` (key -> a fault its source found, as ``Stream.push`` takes it) counts
        those under their reasons."""
        if not problems and self._vector:
            whole = self._whole(samples) if isinstance(samples, dict) else samples
            if self._good(whole, 1) and len(whole) == len(self._order):
                return self._push_batch(whole)  # the common tick, in as few calls as it takes
        if not isinstance(samples, dict) and isinstance(samples, Mapping):
            samples = dict(samples)  # by key like any mapping, never its keys taken as samples
        if problems:
            samples = samples if isinstance(samples, dict) else dict(zip(self.keys, samples))
        if isinstance(samples, dict):
            given = [(self.member(k), v) for k, v in samples.items()]
        else:
            if isinstance(samples, (str, bytes)) or not hasattr(samples, "__len__"):
                raise InputError(f"push: a tick is a mapping of key to sample, or one sample "
                                 f"per member in the order of keys, not {samples!r:.40}")
            if len(samples) != len(self._order):
                raise InputError(f"push: {len(samples)} samples for {len(self._order)} "
                                 "streams (a mapping of key to sample steps some of them)")
            given = list(zip(self._order, samples))
        stepped, errors = [], {}
        problems = problems or {}
        for m, sample in given:
            try:
                m._prepare(sample, problems.get(m.key))
            except InputError as exc:
                errors[m.key] = exc
                continue
            stepped.append(m)
        return self._step(stepped, errors)

    def push_chunk(self, samples) -> "GroupChunkResults":
        """N samples for every member: an ``[n, N, *shape]`` array (members in the order of
        ``keys``) or ``{key: [N, *shape]}`` naming every member. Whole chunks of good samples
        go through the chunk graph of the group's batch, one call for all members; anything
        else (a bad sample, a poisoned chunk, the rows after the last whole chunk, a model
        with several inputs) sample by sample through ``push``, each member's policy as
        there. A mapping may also give some members only, or counts that differ (sensors
        that deliver bursts at their own times): those go tick by tick through ``push``,
        each member through its own samples in order."""
        if isinstance(samples, Mapping) and not self._alike(samples):
            return self._push_bursts(samples)
        x = self._chunk_array(samples)
        n = x.shape[1]
        out = GroupChunkResults(self)
        i = 0
        if self._chunk is not None and n >= self._k and self._good(x, 2):
            i = self._run_chunks(x, out)
        for t in range(i, n):
            out.add(self.push(x[:, t]))
        return out

    def _alike(self, samples: Mapping) -> bool:
        """Every member named, each with as many samples: one array for the chunk graph."""
        try:
            counts = {len(v) for v in samples.values()}
        except TypeError:  # not sequences: the burst path names the member
            return False
        return len(counts) == 1 and set(samples) == set(self._members)

    def _push_bursts(self, samples: Mapping) -> "GroupChunkResults":
        """Some members' samples, or unequal counts, tick by tick (the chunk graph steps
        every row); each burst is checked before any member steps."""
        bursts = {self.member(k).key: self._burst(k, v) for k, v in samples.items()}
        out = GroupChunkResults(self)
        for t in range(max(map(len, bursts.values()), default=0)):
            out.add(self.push({k: x[t] for k, x in bursts.items() if t < len(x)}))
        return out

    def _burst(self, key, samples) -> np.ndarray:
        """One member's samples as an ``[N, *shape]`` array, or the InputError naming it."""
        try:
            x = np.asarray(samples, np.float32) if self._vector else np.asarray(samples)
        except (TypeError, ValueError):
            x = None
        if x is not None and x.size == 0:  # a sensor that delivered nothing this time
            return x.reshape(0, *self._shape)
        if x is None or x.ndim < 1 or (self._vector and x.shape[1:] != self._shape):
            got = f"got shape {x.shape}" if x is not None else "not numeric"
            raise InputError(f"push_chunk: stream {key!r}: expected [N samples, "
                             f"{', '.join(map(str, self._shape))}], {got}")
        return x

    def _chunk_array(self, samples) -> np.ndarray:
        if isinstance(samples, Mapping):
            samples = [samples[k] for k in self.keys]
        try:
            x = np.asarray(samples, np.float32) if self._vector else np.asarray(samples)
        except (TypeError, ValueError):  # numpy's "inhomogeneous shape" too
            raise InputError(f"push_chunk: {self._unlike(samples)}") from None
        if x.shape == (len(self._order), 0):  # every member's buffer empty: no samples
            x = x.reshape(len(x), 0, *self._shape)
        if x.ndim < 2 or len(x) != len(self._order) or \
                (self._vector and x.shape[2:] != self._shape):  # else every sample dropped
            raise InputError(f"push_chunk: expected [{len(self._order)} streams, N samples, "
                             f"{', '.join(map(str, self._shape))}], got shape {x.shape}")
        return x

    def _unlike(self, samples) -> str:
        """Why ``samples`` make no array: members given unequal counts, or not numbers."""
        counts = unequal_lengths(samples)
        if counts is None:
            return "the samples are not numeric"
        given = ", ".join(f"{k!r} {n}" for k, n in zip(self.keys, counts))
        return (f"the members' sample counts differ ({given}); give each the same N by key "
                "order, or a mapping of key to samples")

    def _run_chunks(self, x: np.ndarray, out: "GroupChunkResults") -> int:
        """The whole chunks of ``x`` through the chunk graph; returns the rows done."""
        step, chunk, k, rows = self._runner, self._chunk, self._k, self._rows
        for dst, src in zip(chunk.state, step.state):
            np.copyto(dst, src)
        i = 0
        while x.shape[1] - i >= k:
            chunk.x[rows] = x[:, i:i + k]
            ys = chunk.run()
            if self.guards and not (all_finite(ys[0][rows]) and self._within(chunk.state)):
                # a poisoned chunk: its samples again one by one from the state before it
                # (the runner keeps it: rewind), each checked as push checks it, and the
                # limit at its end
                chunk.rewind()
                for dst, src in zip(step.state, chunk.state):
                    np.copyto(dst, src)
                for t in range(i, i + k):
                    out.add(self.push(x[:, t]))
                for m in self._order:
                    m._reset_if_past_limit()
                for dst, src in zip(chunk.state, step.state):
                    np.copyto(dst, src)
            else:
                out.add_chunk(ys, self._base + self._ticks, k)
                self._ticks += k
            i += k
        for dst, src in zip(step.state, chunk.state):
            np.copyto(dst, src)
        self._runner.x[rows] = x[:, i - 1]  # the last sample, kept for 'hold'
        return i

    def _push_batch(self, samples: np.ndarray) -> GroupResults:
        """Every member's good sample (``_good``) in one array: one copy, one call, one
        finiteness test (the full ``_step`` when the state's limit is due or a row is not
        finite). The group's Python per tick measured 6.7 us through ``_step``."""
        runner = self._runner
        runner.x[self._rows] = samples
        if not self.guards or self._pushes % STATE_CHECK_EVERY == 0:
            return self._step(self._order, {})
        values = runner.run()
        if not self._finite(values[0][self._rows]):
            return self._step(self._order, {}, values)
        return self._all_stepped(values, {})

    def _whole(self, samples: dict):
        """A mapping naming every member in the order of ``keys`` as one ``[n, *shape]``
        array, which the whole tick's path takes (``wavedge run`` gives its ticks by key: 8
        members 55.6 -> 35.8 us a tick on ONNX Runtime, ``make bench-sources``); None when it
        is anything else."""
        if len(samples) != len(self._order) or any(
                k != m.key for k, m in zip(samples, self._order)):
            return None
        try:
            return np.stack(list(samples.values()))
        except (ValueError, TypeError):  # ragged, or not arrays: the per-member path says
            return None

    def _within(self, state: list) -> bool:
        """Every member's row of every limited state inside its limit."""
        return not any(past_limit(state[k][self._rows], limit) for k, limit in self._limits)

    def _good(self, samples, lead: int) -> bool:
        """A float32 array of ``lead`` leading axes and then the input's shape, every value
        finite and inside the bounds."""
        if type(samples) is not np.ndarray or samples.dtype != _F32 \
                or samples.shape[lead:] != self._shape:
            return False
        # inside the ball about 0 that every channel's range holds: the largest magnitude (1.0
        # us for 8 x 6 values, against 2.5 for the per-channel comparisons; NaN fails it too)
        if not self._inside(samples, self._ball):
            if self._lo is not None:
                if not ((samples >= self._lo).all() and (samples <= self._hi).all()):
                    return False
            elif not np.isfinite(samples).all():
                return False
        return True

    def _step(self, stepped: list, errors: dict, values: list | None = None) -> GroupResults:
        """One call for the members in ``stepped`` (``self._order`` itself: all of them; its
        ``values`` when it has run); the others keep their state."""
        runner = self._runner
        full = stepped is self._order
        if not full:
            ids = set(map(id, stepped))
            skipped = [m.slot for m in self._order if id(m) not in ids]
            saved = [s[skipped].copy() for s in runner.state]
        if values is None:
            values = runner.run()
        if self.guards:
            values, stepped = self._guard(values, stepped, full, errors)
        if not full:  # members not stepped keep their state
            for s, v in zip(runner.state, saved):
                s[skipped] = v
        if stepped is self._order:
            return self._all_stepped(values, errors)
        steps = _Steps(self._base, self._ticks)
        self._base = self._base.copy()  # copy on write: earlier results hold it
        self._base[[m.slot for m in stepped]] += 1
        self._pushes += 1
        return GroupResults(values, {m.key: m for m in stepped}, steps, errors)

    def _all_stepped(self, values: list, errors: dict) -> GroupResults:
        """The results of a call in which every member stepped: one more tick for all."""
        steps = _Steps(self._base, self._ticks)
        self._ticks += 1
        self._pushes += 1
        return GroupResults(values, self._all, steps, errors)

    def _guard(self, values: list, stepped: list, full: bool,
               errors: dict) -> tuple[list, list]:
        """The outputs, poisoned rows rerun from reset, and the members that count as stepped
        (a new list when one was dropped)."""
        if not stepped:  # every sample rejected: nothing ran that counts
            return values, stepped
        rows = self._rows if full else [m.slot for m in stepped]
        y = values[0][rows]
        check_state = self._limits and self._pushes % STATE_CHECK_EVERY == 0
        # the common case in one sum (the exact per-row test only when it fails); an integer
        # output is always finite, but the state's limit is still checked on its ticks
        floats = y.dtype.kind == "f"
        if not check_state and (not floats or all_finite(y)):
            return values, stepped
        y = y.reshape(len(stepped), -1)
        bad = ~np.isfinite(y).all(axis=1) if floats else np.zeros(len(y), bool)
        exploding = np.zeros(len(bad), bool)
        if check_state:
            for k, limit in self._limits:
                s = self._runner.state[k][rows].reshape(len(stepped), -1)
                exploding |= ~((s <= limit) & (s >= -limit)).all(axis=1)
        poisoned = bad | exploding
        if not poisoned.any():
            return values, stepped
        return self._rerun(stepped, bad, poisoned, errors)

    def _rerun(self, stepped: list, bad, poisoned, errors: dict) -> tuple[list, list]:
        """Run the batch again from the state before, the poisoned members reset (the others'
        rows give what they gave the first time); a member poisoned even from reset is
        dropped."""
        self._runner.rewind()
        members = [m for m, p in zip(stepped, poisoned) if p]
        for m, b in zip(members, bad[poisoned]):
            m.stats.state_resets["non_finite" if b else "exploding"] += 1
            m._reset_state()
        values = self._runner.run()
        dropped = [m for m in members if not np.isfinite(values[0][m.slot]).all()]
        for m in dropped:
            m._reset_state()
            m.stats.dropped["non_finite_output"] += 1
            m._last_drop = "non_finite_output"
            errors[m.key] = InputError(f"stream {m.key!r} step {m.steps}: the model's output "
                                       "is not finite even from reset; sample dropped, state "
                                       "reset")
        if dropped:
            stepped = [m for m in stepped if m not in dropped]
        return values, stepped
