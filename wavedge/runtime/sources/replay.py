"""``replay:PATH[?rate=HZ|max&loop=N&limit=N&<table keys>]``: a recorded CSV or .npy file (or a
folder of CSV files, each a recording, or a quoted glob of them, ``'replay:logs/*.csv'``),
streamed row by row (never loaded whole), paced at the manifest's sample rate by default
(``rate=max``: as fast as possible). ``loop=0`` repeats forever; each pass after the first is a
recording of its own (``"3 (loop 2)"``), reset and scored as one. Without a path
(``replay:?rate=max``), the model directory's own recording.

CSV: a header naming the model's channels, or a column map (``columns=acc_x:ax,...``), or no
header and exactly one column per channel; ``label``, a sequence column and a timestamp
column carry the truth, the recording boundaries and the sample times
(``wavedge.recordings``). Timestamps (or ``sample_rate=HZ``) at another rate than the model's
are refused at open unless ``resample=1``. .npy: ``[T, D]`` or ``[N, T, D]`` float.
"""

from __future__ import annotations

from pathlib import Path

from wavedge.errors import InputError, not_a_file
from wavedge.recordings import in_part, table_files, table_samples
from wavedge.runtime.sources import COUNT_RANGE, SOURCE_TABLE_PARAMS, Pacer, SourceError, \
    TableOptions, rate_param


FILE_PATH = True  # the URL's path is a file (wavedge service wants it absolute)


class ReplaySource:
    def __init__(self, url, manifest) -> None:
        url.check_params(("rate", "loop", "limit", *SOURCE_TABLE_PARAMS))
        self.path = Path(url.path) if url.path else _own_recording(url, manifest)
        # replay reads its file twice (its head at open): a file, or a folder or glob of them
        try:
            self.listed = table_files(self.path)  # listed once: a loop rereads the files
        except InputError as exc:
            raise SourceError(f"{url.text}: {exc}") from None
        if self.listed is None and (why := not_a_file(self.path)):
            pipe = self.path.exists()  # and not a folder, which is read
            raise SourceError(f"{url.text}: {why}" + ("; stream from a pipe with stdin: "
                                                      "(... | wavedge run MODEL --source "
                                                      "stdin:)" if pipe else ""))
        self.table = TableOptions(url, manifest)
        self.rate_hz = rate_param(url, manifest)
        self.loops = url.get("loop", 1, int, COUNT_RANGE)
        self.limit = url.get("limit", None, int, (1, COUNT_RANGE[1]))
        # read the header and the first rows now, so that a wrong column, file or rate is one
        # line before the run starts, not an error after the first sample
        try:
            head = self.table.head(self._rows())
        except InputError as exc:
            raise SourceError(str(exc)) from None
        if not head:  # and loop=0 would reread it for ever, streaming nothing
            raise SourceError(f"{url.text}: {self.path} holds no samples")

    def _rows(self, loop: int = 0):
        """The file's samples; those of a later pass (``loop=N``) each in a recording of their
        own, tagged before the rate check and the resampler read the recording boundaries."""
        t = self.table
        rows = table_samples(self.path, t.channels, t.columns, t.targets, self.listed)
        if loop:
            for row in rows:
                row.sequence = in_part(row.sequence, f"loop {loop + 1}")
                yield row
        else:
            yield from rows

    def __iter__(self):
        pacer = Pacer(self.rate_hz)
        count, loop, last = 0, 0, None
        self.cut = False  # stopped by its limit inside a recording: its last sample ends none
        while self.loops == 0 or loop < self.loops:
            for sample in self.table.samples(self._rows(loop)):
                if self.limit is not None and count >= self.limit:
                    self.cut = sample.sequence == last
                    return
                pacer.wait()
                yield sample
                last = sample.sequence
                count += 1
            loop += 1

    def notes(self) -> list[str]:
        return self.table.notes()

    def close(self) -> None:
        pass


def _own_recording(url, manifest) -> Path:
    """``replay:`` without a path (``replay:?rate=max``): the model directory's own recording,
    which a run without ``--source`` replays at the model's rate."""
    try:
        return manifest.own_recording("give one (replay:FILE)")
    except InputError as exc:
        raise SourceError(f"{url.text}: {exc}") from None


def open(url, manifest) -> ReplaySource:  # noqa: A001 - the scheme-module entry point
    return ReplaySource(url, manifest)
