"""Sinks: where results go. One module per URL scheme, each with ``open(url, manifest)``
returning an object with ``write(result, sample)`` and ``close()``; and ``begin()`` where it
does something as the run begins (a file sink starts its file anew)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from wavedge.errors import SinkError


FLUSH_S = 1.0  # a file sink's lines reach the file at least this often, and at each recording end
APPEND_PARAM = "append"  # a file sink's key that keeps the file across runs (urls.kept adds it)
ROTATE_PARAMS = ("rotate", "keep")  # a file sink's size limit, and how many full files it keeps
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
PACKED = (".gz", ".bz2", ".xz", ".zst", ".zip")  # names a file sink refuses (it writes text)
STAMP_PARAMS = ("time_format", "host_time")  # every record sink's keys for its times (Stamps)


class LineFile:
    """Whole lines to a file (``-``: stdout), written in batches with one ``write`` system call
    each: at least every ``FLUSH_S`` seconds (in a pause of the source too, by the loop's
    keeper: ``flush_due``), at a recording's end and at close. So a SIGKILL loses at most the
    last second (and, in the rare case it lands inside a write of several pages, which Linux
    may cut at a page boundary, leaves part of a line, which an appending run cuts first),
    and a full disk is a ``SinkError`` naming the file, not a traceback.

    With ``rotate`` (bytes), a file that has reached that size after a batch is renamed
    ``PATH.1`` (the older ones ``PATH.2`` ... up to ``keep``, the oldest removed) and a new one
    begun with ``head`` (a CSV header): a service appending for months fills no card, and no
    line is ever cut between two files."""

    def __init__(self, path: str, what: str, append: bool = False, rotate: int | None = None,
                 keep: int = 5) -> None:
        self.what, self.path = what, path
        self.rotate, self.keep, self.rotated = rotate, keep, 0
        self.head: str | None = None  # the line a new file starts with (a CSV header)
        self._closing = False
        self._owned = path not in ("", "-")
        self.empty = True  # nothing in the file before this run (a CSV header is due)
        # started anew at ``begin``, not here: a run refused after this sink opened (another
        # sink that cannot, a model that fails) leaves yesterday's results as they were
        self._anew = self._owned and not append
        self.begun = False
        if self._owned:
            p = Path(path)
            # append: a service restarted after a failure adds to what it wrote before
            mode = os.O_APPEND if append else 0
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(p, os.O_WRONLY | os.O_CREAT | mode, 0o644)
                self.empty = self._anew or os.fstat(self.fd).st_size == 0
            except OSError as exc:
                raise SinkError(f"{what} {path}: cannot write ({exc.strerror})") from None
        else:
            if sys.stdout is None:  # started with standard output closed (`>&-`)
                raise SinkError(f"{what} -: standard output is closed; give a file")
            sys.stdout.flush()
            self.fd = sys.stdout.fileno()
        self._lines: list[str] = []
        self._due = time.monotonic() + FLUSH_S
        self._sequence = None
        # at the first write, not here: a file refused at open (csv: another model's) is
        # left exactly as it was; never a FIFO or a device (their size is 0: empty)
        self._tail_to_check = append and not self.empty

    @classmethod
    def for_url(cls, url, what: str, params: tuple[str, ...] = ()) -> LineFile:
        """A file sink's file: the URL's path, appended to with ``?append=1``; ``params`` the
        sink's own keys beside it."""
        url.check_params((APPEND_PARAM, *ROTATE_PARAMS, *params))
        packed = next((s for s in PACKED if url.path.lower().endswith(s)), None)
        if packed:  # plain text under a compressed name: replay:, zcat and pandas refuse it
            raise SinkError(f"{url.text}: {what}s write plain text, not {packed[1:]}; name it "
                            f"{url.path[:-len(packed)]} (rotate=SIZE&keep=N bounds it; "
                            "compress the full files it keeps)")
        rotate = _size(url, "rotate") if "rotate" in url.params else None
        if rotate is not None and url.path in ("", "-"):
            raise SinkError(f"{url.text}: rotate= is for a file; standard output has no size")
        return cls(url.path, what, bool(url.get(APPEND_PARAM, 0, int, (0, 1))), rotate,
                   url.get("keep", 5, int, (1, 1000)))

    def begin(self) -> None:
        """The run has begun: the file is started anew (unless appended to). A run calls
        this; from Python, the first line does."""
        self.begun = True
        if self._anew:
            self._anew = False
            try:
                os.ftruncate(self.fd, 0)
            except OSError:  # not a regular file (a FIFO, /dev/null): nothing to cut
                pass

    def write(self, line: str, sample=None) -> None:
        """Queue one line (with its newline); flush when a second has passed or the sample
        starts another recording."""
        if not self.begun:
            self.begin()
        seq = sample.sequence if sample is not None else None
        ended = seq != self._sequence and bool(self._lines)
        self._sequence = seq
        self._lines.append(line)  # before a flush, so that a failed one counts it as lost
        if ended or time.monotonic() >= self._due:
            self.flush()

    def flush_due(self, check: bool = False) -> bool:
        """Write the lines out when they have waited ``FLUSH_S`` (the loop's keeper calls
        this while the source is quiet); with ``check``, only say whether they have."""
        due = bool(self._lines) and time.monotonic() >= self._due
        if due and not check:
            self.flush()
        return due

    def flush(self) -> None:
        self._due = time.monotonic() + FLUSH_S
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8")
        self._lines.clear()
        if self._tail_to_check:
            self._tail_to_check = False
            self._end_on_whole_line()
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except BrokenPipeError:
            raise
        except OSError as exc:
            self._cut_partial_line(data, done)
            lost = data.count(b"\n", done)
            raise SinkError(f"{self.what} {self.path}: cannot write ({exc.strerror}); the last "
                            f"{lost} line{'s' if lost != 1 else ''} did not reach it") from None
        if self.rotate is not None and not self._closing and \
                os.fstat(self.fd).st_size >= self.rotate:
            self._rotate()

    def _rotate(self) -> None:
        """``PATH`` to ``PATH.1``, each older one up a number (the last beyond ``keep``
        removed), and a new ``PATH`` begun with ``head``."""
        try:
            os.close(self.fd)
            for k in range(self.keep, 0, -1):
                older = f"{self.path}.{k - 1}" if k > 1 else self.path
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{k}")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if self.head:
                os.write(self.fd, self.head.encode("utf-8"))
        except OSError as exc:
            self._owned = False  # nothing open to close
            raise SinkError(f"{self.what} {self.path}: cannot start the next file "
                            f"({exc.strerror})") from None
        self.rotated += 1

    def notes(self) -> list[str]:
        return [f"{self.what} {self.path}: began a new file {self.rotated} time(s) at "
                f"{self.rotate} bytes, keeping {self.keep} full ones ({self.path}.1 the newest)"
                ] if self.rotated else []

    def _cut_partial_line(self, data: bytes, done: int) -> None:
        """A disk that fills (or a file-size limit) mid-batch takes part of a line: cut the
        file back to its last whole line, so a reader of it (``jq``, pandas) is not stopped
        by half a record."""
        part = done - (data.rfind(b"\n", 0, done) + 1)
        if part and self._owned:
            try:
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR) - part)
            except OSError:  # not a regular file (a FIFO): nothing to cut
                pass

    def _end_on_whole_line(self) -> None:
        """Appending to a file whose last line is partial (a SIGKILL inside a write of several
        pages, or a full disk outside wavedge's hands): cut it back to its last whole line and
        say so, so the first new record does not run on from half an old one, which would
        stop a reader (``jq``, pandas) at that line."""
        try:
            with open(self.path, "rb") as fh:
                end = keep = fh.seek(0, os.SEEK_END)
                while keep > 0:  # back from the end, a block at a time, to the last newline
                    start = max(0, keep - 65536)
                    fh.seek(start)
                    newline = fh.read(keep - start).rfind(b"\n")
                    if newline >= 0:
                        keep = start + newline + 1
                        break
                    keep = start
            if keep == end:
                return  # the usual case: the file ends on a whole line
            os.ftruncate(self.fd, keep)
        except OSError:  # unreadable (write-only permissions): appended as it is
            return
        print(f"wavedge: warning: {self.what} {self.path}: cut {end - keep} bytes of a partial "
              "last line (a stop mid-write left it) before appending", file=sys.stderr)

    def close(self) -> None:
        self._closing = True  # no rotation at the end: a new run begins the next file
        try:
            self.flush()
        finally:
            if self._owned:
                os.close(self.fd)
                self._owned = False


