"""Recorded samples as tables: the one reader behind ``replay:``, ``stdin:``, ``serial:``,
``--calibration``, ``export --data`` and ``train --data``. No torch, no numpy beyond arrays.

A table is CSV text, one sample per row. Which column is what is decided once, by ``Columns``:

- the model's channels: by header name (the default: the header names them), through a column
  map ``columns=acc_x:ax,acc_y:ay`` (channel ``acc_x`` reads the file's column ``ax``; a number
  is a 0-based position, for files without a header), or, in a file without a header, by
  position when the row has exactly one field per channel;
- ``sequence=NAME``: the column that splits recordings (default the first of ``sequence``,
  ``session``, ``recording`` that the header has; ``sequence=`` for none);
- ``time=NAME``: a timestamp column (default ``timestamp`` or ``time``): numbers in seconds
  unless ``time_unit=ms|us|ns``, or ISO 8601 date-times (``2026-12-04T05:00:00.020Z``, or
  ``2026-12-04 05:00:00.020`` as pandas writes them); the sample rate is read from it and
  checked against the model's; a time of day (``05:00:00.020``) with the date in a column of
  its own, ``date=NAME`` (default ``date``), as Excel and data loggers write them;
- ``label=NAME``: the truth of a class-score model (default ``label``); ``target`` or
  ``target_<i>`` columns for a regression or Gaussian model;
- ``sep=;|tab|space||``: the field separator (default ``,``; a tab in a ``.tsv`` file and in
  Excel's UTF-16 "Unicode Text" export). With any other than ``,`` a comma in a number is its
  decimal mark, as Excel writes ``0,25;9,81`` where the decimal mark is a comma.

The same keys go after ``?`` in a source URL (``replay:a.csv?columns=...``) and after a file
name given to ``--data`` or ``--calibration`` (``'a.csv?sequence=session'``).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
import re
from datetime import datetime, timezone
from itertools import chain, islice
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wavedge.errors import InputError, not_a_file, parse_json, query_params, reason

SEQUENCE_NAMES = ("sequence", "session", "recording")
TIME_NAMES = ("timestamp", "time")
DATE_NAME = "date"  # the date of a time column that holds times of day
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
TABLE_PARAMS = ("columns", "sequence", "time", "time_unit", "label", "sep", "date")
# sep= by name: a tab or a space in a URL is awkward to type and to quote
SEPARATORS = {",": ",", ";": ";", "tab": "\t", "space": " ", "|": "|"}
RATE_TOLERANCE = 0.02  # a timestamp rate within 2 % of the model's is the model's rate
RATE_WINDOW = 64  # samples read to estimate a source's rate before the first is used
MAX_LINE = 65536  # characters in one row; a longer line is one bad sample (line_too_long)
TOO_LONG = "\x01line_too_long"  # what bounded_lines puts in place of such a line
F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Sample:
    """One raw sample. ``problem`` names a fault the reader found (``not_numeric``,
    ``wrong_shape``); ``truth``, ``sequence`` and ``time`` come from the table's columns;
    ``stream`` is the index of its source when a run reads several; ``line`` the line of its
    text it was read from (1 is the first), ``row`` its row of a ``.npy`` (0 is the first, as
    numpy indexes it, within recording ``sequence`` when the array holds several); a warning
    about the sample names them, and gives ``detail``, the reader's words on its problem."""

    values: np.ndarray
    problem: str | None = None
    truth: str | None = None
    sequence: str | int | None = None
    time: float | None = None
    stream: int | None = None
    line: int | None = None
    row: int | None = None
    detail: str | None = None
    file: str | None = None  # the file it was read from, when a table is a folder of them
    # called as the run takes it, ``(sample, result)`` or ``(sample, None, why it was
    # refused)``: a source with ``reply=`` answers its sender (``sources.Awaited``)
    receipt: object = None

    def where(self) -> str | None:
        """Where in its input it sits: a text line counts from 1 (as editors do), a .npy row
        from 0 (as numpy indexes it); None when neither is known."""
        if self.line is not None:
            return f"{self.file}, line {self.line}" if self.file else f"line {self.line}"
        if self.row is None:
            return None
        return f"row {self.row}" if self.sequence is None else \
            f"recording {self.sequence}, row {self.row}"


@dataclass(frozen=True)
class Columns:
    """Which table column holds what (see the module doc). ``None`` means: decide from the
    header; an empty string means: there is none."""

    mapping: tuple[tuple[str, str], ...] | None = None  # (channel, column name or position)
    sequence: str | None = None
    time: str | None = None
    time_unit: str = "s"
    label: str = "label"
    sep: str | None = None  # None: "," but where the file says otherwise (``for_file``)
    date: str = DATE_NAME

    @classmethod
    def from_params(cls, params: dict, where: str) -> Columns:
        mapping = None
        if params.get("columns"):
            pairs = []
            for item in params["columns"].split(","):
                channel, sep, column = (p.strip() for p in item.partition(":"))
                if not channel or (sep and not column):
                    raise InputError(f"{where}: columns={params['columns']!r}: expected "
                                     "CHANNEL:COLUMN pairs (or CHANNEL names), comma-separated")
                pairs.append((channel, column if sep else channel))
            mapping = tuple(pairs)
        unit = params.get("time_unit", "s")
        if unit not in TIME_UNITS:
            raise InputError(f"{where}: time_unit={unit!r}; allowed: {', '.join(TIME_UNITS)}")
        return cls(mapping, params.get("sequence"), params.get("time"), unit,
                   params.get("label", "label"),
                   separator(params["sep"], where) if "sep" in params else None,
                   params.get("date", DATE_NAME))

    @property
    def decimal_comma(self) -> bool:
        """A comma in a number is its decimal mark: the fields are apart by something else."""
        return self.sep not in (None, ",")

    def reader(self, lines):
        """A CSV reader of ``lines`` split at this table's separator (runs of spaces are one
        separator, as ``numpy.savetxt`` and aligned columns write them)."""
        return csv.reader(lines, delimiter=self.sep or ",", skipinitialspace=self.sep == " ")

    def for_file(self, path: Path, fh) -> Columns:
        """These keys for the file ``path`` open as ``fh``: without a ``sep=``, a ``.tsv``
        file, and Excel's "Unicode Text" export (UTF-16), are tab-separated by their kind."""
        if self.sep is not None:
            return self
        tabbed = ".tsv" in Path(path).suffixes[-2:] or \
            getattr(fh, "encoding", "").lower() == "utf-16"
        return replace(self, sep="\t") if tabbed else self

    def channels(self, default: tuple[str, ...]) -> tuple[str, ...]:
        """The model's channel names this table serves: the map's, else ``default``."""
        return tuple(c for c, _ in self.mapping) if self.mapping else default


