"""``stdout:[?every=N]``: one human-readable line per result (or every N-th result), as
each output head writes it (class and score; mean +- standard deviation; top token ...)."""

from __future__ import annotations

import sys

from wavedge.errors import SinkError, reason
from wavedge.runtime.urls import NO_TOP


class StdoutSink:
    def __init__(self, url, manifest, out=None) -> None:
        url.check_params(("every",))
        self.every = url.get("every", 1, int, (1, NO_TOP))
        self.out = out if out is not None else sys.stdout
        if self.out is None:  # started with standard output closed (`>&-`): print drops all
            raise SinkError("stdout sink: standard output is closed; give --sink jsonl:FILE "
                            "or null:")

    def write(self, result, sample) -> None:
        if (result.step + 1) % self.every:
            return
        stamp = f"  t {sample.time:.3f}" if sample is not None and sample.time is not None else ""
        lane = f"stream {sample.stream}  " if sample is not None and sample.stream is not None \
            else ""
        line = f"{lane}step {result.step:>7}{stamp}  {result.text()}"
        if sample is not None and sample.truth is not None:
            agrees = result.head.score_truth(result.values, sample.truth)
            mark = ("ok" if agrees else "MISS") if isinstance(agrees, bool) else ""
            line += f"   truth {sample.truth:<12} {mark}".rstrip()
        try:
            print(line, file=self.out, flush=True)
        except BrokenPipeError:  # `| head`: the run stops quietly
            raise
        except OSError as exc:  # a full disk behind `> FILE`: the summary still comes
            raise SinkError(f"stdout sink: cannot write ({reason(exc)})") from None

    def close(self) -> None:
        pass


def open(url, manifest) -> StdoutSink:  # noqa: A001
    return StdoutSink(url, manifest)
