"""``jsonl:PATH``: one JSON object per result (``step``, the sample's ``time`` when the source
has one, each head's fields: ``class_id, label, score, logits`` for class scores, and ``truth``
when the source knows it). ``jsonl:-`` writes to standard output. Non-finite numbers are written
as ``null`` (bare ``NaN`` is not JSON). Lines reach the file at least every second
(``LineFile``)."""

from __future__ import annotations

import json
import math

from wavedge.runtime.sinks import LineFile, record


class JsonlSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(())
        self.out = LineFile(url.path, "jsonl sink")

    def write(self, result, sample) -> None:
        r = record(result, sample)
        try:
            line = json.dumps(r, allow_nan=False)
        except ValueError:  # a NaN or inf somewhere: null, as JSON has no such numbers
            line = json.dumps(_finite(r))
        self.out.write(line + "\n", sample)

    def close(self) -> None:
        self.out.close()


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def open(url, manifest) -> JsonlSink:  # noqa: A001
    return JsonlSink(url, manifest)