def separator(name: str, where: str) -> str:
    """The field separator ``sep=name`` names (``SEPARATORS``), for tables read and written."""
    if name not in SEPARATORS:
        raise InputError(f"{where}: sep={name!r}; allowed: "
                         + ", ".join(repr(k) if len(k) == 1 else k for k in SEPARATORS))
    return SEPARATORS[name]


def target_columns(signature) -> tuple[str, ...]:
    """The truth columns for a signature's primary output: none for class scores (the
    ``label`` column), else ``target`` or ``target_0, target_1, ...``."""
    head = signature.outputs[0]
    if head.kind == "class_scores":
        return ()
    size = int(np.prod(head.shape))
    return ("target",) if size == 1 else tuple(f"target_{i}" for i in range(size))


def split_spec(text: str | Path) -> tuple[Path, dict]:
    """``FILE?key=value&...`` -> (path, params), for ``--data`` and ``--calibration``."""
    path, _, query = str(text).partition("?")
    return Path(path), query_params(query, str(text))


@dataclass(frozen=True)
class Layout:
    """Columns resolved against one table's first row: field positions of each channel, of
    the truth, sequence and time (``None`` where absent). ``header`` is False when the first
    row is data."""

    channels: tuple[str, ...]
    values: tuple[int, ...] | None  # None: every field, in order (no header, count matched)
    header: bool
    sequence: int | None = None
    time: int | None = None
    time_scale: float = 1.0
    truth: tuple[int, ...] = ()
    columns: int | None = None  # the header's; None without one
    decimal_comma: bool = False  # a comma in a number is its decimal mark (sep= not ",")
    # NAME:VALUE lines: the name each channel is read by, then the sequence's, time's and
    # truth's names (None where absent); positions mean nothing there
    labels: tuple[str, ...] | None = None
    label_names: tuple[str | None, str | None, str | None] = (None, None, None)
    date: int | None = None  # the column of the time's date, where the time is of the day

    @property
    def width(self) -> int:
        return len(self.channels)


def _number(field: str) -> float:
    """A CSV field as a float, as ``float`` reads it but for digit groups: ``float("1_0")`` is
    10, where a field of ``1_0`` is a typo or a logger's own notation, not a number."""
    if "_" in field:
        raise ValueError(f"not a number: {field!r}")
    return float(field)


def _stamp(field: str | None, scale: float, comma: bool = False) -> float | None:
    """A time field in seconds: a number in the table's unit (``scale``; with ``comma``, its
    decimal mark a comma, as the table's numbers have it), or an ISO 8601 date-time, which
    states its own unit; None when it is neither. A date-time without a zone is read as UTC,
    not as this machine's local time, so that a daylight-saving change here moves no sample
    (only differences between stamps are used)."""
    if comma and field:
        field = field.replace(",", ".")
    try:
        return _number(field) * scale
    except (TypeError, ValueError):
        pass
    try:
        when = datetime.fromisoformat(field)
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")


def labelled_pairs(fields: list[str], first: bool = True) -> dict[str, str] | None:
    """A line of ``NAME:VALUE`` pairs, the Arduino IDE Serial Plotter's format (``ax:0.12,
    ay:-0.03``, or the pairs apart by spaces or tabs), as {name: value}; None when any token
    is not such a pair. A ``first`` line of names with units (``ax:g``) is a header, not
    pairs: at least one of its values must be a number."""
    pairs = {}
    for token in (t for f in fields for t in f.split()):
        name, sep, value = token.partition(":")
        if not sep or not _NAME.match(name):
            return None
        pairs[name] = value
    if first and not any(_numeric([v.replace(",", ".")]) for v in pairs.values()):
        return None
    return pairs


def _numeric(fields: list[str]) -> bool:
    try:
        [_number(f) for f in fields]
    except ValueError:
        return False
    return True


def shown_header(names) -> str:
    """A header as an error shows it: binary piped in by mistake made a line of kilobytes."""
    text = repr(list(names))
    return text if len(text) <= 200 else f"{text[:200]}... ({len(names)} columns)"


def _separator_hint(names: tuple[str, ...],
                    question: str = "the header is one column: is the file") -> str:
    """A header (or a row) read as one column that another separator would split (Excel
    writes ';' where the decimal mark is a comma; numpy's ``savetxt`` and sketches printing
    for the Serial Plotter a space or a tab)."""
    other = [name for name, sep in SEPARATORS.items() if len(names) == 1 and sep in names[0]]
    return (f" ({question} {SEPARATORS[other[0]]!r}-separated? add ?sep={other[0]})"
            if other else "")


def resolve(first: list[str], channels: tuple[str, ...], cols: Columns = Columns(),
            where: str = "table", strict: bool = True, targets: tuple[str, ...] = ()) -> Layout | None:
    """Where each of ``channels`` is in a table whose first row is ``first``.

    A header must name every mapped column; without one, columns are taken by position (a map
    of numbers) or, with no map, one field per channel. Raises ``InputError`` naming what is
    missing; with ``strict`` False (a serial line cut mid-way) returns None instead, and the
    row is counted as data."""
    first = _bare(first)  # Excel's "CSV UTF-8" starts with a BOM
    scale, comma = TIME_UNITS[cols.time_unit], cols.decimal_comma
    as_numbers = [f.replace(",", ".") for f in first] if comma else first
    column_of = dict(cols.mapping) if cols.mapping else {c: c for c in channels}
    lacking = [c for c in channels if c not in column_of]
    unknown = [c for c in column_of if c not in channels]
    if lacking or unknown:
        raise InputError(f"{where}: columns= must map each of the model's channels "
                         f"({', '.join(channels)})" + (f"; it lacks {lacking}" if lacking else "")
                         + (f"; {unknown} are not the model's" if unknown else ""))
    mapping = tuple((c, column_of[c]) for c in channels)  # in the model's order
    pairs = labelled_pairs(first)
    if pairs is not None:
        return _labelled_layout(pairs, mapping, cols, where, strict, scale, comma)
    positions = tuple(int(c) for _, c in mapping if c.isdigit())
    if len(positions) == len(mapping) and cols.mapping and max(positions) < len(first) \
            and _numeric([as_numbers[i] for i in positions]):
        # a map of positions: the row is data when those fields are numbers (others may not be)
        return Layout(channels, positions, False, time_scale=scale, decimal_comma=comma)
    if _numeric(as_numbers):
        if cols.mapping:
            raise InputError(f"{where}: has no header row, so columns={','.join(c for _, c in mapping)} "
                             "cannot be found by name; map to positions (acc_x:0,...)")
        if len(first) != len(channels) and strict:
            raise InputError(f"{where}: the first row has {len(first)} field(s) and no header; "
                             f"the model takes {len(channels)} channel(s) "
                             f"({', '.join(channels)}): add a header naming them, or map "
                             "positions with ?columns=CHANNEL:0,...")
        return Layout(channels, None, False, time_scale=scale, decimal_comma=comma)
    names = tuple(first)
    missing = [c for _, c in mapping if c not in names and not c.isdigit()]
    if missing:
        if not strict:
            return None
        if cols.mapping:
            raise InputError(f"{where}: header {shown_header(names)} lacks column(s) {missing} "
                             "that columns= maps")
        raise InputError(f"{where}: header {shown_header(names)} lacks channel(s) {missing} of the "
                         f"model (expects {list(channels)}); map them with "
                         "?columns=CHANNEL:COLUMN,..." + _separator_hint(names))

    def find(name: str | None, defaults: tuple[str, ...]) -> int | None:
        if name == "":
            return None
        if name is not None:
            if name not in names:
                raise InputError(f"{where}: header {shown_header(names)} has no column {name!r}")
            return names.index(name)
        return next((names.index(n) for n in defaults if n in names), None)

    truth = tuple(names.index(t) for t in targets if t in names)
    if len(truth) != len(targets):
        truth = ()
    if not targets:
        truth = (names.index(cols.label),) if cols.label in names else ()
    when = find(cols.time, TIME_NAMES)
    date = names.index(cols.date) if when is not None and cols.date in names else None
    return Layout(channels, tuple(int(c) if c.isdigit() else names.index(c) for _, c in mapping),
                  True, find(cols.sequence, SEQUENCE_NAMES), when, scale, truth, len(names),
                  comma, date=date)


