"""``jsonl:PATH``: one JSON object per result (``step, class_id, label, score, logits``, and
``truth`` when the source knows it). ``jsonl:-`` writes to standard output."""

from __future__ import annotations

import json

from wavedge.runtime.sinks import open_output, record


class JsonlSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(())
        self.fh, self._owned = open_output(url.path, "jsonl sink")

    def write(self, result, sample) -> None:
        self.fh.write(json.dumps(record(result, sample)) + "\n")

    def close(self) -> None:
        self.fh.flush()
        if self._owned:
            self.fh.close()


def open(url, manifest) -> JsonlSink:  # noqa: A001
    return JsonlSink(url, manifest)
