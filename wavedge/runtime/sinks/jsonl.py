"""``jsonl:PATH[?append=1]``: one JSON object per result (``step``, the sample's ``time`` when the
source has one, each head's fields: ``class_id, label, score, logits`` for class scores, and
``truth`` when the source knows it). ``jsonl:-`` writes to standard output. Non-finite numbers
are written as ``null`` (bare ``NaN`` is not JSON). Lines reach the file at least every second
(``LineFile``). ``append=1`` adds to the file instead of replacing it (a service restarted);
``rotate=100M&keep=5`` begins a new file at that size, keeping 5 full ones (``PATH.1`` ...);
``time_format=iso`` writes the time as a UTC ISO 8601 date-time, ``host_time=1`` adds this
host's clock as each result was made (``sinks.Stamps``)."""

from __future__ import annotations

from wavedge.runtime.sinks import APPEND_PARAM  # noqa: F401 (urls.kept reads it)
from wavedge.runtime.sinks import STAMP_PARAMS, LineFile, Stamps, json_text


FILE_PATH = True  # the URL's path is a file (wavedge service wants it absolute)


class JsonlSink:
    def __init__(self, url, manifest) -> None:
        self.out = LineFile.for_url(url, "jsonl sink", STAMP_PARAMS)
        self.stamps = Stamps(url)
        self.flush_due = self.out.flush_due  # the loop writes the lines out in a pause
        self.begin = self.out.begin  # the file started anew as the run begins

    def write(self, result, sample) -> None:
        self.out.write(json_text(self.stamps.record(result, sample)) + "\n", sample)

    def notes(self) -> list[str]:
        return self.out.notes()

    def close(self) -> None:
        self.out.close()


def open(url, manifest) -> JsonlSink:  # noqa: A001
    return JsonlSink(url, manifest)