def _labelled_layout(pairs: dict, mapping, cols: Columns, where: str, strict: bool,
                     scale: float, comma: bool) -> Layout | None:
    """The layout of ``NAME:VALUE`` lines: each channel by its name (or the column map's),
    the sequence, time and truth by theirs when the first line has them."""
    channels = tuple(c for c, _ in mapping)
    missing = [name for _, name in mapping if name not in pairs]
    if missing:
        if not strict:
            return None
        raise InputError(f"{where}: the first line's NAME:VALUE pairs ({', '.join(pairs)}) lack "
                         f"{missing}, of the model's channels {list(channels)}; map them with "
                         "?columns=CHANNEL:NAME,...")

    def find(name: str | None, defaults: tuple[str, ...]) -> str | None:
        return (name or None) if name is not None else next((n for n in defaults if n in pairs),
                                                            None)

    when = find(cols.time, TIME_NAMES)
    if strict and when is not None and pairs.get(when):
        _check_time(_stamp(pairs[when], scale, comma), pairs[when], f"column {when!r} holds",
                    where)
    return Layout(channels, None, False, time_scale=scale, decimal_comma=comma,
                  labels=tuple(name for _, name in mapping),
                  label_names=(find(cols.sequence, SEQUENCE_NAMES), when,
                               cols.label if cols.label in pairs else None))


def _parse_labelled(fields: list[str], layout: Layout) -> Sample:
    """One ``NAME:VALUE`` line -> a ``Sample``: a channel's name absent, or a line that is not
    pairs (a sketch's own message, a line cut in two), is ``wrong_shape``; a value that is not
    a number ``not_numeric``. Names the model does not read are left aside."""
    values = np.full(layout.width, np.nan, np.float32)
    pairs = labelled_pairs(fields, first=False)
    if pairs is None:
        return Sample(values, "wrong_shape", detail="not NAME:VALUE pairs")
    problem, lacking = None, []
    for i, name in enumerate(layout.labels):
        text = pairs.get(name)
        if text is None:
            lacking.append(name)
            continue
        try:
            values[i] = _f32(_number(text.replace(",", ".") if layout.decimal_comma else text))
        except ValueError:
            problem = problem or "not_numeric"
    sequence, when, truth = (None if n is None else pairs.get(n) for n in layout.label_names)
    return Sample(values, "wrong_shape" if lacking else problem, truth, sequence,
                  _stamp(when, layout.time_scale, layout.decimal_comma),
                  detail=f"lacks {', '.join(lacking)}" if lacking else None)


def _f32(v: float) -> float:
    """``v`` as float32 holds it: beyond its range is infinite (said here, not by numpy's
    overflow warning)."""
    return v if -F32_MAX <= v <= F32_MAX or v != v else math.copysign(math.inf, v)


def parse_row(fields: list[str], layout: Layout) -> Sample:
    """One data row -> a ``Sample``; a field that is not a number becomes NaN and the sample
    is marked ``not_numeric``; missing fields mark it ``wrong_shape``, and so do fields past
    the header's last column that are not empty (two lines run together; a trailing comma
    is not that)."""
    if layout.labels is not None:
        return _parse_labelled(fields, layout)
    fields = [f.strip() for f in fields]
    if layout.values is None:
        picked, problem = fields, ("wrong_shape" if len(fields) != layout.width else None)
    elif max(layout.values) < len(fields):
        picked, problem = [fields[i] for i in layout.values], None
        if layout.columns is not None and any(fields[layout.columns:]):
            problem = "wrong_shape"
    else:
        picked, problem = fields[:layout.width], "wrong_shape"
    if layout.decimal_comma:  # the numbers only: a label keeps its commas
        picked = [f.replace(",", ".") for f in picked]
    values = np.full(layout.width, np.nan, np.float32)
    for i, f in enumerate(picked[:layout.width]):
        try:
            v = float(f)  # _number's rule, inline: a call per field cost 8 % of a row's parse
            if "_" in f:
                raise ValueError(f)
        except ValueError:
            problem = problem or "not_numeric"
            continue
        # beyond float32 is infinite (said here, not by numpy's overflow warning)
        values[i] = v if -F32_MAX <= v <= F32_MAX or v != v else math.copysign(math.inf, v)
    if len(picked) < layout.width:
        problem = "wrong_shape"

    def cell(i):
        return fields[i] if i is not None and i < len(fields) else None

    truth = None
    if layout.truth:
        got = [cell(i) for i in layout.truth]
        truth = got[0] if len(got) == 1 else (";".join(got) if None not in got else None)
    stamp = None if layout.time is None else \
        _stamp(cell(layout.time), layout.time_scale, layout.decimal_comma)
    if stamp is None and layout.date is not None:
        stamp = _on_date(cell(layout.time), cell(layout.date), layout.decimal_comma)
    return Sample(values, problem, truth, cell(layout.sequence), stamp,
                  detail=_shape_detail(fields, layout) if problem == "wrong_shape" else None)


def _on_date(when: str | None, date: str | None, comma: bool) -> float | None:
    """A time of day on its date (``date=``), as ``2026-12-04`` and ``05:00:00.020`` in two
    columns."""
    return _stamp(f"{date.strip()}T{when.strip()}", 1.0, comma) if date and when else None


