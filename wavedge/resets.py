"""Reset policies: when a stream's state goes back to its reset value. No torch.

A recurrent model is only as good as the conditions it was trained and checked under: one
trained on recordings from reset can diverge on a stream that never resets (its state grows past
anything it saw), and one trained on recordings back to back needs no reset at all. So the
policy is part of the model directory (``manifest.json``'s ``reset``), written by export from
how the model was trained, used by export's parity and quality checks, and applied by
``wavedge run`` (``--reset`` overrides it):

- ``never``: the state carries on forever (the default, and what a live stream gets);
- ``recording``: at each recording boundary (a change of the source's sequence column);
- ``every:N``: every N samples;
- ``gap:S``: after more than S seconds between two samples (their timestamps, else their
  arrival), e.g. a sensor that went away.

Policies combine with commas: ``recording,gap:2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wavedge.errors import InputError


@dataclass(frozen=True)
class ResetPolicy:
    recording: bool = False
    every: int | None = None
    gap_s: float | None = None

    @classmethod
    def parse(cls, text: str, where: str = "reset policy") -> ResetPolicy:
        """``never`` or a comma-separated mix of ``recording``, ``every:N``, ``gap:S``."""
        recording, every, gap = False, None, None
        parts = list(dict.fromkeys(p.strip() for p in str(text).split(",")))
        kinds = [p.partition(":")[0] for p in parts]
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if "never" in parts and len(parts) > 1 or twice:
            why = f"{twice[0]} given twice" if twice else "never with another policy"
            raise InputError(f"{where}: {text!r} contradicts itself ({why})")
        for part in parts:
            name, _, value = part.partition(":")
            try:
                if part == "never":
                    continue
                if part == "recording":
                    recording = True
                elif name == "every" and int(value) >= 1:
                    every = int(value)
                elif name == "gap" and 0 < float(value) < math.inf:
                    gap = float(value)
                else:
                    raise ValueError(part)
            except ValueError:
                raise InputError(f"{where}: {part!r} is not a reset policy; expected never, "
                                 "recording, every:N (N >= 1) or gap:SECONDS (> 0), "
                                 "comma-separated") from None
        return cls(recording, every, gap)

    def text(self) -> str:
        parts = (["recording"] if self.recording else []) \
            + ([f"every:{self.every}"] if self.every else []) \
            + ([f"gap:{self.gap_s:g}"] if self.gap_s else [])
        return ",".join(parts) or "never"

    def describe(self) -> str:
        parts = (["at each recording boundary"] if self.recording else []) \
            + ([f"every {self.every} samples"] if self.every else []) \
            + ([f"after a gap of more than {self.gap_s:g} s"] if self.gap_s else [])
        return "state reset " + " and ".join(parts) if parts else "state never reset"

    def to_json(self) -> dict:
        return {"policy": self.text(), "description": self.describe()}

    @classmethod
    def from_json(cls, raw, where: str = "reset") -> ResetPolicy:
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or not isinstance(raw.get("policy"), str):
            raise InputError(f"{where}: expected an object with a 'policy' string")
        return cls.parse(raw["policy"], where)

    def pieces(self, lengths: list[int]):
        """Offline (recordings back to back, no time gaps): ``(recording, start, stop,
        reset_before)`` for each run of samples between resets, in order."""
        since = 0
        for i, n in enumerate(lengths):
            start = 0
            if self.recording and i > 0:
                since = 0
            reset = i > 0 and self.recording
            while start < n:
                if self.every and since >= self.every:
                    since, reset = 0, True
                stop = n if not self.every else min(n, start + self.every - since)
                yield i, start, stop, reset
                since += stop - start
                start, reset = stop, False


class Resetter:
    """Applies a policy to a live stream, one sample at a time: ``due(sequence, time_s)``
    says whether the state must be reset before this sample."""

    def __init__(self, policy: ResetPolicy) -> None:
        self.policy = policy
        self.count = 0  # samples since the last reset
        self.resets = 0
        self._sequence = None
        self._time = None

    @property
    def blind(self) -> bool:
        """Resetting at each recording, on a source that names none (no sequence column): a
        policy that never fires (a source gives a sequence with every sample or none)."""
        return self.policy.recording and self.count > 0 and self._sequence is None

    def due(self, sequence, time_s: float) -> bool:
        p = self.policy
        first = self.count == 0 and self.resets == 0 and self._time is None
        due = not first and (
            (p.recording and sequence != self._sequence)
            or (p.every is not None and self.count >= p.every)
            or (p.gap_s is not None and time_s - self._time > p.gap_s))
        self._sequence, self._time = sequence, time_s
        if due:
            self.count = 0
            self.resets += 1
        self.count += 1
        return due
