"""``csv:PATH``: a CSV file with ``step,class_id,label,score,truth`` and one logit column per
class (``logit_<label>``). ``csv:-`` writes to standard output."""

from __future__ import annotations

import csv

from wavedge.runtime.sinks import open_output, record


class CsvSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(())
        self.fh, self._owned = open_output(url.path, "csv sink")
        self.writer = csv.writer(self.fh)
        labels = manifest.labels or [str(i) for i in range(manifest.output_size)]
        self.writer.writerow(["step", "class_id", "label", "score", "truth",
                              *(f"logit_{name}" for name in labels)])

    def write(self, result, sample) -> None:
        r = record(result, sample)
        self.writer.writerow([r["step"], r["class_id"], r["label"], r["score"],
                              r.get("truth", ""), *r["logits"]])

    def close(self) -> None:
        self.fh.flush()
        if self._owned:
            self.fh.close()


def open(url, manifest) -> CsvSink:  # noqa: A001
    return CsvSink(url, manifest)