def _shape_detail(fields: list[str], layout: Layout) -> str:
    """How a row of the wrong shape differs from its table: the fields it has up to its last
    non-empty one (a trailing comma is no field), against the header's columns or, without
    a header, the model's channels."""
    n = len(fields)
    while n and not fields[n - 1]:
        n -= 1
    hint = _separator_hint(tuple(fields[:n]), "one field: are its values") \
        if layout.width > 1 else ""
    if layout.columns is not None:
        return f"{n} field(s), the header has {layout.columns}{hint}"
    return f"{n} field(s), the model takes {layout.width} channel(s){hint}"


def bounded_lines(fh, limit: int = MAX_LINE):
    """The lines of a text stream, none held longer than ``limit`` characters: a longer one is
    read past in pieces and stands as ``TOO_LONG`` (a bad sample, not a gigabyte in memory)."""
    while True:
        line = fh.readline(limit)
        if not line:
            return
        if len(line) >= limit and not line.endswith(("\n", "\r")):
            while True:
                rest = fh.readline(limit)
                if not rest or rest.endswith(("\n", "\r")):
                    break
            yield TOO_LONG + "\n"
            continue
        yield line


def _bare(fields: list[str]) -> list[str]:
    """A header's names as compared: a file's byte-order mark and spaces left out."""
    return [f.strip().lstrip("\ufeff") for f in fields]


class Messages:
    """Lines of JSON as CSV lines, for ``csv_samples``: a sensor on a network (MQTT, UDP)
    sends a JSON list of numbers in channel order or a JSON object keyed by channel name, and
    so do a board printing ArduinoJson's output, a script printing JSON Lines, a ``.jsonl``
    file; other lines (CSV) go as they are.

    An object before the table's layout is known (the first sample) has its other keys made
    columns by a CSV header (one line more, ``added``): ``time`` (or ``timestamp``),
    ``label``, ``sequence`` read as a table's would be (a sensor's own timestamps checked
    against the model's rate, its labels scored), and a ``columns=`` map names its keys.
    After a CSV header, an object's values go in the header's columns, by name; without
    one, in channel order. Nested objects and lists are dotted keys (``_flat``). An object
    holding none of the channels (a status message) is no sample."""

    def __init__(self, channels: tuple[str, ...], cols: Columns) -> None:
        names = [c for _, c in cols.mapping] if cols.mapping else list(channels)
        # a map of positions is a CSV line's: an object's values go in channel order
        self.by_name = not any(n.isdigit() for n in names)
        self.names = names if self.by_name else list(channels)
        self.sep = cols.sep or ","
        self.resolved = False  # set by csv_samples: the table's layout is known
        self.columns: list[str] | None = None  # and its header's names, when it has one
        self.added = 0  # lines of CSV made here that were no line's (the header)

    def wrap(self, lines, always: bool):
        """``lines`` with each JSON one made CSV; unless ``always`` (a live source, where the
        two may mix), only where the first line that is not blank is JSON (or the tail of an
        object cut off mid-line): a table's CSV lines go as they are, at no cost."""
        it, head = iter(lines), []
        if not always:
            for line in it:
                head.append(line)
                if line.strip():
                    break
            first = head[-1].strip() if head else ""
            if not first or (first[0] not in "[{" and not first.endswith(("}", "]"))):
                return chain(head, it)
        return self._each(chain(head, it))

    def _each(self, lines):
        for line in lines:
            if "{" in line or "[" in line:  # the CSV lines of a live source pass at 0.1 us
                yield from self.lines(line)
            else:
                yield line

    def lines(self, line: str) -> list[str]:
        text = line.strip()
        if text[:1] not in "[{":
            return [line]
        try:
            value = parse_json(text)
        except ValueError:
            return [line]  # not JSON after all: the line parser names the problem
        if isinstance(value, list):
            return [self._row(value)]
        if not isinstance(value, dict):
            return [line]
        try:
            value = _flat(value)
        except RecursionError:  # nested deeper than the flattening follows: a line, no sample
            # (from Python 3.12 the parser reads 1200 levels, and _flat ran out of recursion)
            return [line]
        if self.names and not any(n in value for n in self.names):
            return []  # (no names: a new model's, its channels read from the first's keys)
        if self.resolved or not self.by_name:
            return [self._row([value.get(k) for k in self.columns or self.names])]
        keys = [*self.names, *(k for k in value if k not in self.names)]
        self.added += 1
        return [self._row(keys, cell=str), self._row([value.get(k) for k in keys])]

    def _row(self, values: list, cell=None) -> str:
        """One CSV line of ``values`` at the table's separator, a field quoted where it holds
        the separator (a label "sitting, then up")."""
        buf = io.StringIO()
        # a line break inside a quoted field would make the reader take the next line as its rest
        csv.writer(buf, delimiter=self.sep, lineterminator="").writerow(
            [" ".join((cell or _cell)(v).splitlines()) for v in values])
        return buf.getvalue()


