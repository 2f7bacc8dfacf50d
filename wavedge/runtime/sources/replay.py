"""``replay:PATH[?rate=HZ|max&loop=N&limit=N]``: a recorded CSV or .npy file, paced at the
manifest's sample rate by default (``rate=max``: as fast as possible).

CSV: a header naming the model's channels (other columns ignored, except ``label`` and
``sequence`` which carry the truth), or no header and exactly one column per channel. .npy:
``[T, D]`` or ``[N, T, D]`` float. ``loop=0`` repeats forever.
"""

from __future__ import annotations

import builtins
import csv
from pathlib import Path

import numpy as np

from wavedge.runtime.sources import (Pacer, Sample, SourceError, header_columns, parse_fields,
                                     rate_param)


def read_recording(path: Path, channels: tuple[str, ...]) -> list[Sample]:
    """Every sample of a recorded CSV or .npy file (see the module doc), in order; rows that are
    not numbers or have the wrong number of fields come back marked (``Sample.problem``)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"no such file {path}")
    if path.suffix == ".npy":
        return _load_npy(path, channels)
    return _load_csv(path, channels)


def _load_npy(path: Path, channels: tuple[str, ...]) -> list[Sample]:
    with builtins.open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise SourceError(f"{path}: not a .npy file (no NUMPY header)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: not a readable .npy file ({exc})") from None
    sequences = None
    if arr.ndim == 3:
        sequences = np.repeat(np.arange(arr.shape[0]), arr.shape[1])
        arr = arr.reshape(-1, arr.shape[-1])
    if arr.ndim != 2 or arr.shape[1] != len(channels):
        raise SourceError(f"{path}: expected shape (T, {len(channels)}) or "
                          f"(N, T, {len(channels)}), got {arr.shape}")
    arr = arr.astype(np.float32)
    if sequences is None:
        return [Sample(row) for row in arr]
    return [Sample(row, sequence=int(seq)) for row, seq in zip(arr, sequences)]


def _load_csv(path: Path, channels: tuple[str, ...]) -> list[Sample]:
    rows = []
    try:
        with builtins.open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            first = next(reader, None)
            if first is None:
                raise SourceError(f"{path}: empty file")
            cols = header_columns(first, channels)
            names = [f.strip() for f in first] if cols is not None else []
            label_col = names.index("label") if "label" in names else None
            seq_col = names.index("sequence") if "sequence" in names else None
            body = reader if cols is not None else [first, *reader]
            for fields in body:
                if not fields:
                    continue
                rows.append(_row(fields, len(channels), cols, label_col, seq_col))
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not a UTF-8 text CSV file") from None
    return rows


def _row(fields, n: int, cols, label_col, seq_col) -> Sample:
    if cols is None:
        values, problem = parse_fields(fields, n)
    elif max(cols) < len(fields):
        values, problem = parse_fields([fields[c] for c in cols], n)
    else:
        values, problem = parse_fields(fields, n)
        problem = "wrong_shape"
    truth = fields[label_col] if label_col is not None and label_col < len(fields) else None
    seq = None
    if seq_col is not None and seq_col < len(fields):
        try:
            seq = int(fields[seq_col])
        except ValueError:
            pass
    return Sample(values, problem, truth, seq)


class ReplaySource:
    def __init__(self, url, manifest) -> None:
        url.check_params(("rate", "loop", "limit"))
        self.path = Path(url.path)
        if not self.path.is_file():
            raise SourceError(f"{url.text}: no such file {self.path}")
        self.channels = manifest.channels
        self.rate_hz = rate_param(url, manifest)
        self.loops = url.get("loop", 1, int)
        self.limit = url.get("limit", None, int)
        self._rows = read_recording(self.path, self.channels)

    def __iter__(self):
        pacer = Pacer(self.rate_hz)
        count, loop = 0, 0
        while self.loops == 0 or loop < self.loops:
            for sample in self._rows:
                if self.limit is not None and count >= self.limit:
                    return
                pacer.wait()
                yield sample
                count += 1
            loop += 1

    def close(self) -> None:
        pass


def open(url, manifest) -> ReplaySource:  # noqa: A001 - the scheme-module entry point
    return ReplaySource(url, manifest)
