"""``stdin:``: CSV text lines on standard input, one sample per line (an optional header naming
the channels is recognised on the first line). Ends at end of input."""

from __future__ import annotations

import sys

from wavedge.runtime.sources import csv_samples


class StdinSource:
    def __init__(self, url, manifest, stream=None) -> None:
        url.check_params(())
        self.channels = manifest.channels
        self.stream = stream if stream is not None else sys.stdin

    def __iter__(self):
        return csv_samples(self.stream, self.channels)

    def close(self) -> None:
        pass


def open(url, manifest) -> StdinSource:  # noqa: A001
    return StdinSource(url, manifest)