def _flat(obj: dict | list, prefix: str = "") -> dict:
    """A JSON object with its nested objects and lists as dotted keys (``{"acc": {"x": 1},
    "gyr": [4, 5]}`` has ``acc.x``, ``gyr.0``, ``gyr.1``): how ArduinoJson's nested documents
    (``doc["acc"]["x"]``) are named in a column map, ``columns=acc_x:acc.x,...``."""
    out = {}
    for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
        if isinstance(v, (dict, list)) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cell(value) -> str:
    """A JSON value as a CSV field: text as it is, null empty, a number as JSON writes it
    (``NaN``, ``Infinity`` read back as floats)."""
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def message_lines(payload: bytes) -> list[str]:
    """A network message (MQTT, UDP) as lines: CSV text's, or its JSON on one line (a
    sensor may send it laid out over several)."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text[:1] in "[{" and "\n" in text:
        try:
            return [json.dumps(parse_json(text))]
        except ValueError:
            pass
    return text.splitlines()


def csv_samples(lines, channels: tuple[str, ...], cols: Columns = Columns(),
                where: str = "input", strict: bool = True, targets: tuple[str, ...] = (),
                mixed: bool = False):
    """Samples from CSV text lines (blank lines skipped), the first resolving the layout. A
    line the CSV reader cannot parse is a ``bad_line`` sample, a ``TOO_LONG`` one a
    ``line_too_long`` sample: counted by the stream's policy, never an exception. The header
    line again (`cat a.csv b.csv |`, a board that restarted and sends its header anew) is
    skipped, not a bad sample, and starts a new recording (``in_part``): the board's state is
    not the one its last rows left, and its sequence numbers may start again at 0."""
    layout = header = None
    part, time_unchecked, provisional = 1, False, False
    made = Messages(channels, cols)  # JSON lines; ``mixed`` with CSV (a live source's)
    reader = cols.reader(made.wrap(lines, always=mixed))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield Sample(np.full(len(channels), np.nan, np.float32), "bad_line",
                         line=reader.line_num - made.added)
            continue
        if fields == [TOO_LONG]:
            yield Sample(np.full(len(channels), np.nan, np.float32), "line_too_long",
                         line=reader.line_num - made.added)
            continue
        if not fields or fields == [""] or all(not f.strip() for f in fields):
            continue
        if layout is None or provisional:
            found = resolve(fields, channels, cols, where, strict, targets)
            # a cut first line on a live port: data, counted as bad, and the next line decides
            provisional = found is None
            layout = found or layout or Layout(channels, None, False,
                                               decimal_comma=cols.decimal_comma)
            made.resolved = not provisional
            if layout.header:
                header = made.columns = _bare(fields)
                time_unchecked = strict and layout.time is not None
                continue
        elif header is not None and _bare(fields) == header:
            part += 1
            continue
        sample = parse_row(fields, layout)
        sample.line = reader.line_num - made.added
        if time_unchecked and sample.problem is None:
            # the first good row decides; a later row's bad time is that sample's fault
            time_unchecked = _check_time_column(sample, fields, layout, header, where)
        if part > 1:
            sample.sequence = in_part(sample.sequence, f"part {part}")
        yield sample


def _check_time_column(sample: Sample, fields: list[str], layout: Layout, header: list[str],
                       where: str) -> bool:
    """Refuse a time column whose first good row holds no time the reader knows (a time of
    day without a date column, a date in another order), where its timestamps would
    otherwise be left unread without a word and the rate go unchecked. False once decided;
    True while the row had no time to judge (an empty cell)."""
    cells = [fields[k].strip() for k in (layout.date, layout.time)
             if k is not None and k < len(fields)]
    if not cells or not cells[-1]:
        return True
    names = [repr(header[k]) for k in (layout.date, layout.time) if k is not None]
    said = f"column {names[0]} holds" if len(names) == 1 else f"columns {' and '.join(names)} hold"
    _check_time(sample.time, " ".join(cells), said, where)
    return False


def _check_time(stamp: float | None, text: str, said: str, where: str) -> None:
    """``text``, the time the columns ``said`` hold, read as ``stamp``: refused when it is no
    time."""
    if stamp is None:
        raise InputError(f"{where}: {said} {text!r}, not a timestamp (a number "
                         f"in seconds, time_unit={'|'.join(TIME_UNITS)} for other units, an "
                         "ISO 8601 date-time, or a time of day beside an ISO date column, "
                         "date=NAME); name the time column with time=NAME, or none with time=")


def in_part(sequence, part: str) -> str:
    """The recording a row of ``sequence`` belongs to when it comes in a later ``part`` of the
    input (``part 2``: after the header sent a second time; ``loop 2``: a replay's second
    pass), so that the run resets and scores at the part's start, the sequence value being the
    same."""
    return part if sequence is None else f"{sequence} ({part})"


def _open_text(path: Path):
    """A table's text: UTF-8, or UTF-16 where the file starts with its byte-order mark (Excel's
    "Unicode Text" export, tab-separated) or is that without it (``_utf16_without_mark``), any
    of them gzipped (``log.csv.gz``, a long recording kept small); each had been refused as
    binary data."""
    if why := not_a_file(path):
        raise InputError(why)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    opener = open
    if head[:2] == b"\x1f\x8b":
        import gzip

        opener = gzip.open
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return opener(path, "rt", newline="", encoding="utf-16")
    if order := _utf16_without_mark(head):
        return opener(path, "rt", newline="", encoding=order)
    if b"\x00" in head:
        raise InputError(f"{path}: not a text CSV file (it holds binary data)")
    return opener(path, "rt", newline="", encoding="utf-8")


def _utf16_without_mark(head: bytes) -> str | None:
    """``utf-16-le`` or ``-be`` where ``head`` is text of that kind without its byte-order
    mark (what a .NET or SQL Server export writes): every other byte zero, the rest not."""
    head = head[:len(head) // 2 * 2]
    for order, zeros, text in (("utf-16-le", head[1::2], head[0::2]),
                               ("utf-16-be", head[0::2], head[1::2])):
        if len(head) >= 4 and not zeros.strip(b"\x00") and b"\x00" not in text:
            return order
    return None


def file_samples(path: Path, channels: tuple[str, ...], cols: Columns = Columns(),
                 targets: tuple[str, ...] = ()):
    """Every sample of a recorded CSV or ``.npy`` file, streamed (nothing held but one row).
    ``.npy``: ``[T, D]`` or ``[N, T, D]`` float, N recordings."""
    path = Path(path)
    if path.suffix == ".npy":
        yield from _npy_samples(path, channels)
        return
    try:
        with _open_text(path) as fh:
            yield from csv_samples(bounded_lines(fh), channels, cols.for_file(path, fh),
                                   str(path), True, targets)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 (or UTF-16) text CSV file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    except (EOFError, OSError) as exc:  # gzip's: a file cut short in a copy, or damaged
        raise InputError(f"{path}: reading stopped ({reason(exc)})") from None


def _npy_samples(path: Path, channels: tuple[str, ...]):
    if why := not_a_file(path):
        raise InputError(why)
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise InputError(f"{path}: not a .npy file (no NUMPY header)")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: holds {arr.dtype} values, expected real numbers (float or "
                         "integer)")
    if arr.ndim not in (2, 3) or arr.shape[-1] != len(channels):
        raise InputError(f"{path}: expected shape (T, {len(channels)}) or "
                         f"(N, T, {len(channels)}), got {arr.shape}")
    if arr.ndim == 2:
        for t, row in enumerate(arr):
            yield Sample(np.asarray(row, np.float32), row=t)
        return
    for n, rec in enumerate(arr):
        for t, row in enumerate(rec):
            yield Sample(np.asarray(row, np.float32), sequence=n, row=t)


@dataclass
class Recording:
    """One recording of a table: ``x`` ``[T, D]`` raw, the truth of each sample, times."""

    key: str | int | None
    x: np.ndarray
    truth: list
    times: np.ndarray | None


def one_label_each(table: "Table", what: str) -> None:
    """A recording is one example, labelled by its last sample: refuse labels that change
    within one. A whole file without a sequence column had been trained as the one example of
    its last row's class ("one class only")."""
    mixed = [r for r in table.recordings if len(set(r.truth)) > 1]
    if not mixed:
        return
    first = mixed[0]
    seen = ", ".join(dict.fromkeys(map(str, first.truth)))
    if first.key is None:
        raise InputError(f"{what}: {table.path}: the table is one recording (no sequence, "
                         "session or recording column; name one with ?sequence=COLUMN), and "
                         f"its label changes within it ({seen})")
    raise InputError(f"{what}: {table.path}: the label changes within {len(mixed)} of "
                     f"{len(table.recordings)} recordings (recording {first.key}: {seen}); a "
                     "recording is one example with one label: split them with another "
                     "sequence column (?sequence=COLUMN)")