def _size(url, key: str) -> int:
    """A size in bytes from a URL key: ``100M``, ``64k``, ``1G`` or bytes (at least 1 KiB)."""
    text = url.params[key].strip().lower().removesuffix("b")
    number, unit = (text[:-1], text[-1]) if text[-1:] in SIZE_UNITS else (text, "")
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        size = 0
    if size < 1024:
        raise SinkError(f"{url.text}: {key}={url.params[key]} is not a size of 1k or more "
                        "(bytes, or with k, M or G)")
    return size


def record(result, sample, when=None) -> dict:
    """The fields every structured sink writes for one result: the step, each output head's
    fields (``wavedge.runtime.heads``), and the sample's ``time`` (in seconds, or as ``when``
    writes them: ``Stamps``) and ``truth`` when the source knows them; ``stream`` (its
    source's index) when the run reads several."""
    row = result.record()
    if sample is not None and sample.stream is not None:
        row = {"stream": sample.stream, **row}
    if sample is not None and sample.time is not None:
        row["time"] = sample.time if when is None else when(sample.time)
    if sample is not None and sample.truth is not None:
        row["truth"] = sample.truth
    return row


class Stamps:
    """A record sink's times (files, MQTT, a webhook, UDP): the sample's ``time`` in seconds,
    as the source's timestamps read, or with ``time_format=iso`` as UTC ISO 8601 date-times
    (``iso_time``: a logger's log of date-times, joined to the results by time, or read in a
    spreadsheet); with ``host_time=1``, also this host's clock as each result was made, in the
    same form (a live sensor's results have no time of their own: a service's months of them
    would not say when)."""

    def __init__(self, url) -> None:
        form = url.params.get("time_format", "s")
        if form not in ("s", "iso"):
            raise SinkError(f"{url.text}: time_format= takes s (seconds, as the source's "
                            f"timestamps read) or iso (UTC ISO 8601 date-times), not {form!r}")
        self.when = iso_time if form == "iso" else None
        self.host = bool(url.get("host_time", 0, int, (0, 1)))

    def record(self, result, sample) -> dict:
        row = record(result, sample, self.when)
        if self.host:
            now = time.time()
            row["host_time"] = now if self.when is None else self.when(now)
        return row


