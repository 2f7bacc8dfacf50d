"""``stdin:``: CSV text lines on standard input, one sample per line (an optional header naming
the channels is recognised on the first line). Ends at end of input."""

from __future__ import annotations

import sys

from wavedge.runtime.sources import Sample, header_columns, parse_fields


class StdinSource:
    def __init__(self, url, manifest, stream=None) -> None:
        url.check_params(())
        self.channels = manifest.channels
        self.stream = stream if stream is not None else sys.stdin

    def __iter__(self):
        cols = None
        first = True
        for line in self.stream:
            fields = [f.strip() for f in line.strip().split(",")]
            if fields == [""]:
                continue
            if first:
                first = False
                cols = header_columns(fields, self.channels)
                if cols is not None:
                    continue
            if cols is not None and max(cols) < len(fields):
                fields = [fields[c] for c in cols]
            values, problem = parse_fields(fields, len(self.channels))
            yield Sample(values, problem)

    def close(self) -> None:
        pass


def open(url, manifest) -> StdinSource:  # noqa: A001
    return StdinSource(url, manifest)
