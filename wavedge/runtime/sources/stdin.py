"""``stdin:[?<table keys>]``: CSV text lines on standard input, one sample per line. The first
line may be a header naming the channels (or the columns a ``columns=`` map names); without
one, each line holds one field per channel. A line may be a JSON object by channel name
instead (``recordings.Messages``). Ends at end of input."""

from __future__ import annotations

import sys

from wavedge.recordings import bounded_lines
from wavedge.runtime.sources import SOURCE_TABLE_PARAMS, SourceError, TableOptions, port_reader


def reader(url) -> tuple[str, str]:
    return port_reader(url, "stdin")


class StdinSource:
    def __init__(self, url, manifest, stream=None) -> None:
        url.check_params(SOURCE_TABLE_PARAMS)
        self.table = TableOptions(url, manifest)
        self.stream = stream if stream is not None else sys.stdin
        if self.stream is None:  # started with it closed (`<&-`, some service managers)
            raise SourceError("stdin source: standard input is closed; pipe the samples in, "
                              "or give another --source")
        if hasattr(self.stream, "reconfigure"):
            # every line ending, as a file is read: a device or logger that ends its lines
            # with a bare CR (some RS-232 instruments) had all its input read as one line.
            # Such a line is passed on when the next one starts (whether an LF follows)
            self.stream.reconfigure(newline="")

    def __iter__(self):
        return self.table.lines(bounded_lines(self.stream), "stdin")

    def notes(self) -> list[str]:
        return self.table.notes()

    def close(self) -> None:
        pass


def open(url, manifest) -> StdinSource:  # noqa: A001
    return StdinSource(url, manifest)