def iso_time(seconds: float):
    """Epoch seconds as ``2026-12-04T05:00:00.020Z``: milliseconds, or microseconds where
    they are not whole; a time no date-time holds (a sensor's seconds since boot are 1970's)
    stays seconds."""
    try:
        text = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return seconds
    text = text.removesuffix("+00:00")
    return (text[:-3] if text.endswith("000") else text) + "Z"


def json_text(row: dict) -> str:
    """One record as JSON, non-finite numbers as ``null`` (bare ``NaN`` is not JSON)."""
    try:
        return json.dumps(row, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(row))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Sinks:
    """The sinks of one run (``--sink`` repeated: a file that keeps every result beside the
    board or broker that acts on them), each given every result in the order named. One that
    cannot write (a full disk) ends the run as a single sink's failure does; at the end every
    one is closed, the first failure raised after. What the loop asks of a sink it gets from
    any of them: commands (an MQTT sink's), due lines (a file sink's), their counters."""

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks
        inboxes = [s.inbox for s in sinks if getattr(s, "inbox", None) is not None]
        if inboxes:
            self.inbox = inboxes[0] if len(inboxes) == 1 else _Inboxes(inboxes)
        self._due = [s.flush_due for s in sinks if hasattr(s, "flush_due")]
        if self._due:
            self.flush_due = self._flush_due
        self._resets = [s.reset for s in sinks if hasattr(s, "reset")]
        if self._resets:  # a sink that averages each stream's results (events.Selected)
            self.reset = self._reset

    def begin(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "begin"):
                sink.begin()

    def write(self, result, sample) -> None:
        for sink in self.sinks:
            sink.write(result, sample)

    def _flush_due(self, check: bool = False) -> bool:
        return any([due(check) for due in self._due])  # a list: every one is written out

    def _reset(self, stream=None) -> None:
        for reset in self._resets:
            reset(stream)

    def check_streams(self, n: int) -> None:
        for sink in self.sinks:
            if hasattr(sink, "check_streams"):
                sink.check_streams(n)

    def counters(self) -> dict:
        """Each sink's counters, named by its kind (``link posted``, ``udp refused``), and its
        place among those of its kind where there are several (``udp 2 sent``)."""
        kinds = [sink_kind(s) for s in self.sinks]
        out = {}
        for k, (sink, kind) in enumerate(zip(self.sinks, kinds)):
            if kinds.count(kind) > 1:
                kind += f" {kinds[:k].count(kind) + 1}"
            out.update({f"{kind} {name}": v
                        for name, v in getattr(sink, "counters", dict)().items()})
        return out

    def notes(self) -> list[str]:
        return [n for s in self.sinks for n in getattr(s, "notes", list)()]

    def close(self) -> None:
        failed = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # the others still flush and close
                failed = failed or exc
        if failed is not None:
            raise failed


def sink_kind(sink) -> str:
    """A sink's kind in words (``udp``, ``link``): its class's name, or the sink's it
    wraps (``kind``: a sink's own choice of results, ``events.Selected``)."""
    return getattr(sink, "kind", None) or type(sink).__name__.removesuffix("Sink").lower()


class _Inboxes:
    """The commands of several sinks (two brokers), as one inbox: a deque's ``popleft`` and
    truth."""

    def __init__(self, inboxes: list) -> None:
        self.inboxes = inboxes

    def __bool__(self) -> bool:
        return any(self.inboxes)

    def popleft(self):
        return next(q for q in self.inboxes if q).popleft()