def clock_channel(table: "Table") -> str | None:
    """A channel that rises at every step of every recording (two or more, of three samples
    or more), as a clock does: ``Time (s)`` in a phyphox export, ``seconds_elapsed`` beside a
    phone logger's ``time``. Taken from the header as a channel, it teaches a model the time
    of each sample, not the sensor. None when there is none."""
    long = [r.x for r in table.recordings if len(r.x) >= 3]
    if len(long) < 2:
        return None
    rising = np.logical_and.reduce([(np.diff(x, axis=0) > 0).all(axis=0) for x in long])
    return table.channels[int(np.argmax(rising))] if rising.any() else None


def header_channels(path: Path, cols: Columns, what: str) -> tuple[str, ...]:
    """A new model's channels: the column map's names, else every header column (or name of
    a ``NAME:VALUE`` line) that is not the sequence, time, label or a target."""
    if cols.mapping:
        return tuple(c for c, _ in cols.mapping)
    try:
        with _open_text(path) as fh:
            cols = cols.for_file(path, fh)
            first = next(cols.reader(Messages((), cols).wrap(fh, always=False)), [])
    except (UnicodeDecodeError, csv.Error):
        raise InputError(f"{what}: {path}: not a UTF-8 (or UTF-16) text CSV file") from None
    pairs = labelled_pairs(_bare(first))
    names = list(pairs) if pairs is not None else _bare(first)
    if not names or _numeric(names):
        raise InputError(f"{what}: {path}: needs a header row naming its columns (or "
                         "?columns=CHANNEL:POSITION,...)")
    hint = _separator_hint(tuple(names))
    if hint:  # else one channel named "sequence;label;acc_x;..."
        raise InputError(f"{what}: {path}: header {shown_header(names)}{hint}")
    named = [n for n in (cols.sequence, cols.time) if n] + \
        ([cols.label] if cols.label not in ("label", FOLDER_LABEL) else [])
    absent = [n for n in named if n not in names]
    if absent:
        raise InputError(f"{what}: {path}: header {shown_header(names)} has no column "
                         f"{absent[0]!r}")
    claimed = {cols.label, cols.sequence, cols.time}
    claimed |= set(SEQUENCE_NAMES if cols.sequence is None else ())
    claimed |= set(TIME_NAMES if cols.time is None else ())
    claimed |= {cols.date} if cols.time != "" else set()  # a time's date is no channel
    return tuple(n for n in names if n not in claimed and not n.startswith("target"))


@dataclass
class Table:
    """A whole table read by ``load_table``: its recordings (in order of first appearance),
    the column keys, the model channels it served, and its sample rate (the timestamps', or
    the stated ``sample_rate=``; None when it has neither)."""

    path: Path
    recordings: list[Recording]
    columns: Columns
    channels: tuple[str, ...]
    rate_hz: float | None
    params: dict


def load_table(spec: str | Path, channels: tuple[str, ...] | None, what: str = "recordings",
               targets: tuple[str, ...] = (), model_hz: float | None = None) -> Table:
    """Read a whole table (``FILE?column keys``) into recordings split by its sequence
    column, for training, calibration and checks; ``channels`` None: a new model's, from the
    table (``header_channels``); ``model_hz``: refuse another rate. Any bad row raises
    ``InputError`` naming it: training or calibrating on NaN or half rows would set every
    range wrong."""
    path, params = split_spec(spec)
    allowed = (*TABLE_PARAMS, "sample_rate", "labels")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InputError(f"{what}: {spec}: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(allowed)}")
    cols = Columns.from_params(params, f"{what}: {path}")
    npy_labels, listed = None, table_files(path, what)
    if path.suffix == ".npy" and listed is None:
        channels = channels or _npy_channels(path, cols, what)
        npy_labels = _npy_labels(path, params, what)
    channels = channels or header_channels(listed[1][0] if listed else path, cols, what)
    recs: dict = {}
    try:
        for n, s in enumerate(table_samples(path, channels, cols, targets, listed), start=1):
            if npy_labels is not None:
                s.truth = npy_labels[s.sequence or 0]
            if s.problem is not None or not np.isfinite(s.values).all():
                raise InputError(f"{what}: {path}, {s.where() or f'sample {n}'}: "
                                 f"{s.problem or 'not finite'} "
                                 f"(expected {len(channels)} numbers: {', '.join(channels)})")
            rec = recs.setdefault(s.sequence, ([], [], []))
            rec[0].append(s.values)
            rec[1].append(s.truth)
            rec[2].append(s.time)
    except InputError as exc:
        msg = str(exc)
        raise InputError(msg if msg.startswith(what) else f"{what}: {msg}") from None
    if not recs:
        raise InputError(f"{what}: {path} holds no samples")
    out = [Recording(k, np.stack(x).astype(np.float32), t,
                     None if None in ts else np.asarray(ts, np.float64))
           for k, (x, t, ts) in recs.items()]
    rate = _stated_rate(params, f"{what}: {spec}")
    found = table_rate(out)
    if rate is not None and found is not None:
        check_rate(found, rate, f"{what}: {path} (sample_rate={rate:g} stated)")
    rate = rate or found
    check_rate(rate, model_hz, f"{what}: {path}")
    return Table(path, out, cols, channels, rate, params)


TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl")  # a folder's table files (each may be gzipped)
FOLDER_LABEL = "@folder"  # label=@folder: a folder's files labelled by their folder's name


def reads(path: Path):
    """Whether a file is one that a table ``path`` reads: the file itself, a table file in
    the folder (its subfolders too), or a file its glob matches (a results file written there
    would be read as a recording the next time)."""
    path = Path(path)
    whole = Path(os.path.abspath(path))
    if path.is_dir():
        return lambda p: _table_file(p) and whole in Path(os.path.abspath(p)).parents
    if _glob_at(path) is not None:
        return lambda p: _glob_matches(whole.parts, Path(os.path.abspath(p)).parts)
    real = path.resolve()
    return lambda p: Path(p).resolve() == real


def _table_file(path: Path) -> bool:
    return not path.name.startswith(".") and \
        Path(path.name.removesuffix(".gz")).suffix in TABLE_SUFFIXES


