"""Sources: where samples come from. One module per URL scheme, each with ``open(url, manifest)``
returning an iterable of ``Sample`` with a ``close()``; see ``wavedge.runtime.urls``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wavedge.errors import WavedgeError


class SourceError(WavedgeError):
    """A source cannot be opened, or it vanished and did not come back."""


@dataclass
class Sample:
    """One raw sample. ``problem`` names a fault the source found (``not_numeric``,
    ``wrong_shape``); ``truth`` and ``sequence`` come from labelled recordings."""

    values: np.ndarray
    problem: str | None = None
    truth: str | None = None
    sequence: int | None = None


def parse_fields(fields: list[str], channels: int) -> tuple[np.ndarray, str | None]:
    """CSV fields -> float32 values; a field that is not a number becomes NaN and the sample is
    marked ``not_numeric``; the wrong number of fields marks it ``wrong_shape``."""
    values = np.empty(len(fields), np.float32)
    problem = None
    for i, f in enumerate(fields):
        try:
            values[i] = float(f)
        except ValueError:
            values[i] = np.nan
            problem = "not_numeric"
    if len(fields) != channels:
        problem = "wrong_shape"
    return values, problem


def header_columns(first: list[str], channels: tuple[str, ...],
                   strict: bool = True) -> list[int] | None:
    """Column index of each manifest channel when ``first`` is a header row naming them all;
    None when ``first`` is data. A non-numeric first row that does not name every channel
    raises ``SourceError`` when ``strict``, else it is data (a line cut mid-way on a serial
    port) and the caller counts it as not numeric."""
    try:
        [float(f) for f in first]
        return None
    except ValueError:
        pass
    names = [f.strip() for f in first]
    missing = [c for c in channels if c not in names]
    if missing and not strict:
        return None
    if missing:
        raise SourceError(f"CSV header {names} lacks channel(s) {missing} of the model "
                          f"(expects {list(channels)})")
    return [names.index(c) for c in channels]


def csv_samples(lines, channels: tuple[str, ...], strict_header: bool = True):
    """Samples from CSV text lines (one sample per line; blank lines skipped). The first line
    may be a header naming the model's channels (other columns are then ignored)."""
    cols, first = None, True
    for line in lines:
        fields = [f.strip() for f in line.strip().split(",")]
        if fields == [""]:
            continue
        if first:
            first = False
            cols = header_columns(fields, channels, strict=strict_header)
            if cols is not None:
                continue
        if cols is not None and max(cols) < len(fields):
            fields = [fields[c] for c in cols]
        values, problem = parse_fields(fields, len(channels))
        yield Sample(values, problem)


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
    rate = url.get("rate", kind=float)
    if not rate > 0:
        raise SourceError(f"{url.text}: rate must be positive or 'max', got {raw}")
    return rate
