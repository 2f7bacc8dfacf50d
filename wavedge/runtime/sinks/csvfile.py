"""``csv:PATH[?append=1]``: a CSV file, one row per result: ``stream`` (when the run reads
several sources), ``step``, ``time`` (when the source has timestamps), the primary output
head's columns (class scores: ``class_id,label,score`` and ``logit_<label>`` per class; a
Gaussian: ``mean_<i>`` and ``variance_<i>``; tokens: the top 5 ids and probabilities, never the
vocabulary), any other head's columns prefixed by its output name, and ``truth``. ``csv:-``
writes to standard output. Lines reach the file at least every second (``LineFile``).
``append=1`` adds to the file instead of replacing it, the header only when the file was
empty; ``rotate=100M&keep=5`` begins a new file (with the header) at that size, keeping 5 full
ones (``PATH.1`` ...); a file whose header this model does not write (another model's) is
refused at open. ``time_format=iso`` writes the time as a UTC ISO 8601 date-time, ``host_time=1``
adds a column of this host's clock as each result was made (``sinks.Stamps``).
``sep=;|tab|space||`` (a table's names, ``wavedge.recordings.SEPARATORS``) separates the fields
otherwise; with ``;`` the numbers have decimal commas, as Excel reads and writes them where
the decimal mark is a comma (a file of ``,`` and ``.`` opened there is one column of text)."""

from __future__ import annotations

import builtins
import csv
import io

import numpy as np

from wavedge.errors import SinkError
from wavedge.recordings import separator, shown_header
from wavedge.runtime.heads import heads_for
from wavedge.runtime.sinks import APPEND_PARAM  # noqa: F401 (urls.kept reads it)
from wavedge.runtime.sinks import STAMP_PARAMS, LineFile, Stamps


FILE_PATH = True  # the URL's path is a file (wavedge service wants it absolute)


class CsvSink:
    def __init__(self, url, manifest) -> None:
        self.sep = separator(url.params.get("sep", ","), url.text)
        self.out = LineFile.for_url(url, "csv sink", ("sep", *STAMP_PARAMS))
        self.stamps = Stamps(url)
        self.flush_due = self.out.flush_due  # the loop writes the lines out in a pause
        self.begin = self.out.begin  # the file started anew as the run begins
        self._buf = io.StringIO()
        self.writer = csv.writer(self._buf, delimiter=self.sep)
        self.heads = heads_for(manifest.signature)
        primary, *others = self.heads
        columns = primary.columns()
        for h in others:
            columns += [f"{h.name}.{c}" if not c.startswith(h.name) else c for c in h.columns()]
        # truth right after the primary head's short fields, as before the heads existed
        self._at = len([c for c in primary.columns() if not c.startswith("logit_")]) + 1
        self._columns = columns
        self._timed = None  # decided by the first sample: a source with timestamps or not
        self._lanes = False  # likewise: a run of several sources (a stream column)
        self._found = None if self.out.empty else self._existing_header(url.text)

    def _cells(self, timed: bool, lanes: bool, host: bool | None = None) -> list[str]:
        c = self._columns
        host = self.stamps.host if host is None else host
        return [*(["stream"] if lanes else []), "step", *(["time"] if timed else []),
                *(["host_time"] if host else []), *c[:self._at - 1], "truth",
                *c[self._at - 1:]]

    def _existing_header(self, where: str) -> list[str]:
        """The header of the file appended to, refused when no run of this model writes it:
        rows of another model's columns would sit under it (a service's model replaced)."""
        with builtins.open(self.out.path, newline="", encoding="utf-8", errors="replace") as fh:
            found = next(csv.reader(fh, delimiter=self.sep), [])
        if all(found != self._cells(t, s) for t in (False, True) for s in (False, True)):
            self.out.close()
            other = not self.stamps.host  # the run that wrote it had the other host_time=
            if any(found == self._cells(t, s, other) for t in (False, True) for s in (False, True)):
                raise SinkError(f"{where}: the file was written with host_time={int(other)}; "
                                "give the same, or append to another file")
            raise SinkError(f"{where}: the file's header {shown_header(found)} is not one this "
                            f"model writes ({shown_header(self._cells(False, False))}); append "
                            "to another file")
        return found

    def _header(self, timed: bool, lanes: bool) -> None:
        self._timed, self._lanes = timed, lanes
        cells = self._cells(timed, lanes)
        self.out.head = self._line(cells)  # each file a rotation begins starts with it
        if self._found is None:
            self._row(cells, None)
        elif self._found != cells:
            raise SinkError(f"{self.out.path}: its header {shown_header(self._found)} is not "
                            f"this run's {shown_header(cells)} (a time or stream column more or "
                            "less); append to another file")

    def _line(self, cells: list) -> str:
        if self.sep == ";":  # Excel's pairing: a ';' file has decimal commas
            cells = [str(c).replace(".", ",") if isinstance(c, (float, np.floating)) else c
                     for c in cells]
        self.writer.writerow(cells)
        line = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return line

    def _row(self, cells: list, sample) -> None:
        self.out.write(self._line(cells), sample)

    def write(self, result, sample) -> None:
        r = self.stamps.record(result, sample)
        if self._timed is None:
            self._header("time" in r, "stream" in r)
        primary, *others = self.heads
        cells = primary.row(r)
        for h in others:
            rec = r[h.name]
            cells += h.row(rec if isinstance(rec, dict) else {h.name: rec})
        stamp = [r.get("time", "")] if self._timed else []
        if self.stamps.host:
            stamp.append(r["host_time"])
        lane = [r.get("stream", "")] if self._lanes else []
        self._row([*lane, r["step"], *stamp, *cells[:self._at - 1], r.get("truth", ""),
                   *cells[self._at - 1:]], sample)

    def notes(self) -> list[str]:
        return self.out.notes()

    def close(self) -> None:
        if self._timed is None and self.out.begun:  # a run without results: its header
            self._header(False, False)
        self.out.close()


def open(url, manifest) -> CsvSink:  # noqa: A001
    return CsvSink(url, manifest)