def table_files(path: Path, what: str | None = None) -> tuple[Path, list[Path]] | None:
    """The files of a table that is not one file: a folder's table files (its subfolders
    too), or a glob's matches (``'logs/*.csv'``, ``'logs/**/*.csv'``, quoted for the shell),
    in name order, with the folder their names are relative to (one recording per file, or
    several by its sequence column; a folder per label with ``label=@folder``); None when
    ``path`` is one file."""
    path = Path(path)
    where = f"{what + ': ' if what else ''}{path}"
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and _table_file(f))
        if not files:
            raise InputError(f"{where}: a folder with no table file "
                             f"({', '.join(TABLE_SUFFIXES)}, gzipped or not) in it")
        return path, files
    glob = _glob_at(path)
    if glob is None:
        return None
    root = Path(*path.parts[:glob]) if glob else Path(".")
    try:
        files = sorted(f for f in root.glob(str(Path(*path.parts[glob:]))) if f.is_file())
    except ValueError as exc:  # a pattern pathlib refuses ('a**b')
        raise InputError(f"{where}: {exc}") from None
    if not files:
        raise InputError(f"{where}: no file matches")
    return root, files


_GLOB = re.compile(r"[*?[]")


def _glob_at(path: Path) -> int | None:
    """The index of ``path``'s first part with a wildcard, None when it has none or names a
    file that is there (``data[1].csv``)."""
    if path.exists():
        return None
    return next((k for k, part in enumerate(path.parts) if _GLOB.search(part)), None)


def _glob_matches(pattern: tuple, parts: tuple) -> bool:
    """Whether a path's ``parts`` match a glob's as ``Path.glob`` finds them, ``**`` any
    depth (none too): ``Path.match`` takes ``**`` for one folder, so a results file written
    two folders down a ``'logs/**/*.csv'`` replay had not been seen as one it reads."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_matches(pattern[1:], parts[k:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and \
        _glob_matches(pattern[1:], parts[1:])


def table_digest(path: Path) -> str:
    """The sha256 of a table file, or of a folder's or a glob's files (their names and
    contents): what a checkpoint records of its data, to see that it has not changed since."""
    import hashlib

    from wavedge.manifest import sha256_of

    listed = table_files(path)
    if listed is None:
        return sha256_of(path)
    root, files = listed
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(root).as_posix()}\0{sha256_of(f)}\n".encode())
    return digest.hexdigest()


def table_samples(path: Path, channels: tuple[str, ...], cols: Columns = Columns(),
                  targets: tuple[str, ...] = (), listed=None):
    """Every sample of a table: a file (``file_samples``), or a folder's or a glob's files in
    name order (``table_files``, or ``listed`` when the caller has them), each file its own
    recording (``file.csv``, or ``file.csv:SEQ`` by its sequence column), with
    ``label=@folder`` each labelled by its folder's name."""
    listed = listed or table_files(Path(path))
    if listed is None:
        yield from file_samples(path, channels, cols, targets)
        return
    (root, files), by_folder = listed, cols.label == FOLDER_LABEL
    for f in files:
        name = f.relative_to(root).as_posix()
        if by_folder and f.parent == root:
            raise InputError(f"{f}: label=@folder takes each file's label from its folder, "
                             f"and this one is in {root} itself")
        for s in file_samples(f, channels, cols, targets):
            s.file, s.sequence = name, name if s.sequence is None else f"{name}:{s.sequence}"
            if by_folder:
                s.truth = f.parent.name
            yield s


def _npy_channels(path: Path, cols: Columns, what: str) -> tuple[str, ...]:
    """A ``.npy``'s channel names: ``columns=ax,ay,az`` names them, else ``x0, x1, ...``."""
    try:
        width = np.load(path, mmap_mode="r", allow_pickle=False).shape[-1]
    except (ValueError, OSError, IndexError) as exc:
        raise InputError(f"{what}: {path}: not a readable .npy file ({exc})") from None
    names = cols.channels(())
    if names and len(names) != width:
        raise InputError(f"{what}: {path}: columns= names {len(names)} channel(s), the array "
                         f"has {width}")
    return names or tuple(f"x{i}" for i in range(width))


def _npy_labels(path: Path, params: dict, what: str) -> list[str] | None:
    """``labels=FILE.npy``: one label (a number or a string) per recording of a ``.npy``."""
    if "labels" not in params:
        return None
    lpath = Path(params["labels"])
    if not lpath.is_absolute() and not lpath.is_file():
        lpath = path.parent / lpath
    try:
        labels = np.load(lpath, allow_pickle=False)
        n = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{what}: labels {lpath}: not a readable .npy file ({exc})") from None
    count = n.shape[0] if n.ndim == 3 else 1
    if labels.ndim != 1 or len(labels) != count or labels.dtype.kind not in "iuUS":
        raise InputError(f"{what}: labels {lpath}: expected {count} integer or string labels "
                         f"(one per recording of {path.name}), got {labels.dtype} "
                         f"{labels.shape}")
    return [str(v.decode() if isinstance(v, bytes) else v) for v in labels.tolist()]


def _stated_rate(params: dict, where: str) -> float | None:
    if "sample_rate" not in params:
        return None
    try:
        rate = float(params["sample_rate"])
    except ValueError:
        rate = float("nan")
    if not 0 < rate < 1e7:
        raise InputError(f"{where}: sample_rate must be a number of Hz in (0, 1e7), got "
                         f"{params['sample_rate']!r}")
    return rate


def rate_of(times) -> float | None:
    """The sample rate in Hz of increasing timestamps (the median interval), else None."""
    return _median_rate(np.diff(np.asarray(times, np.float64)))


def table_rate(recordings: list[Recording]) -> float | None:
    """The sample rate the recordings' timestamps give (intervals within recordings)."""
    steps = [np.diff(r.times) for r in recordings if r.times is not None and len(r.times) > 1]
    return _median_rate(np.concatenate(steps)) if steps else None


def _median_rate(steps: np.ndarray) -> float | None:
    steps = steps[steps > 0]
    if not len(steps):
        return None
    # the mean of the intervals within 1 % of the median: the median alone is one interval,
    # as coarse as the stamps (epoch nanoseconds read as float seconds come in steps of
    # 2.4e-7 s, so 10 Hz read as 10.00001), while a logger's jitter of a millisecond at
    # 50 Hz (19, 20, 21 ms) still gives its nominal 50 and a gap is left out
    median = np.median(steps)
    mean = steps[np.abs(steps - median) <= 0.01 * median].mean()
    # 7 significant digits: timestamps written to the millisecond give 49.999999998 for 50
    return float(f"{1.0 / mean:.7g}")


def check_rate(found_hz: float | None, model_hz: float | None, where: str) -> None:
    """Refuse samples at another rate than the model's, naming both."""
    if found_hz is None or model_hz is None:
        return
    if not _same_rate(found_hz, model_hz):
        raise InputError(f"{where}: samples at {found_hz:.4g} Hz, the model's rate is "
                         f"{model_hz:.4g} Hz; add resample=1 to resample them (or check "
                         f"time_unit={'|'.join(TIME_UNITS)})")


