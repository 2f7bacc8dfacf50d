"""``null:``: discard results (for timing the loop itself)."""

from __future__ import annotations


class NullSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(())

    def write(self, result, sample) -> None:
        pass

    def close(self) -> None:
        pass


def open(url, manifest) -> NullSink:  # noqa: A001
    return NullSink(url, manifest)
