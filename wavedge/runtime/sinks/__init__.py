"""Sinks: where results go. One module per URL scheme, each with ``open(url, manifest)``
returning an object with ``write(result, sample)`` and ``close()``."""

from __future__ import annotations

import sys
from pathlib import Path

from wavedge.errors import InputError


def open_output(path: str, what: str):
    """A text file for writing (``-`` = stdout); parent folders are created."""
    if path in ("", "-"):
        return sys.stdout, False
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return open(p, "w", encoding="utf-8", newline=""), True
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write ({exc.strerror})") from None


def record(result, sample) -> dict:
    """The fields every structured sink writes for one result: the step, each output head's
    fields (``wavedge.runtime.heads``), and the sample's ``time`` and ``truth`` when the
    source knows them."""
    row = result.record()
    if sample is not None and sample.time is not None:
        row["time"] = sample.time
    if sample is not None and sample.truth is not None:
        row["truth"] = sample.truth
    return row