def with_rate(samples, model_hz: float | None, where: str, stated_hz: float | None = None,
              resampler: Resampler | None = None):
    """``samples`` checked against the model's rate: a stated rate at once, timestamps over
    the first ``RATE_WINDOW`` samples of the first recording (passed on as they come, so a
    live source is not held up); resampled by ``resampler`` instead when it is given and the
    rates differ (timestamps are then read ahead to decide). Raises ``InputError`` on a
    mismatch, from the ``next`` that completed the estimate."""
    if model_hz is None:
        yield from samples
        return
    it = iter(samples)
    if resampler is not None:
        head = [] if stated_hz is not None else list(islice(it, RATE_WINDOW))
        found = stated_hz if stated_hz is not None else _head_rate(head)
        rest = chain(head, it)
        if found is None or _same_rate(found, model_hz):
            yield from rest
        else:
            resampler.source_hz = found
            yield from resampler.run(rest)
        return
    if stated_hz is not None:
        check_rate(stated_hz, model_hz, where)
        yield from it
        return
    times, first, checked = [], None, False
    for s in it:
        if not checked and s.time is not None:
            first = s.sequence if not times else first
            if s.sequence == first:
                times.append(s.time)
            if len(times) >= RATE_WINDOW or (s.sequence != first and len(times) > 1):
                check_rate(rate_of(times), model_hz, where)
                checked = True
        yield s
    if not checked and len(times) > 1:
        check_rate(rate_of(times), model_hz, where)


def _head_rate(head: list) -> float | None:
    times = [s.time for s in head if s.time is not None and s.sequence == head[0].sequence]
    return rate_of(times) if len(times) > 1 else None


def _same_rate(found: float, model_hz: float) -> bool:
    return abs(found - model_hz) <= RATE_TOLERANCE * model_hz


GAP_PERIODS = 4  # a longer break between two inputs is left as a gap, not interpolated


class Resampler:
    """Resample a stream to ``rate_hz`` on its own timestamps (or, without them, at the stated
    ``source_hz``), per recording. Going down, each output is the mean of the inputs within
    its period (a box filter, so a 50 Hz tremor does not alias into a 10 Hz model); going up,
    the linear interpolation of its two neighbours. Truth and sequence come from the input
    nearest the output time."""

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / rate_hz
        self.source_hz: float | None = None  # set by with_rate when the rates differ
        self.inputs = 0
        self.outputs = 0
        self.clock_back = 0  # times a recording's timestamps went back (a logger restarted)
        self.gaps = 0  # breaks in a recording too long to fill (GAP_PERIODS)

    def describe(self) -> str | None:
        if self.source_hz is None:
            return None
        back = (f"; the timestamps went back {self.clock_back} time(s) within a recording, "
                "each resampled anew from there") if self.clock_back else ""
        gaps = (f"; {self.gaps} gap(s) longer than {self.widest:.3g} s ({GAP_PERIODS} input "
                "periods, 2 output periods at least) left as gaps, not filled") \
            if self.gaps else ""
        return (f"resampled {self.source_hz:.4g} Hz -> {1 / self.period:g} Hz (box average "
                f"per output period going down, linear interpolation going up): "
                f"{self.inputs} samples in, {self.outputs} out{back}{gaps}")

    def run(self, samples):
        seq, pending, n = object(), [], 0
        self.widest = widest = max(GAP_PERIODS / self.source_hz, 2 * self.period)  # fillable
        self._bad = []  # (time, sample): bad inputs, passed on in time order between outputs
        timed = None  # whether the source gives times, from its first good sample
        for s in samples:
            self.inputs += 1
            n += 1  # a row that did not parse took its period all the same
            if timed and s.time is None and s.problem is None:
                # its time field is not a number: the slot n / rate had put it near 0 s, the
                # clock "went back" there, and on again: one row split a recording in three
                s.problem, s.detail = "not_numeric", "its time is not a number"
            if s.problem is not None or not np.isfinite(s.values).all():
                # left out of the averages (one NaN had spoilt a whole output period) and
                # passed on for the stream's policy to count, after the outputs before it:
                # it had gone at once, stepped ahead of them under --policy hold
                yield from self._bad_sample(s, seq, pending)
                continue
            timed = s.time is not None if timed is None else timed
            if s.time is None:
                s.time = (n - 1) / self.source_hz
            step = s.time - pending[-1].time if s.sequence == seq and pending else 0.0
            # a clock that went back (a logger restarted under the same session) had left
            # the samples after it waiting for an output time they never reached: all lost
            self.clock_back += step < 0
            # a logger paused for an hour had its hour filled with interpolated samples
            # (36 000 made up at 10 Hz), and a gap:S reset never saw the gap
            self.gaps += step > widest
            if s.sequence != seq or step < 0 or step > widest:
                yield from self._flush(pending, final=True)
                seq, pending, self._next, self._start = s.sequence, [], s.time, s.time
            pending.append(s)
            yield from self._flush(pending, final=False)
        yield from self._flush(pending, final=True)

    def _flush(self, pending: list, final: bool):
        half = self.period / 2
        while pending and (final and self._next <= pending[-1].time + 1e-12
                           or pending[-1].time > self._next + half):
            t = self._next
            # going down: the mean over the output period centred on t, narrowed at the
            # recording's ends so that it stays centred (unbiased)
            reach = min(half, t - self._start, pending[-1].time - t if final else half)
            inside = [s for s in pending if abs(s.time - t) <= reach + 1e-9] \
                if self.source_hz > 1.0 / self.period else []
            if inside:
                values = np.mean([s.values for s in inside], axis=0).astype(np.float32)
            else:
                before = max((s for s in pending if s.time <= t), key=lambda s: s.time,
                             default=pending[0])
                after = min((s for s in pending if s.time >= t), key=lambda s: s.time,
                            default=pending[-1])
                w = 0.0 if after.time == before.time else (t - before.time) / (after.time -
                                                                               before.time)
                values = ((1 - w) * before.values + w * after.values).astype(np.float32)
            near = min(pending, key=lambda s: abs(s.time - t))
            yield from self._bad_before(t)
            self.outputs += 1
            yield Sample(values, None, near.truth, near.sequence, t)
            self._next = t + self.period
            # keep only what the next output can still use
            while len(pending) > 1 and pending[1].time < self._next - half:
                pending.pop(0)
        if final:
            pending.clear()
            yield from self._bad_before(math.inf)

    def _bad_sample(self, s: Sample, seq, pending: list):
        """Hold bad sample ``s`` until the outputs before its time (the last good input's
        where it has none) have gone; a new recording's goes after the last one's."""
        if s.sequence != seq:
            yield from self._flush(pending, final=True)
            yield s
        else:
            self._bad.append((s.time if s.time is not None else pending[-1].time, s))

    def _bad_before(self, t: float):
        while self._bad and self._bad[0][0] < t:
            yield self._bad.pop(0)[1]
