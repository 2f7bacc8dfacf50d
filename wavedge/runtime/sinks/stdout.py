"""``stdout:[?every=N]``: one human-readable line per result (or every N-th result)."""

from __future__ import annotations

import sys


class StdoutSink:
    def __init__(self, url, manifest, out=None) -> None:
        url.check_params(("every",))
        self.every = max(1, url.get("every", 1, int))
        self.out = out if out is not None else sys.stdout

    def write(self, result, sample) -> None:
        if (result.step + 1) % self.every:
            return
        line = f"step {result.step:>7}  {result.label:<12} {result.score:6.3f}"
        if sample is not None and sample.truth is not None:
            mark = "ok" if sample.truth == result.label else "MISS"
            line += f"   truth {sample.truth:<12} {mark}"
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        pass


def open(url, manifest) -> StdoutSink:  # noqa: A001
    return StdoutSink(url, manifest)
