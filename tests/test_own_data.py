"""A user's own sensor files: column maps, headerless files, timestamps and the sample rate,
resampling, reset policies in export and in `wavedge run`, and `wavedge train --data`.

The bundled model (6 channels at 10 Hz) is the model; its recording, rewritten the way other
loggers write files, is the data."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from conftest import BUNDLED_MODEL, assert_one_line_error, needs_torch, run_cli, user_env
from wavedge.errors import InputError, ManifestError
from wavedge.manifest import load_manifest
from wavedge.recordings import Columns, Resampler, Sample, header_channels, load_table
from wavedge.runtime.sinks import iso_time
from wavedge.resets import ResetPolicy, Resetter
from wavedge.runtime import SourceError, load_model, open_sink, open_source
from wavedge.runtime.loop import run

RECORDING = BUNDLED_MODEL / "recording.csv"
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z")


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def rows():
    with open(RECORDING) as fh:
        return list(csv.DictReader(fh))


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _logger_file(path, rows, rate_hz=10.0, n=None):
    """The recording as another logger writes it: its own column names, in its own order,
    a timestamp and a session column."""
    out = [[f"{i / rate_hz:.3f}", f"trial-{r['sequence']}", r["label"],
            *(r[c] for c in reversed(CHANNELS))] for i, r in enumerate(rows[:n])]
    return _write(path, ["t", "trial", "activity", *(f"ch{i}" for i in range(6))], out)


LOGGER_MAP = ",".join(f"{c}:ch{5 - i}" for i, c in enumerate(CHANNELS))
LOGGER_KEYS = f"columns={LOGGER_MAP}&sequence=trial&time=t&label=activity"


def _labels(url, model):
    summary_and = []
    stream = model.stream()
    for s in open_source(url, model.manifest):
        summary_and.append(stream.push(s.values).label)
    return summary_and


def test_a_column_map_reads_another_loggers_file_like_the_recording(tmp_path, model, rows):
    path = _logger_file(tmp_path / "logger.csv", rows, n=300)
    mapped = list(open_source(f"replay:{path}?rate=max&{LOGGER_KEYS}", model.manifest))
    plain = list(open_source(f"replay:{RECORDING}?rate=max&limit=300", model.manifest))
    assert len(mapped) == 300
    assert all(np.array_equal(a.values, b.values) for a, b in zip(mapped, plain))
    assert [s.truth for s in mapped] == [s.truth for s in plain]
    assert mapped[0].sequence == f"trial-{rows[0]['sequence']}"
    assert mapped[1].time == pytest.approx(0.1)


def test_column_map_mistakes_are_one_line_at_open(tmp_path, model, rows):
    path = _logger_file(tmp_path / "logger.csv", rows, n=20)
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['nope'\] that columns= maps"):
        open_source(f"replay:{path}?columns={LOGGER_MAP.replace('ch0', 'nope')}&time=t",
                    model.manifest)
    with pytest.raises(SourceError, match="must map each of the model's channels"):
        open_source(f"replay:{path}?columns=acc_x:ch0&time=t", model.manifest)
    with pytest.raises(InputError, match="unknown parameter"):
        open_source(f"replay:{path}?colums=x", model.manifest)
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{path}?time=t", "--sink", "null:")
    assert_one_line_error(proc, "lacks channel(s) ['acc_x'", "?columns=CHANNEL:COLUMN")


def test_headerless_files_by_position_or_refused_in_one_line(tmp_path, model, rows):
    six = _write(tmp_path / "six.csv", None, [[r[c] for c in CHANNELS] for r in rows[:50]])
    assert len(_labels(f"replay:{six}?rate=max", model)) == 50
    # extra columns, no header: a map of positions picks the channels
    wide = _write(tmp_path / "wide.csv", None,
                  [["7", *(r[c] for c in CHANNELS), "x"] for r in rows[:50]])
    positions = ",".join(f"{c}:{i + 1}" for i, c in enumerate(CHANNELS))
    assert _labels(f"replay:{wide}?rate=max&columns={positions}", model) == \
        _labels(f"replay:{six}?rate=max", model)
    three = _write(tmp_path / "three.csv", None, [[r[c] for c in CHANNELS[:3]] for r in rows])
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{three}", "--sink", "null:")
    assert_one_line_error(proc, "the first row has 3 field(s) and no header",
                          "the model takes 6 channel(s)")


def test_a_run_in_which_every_sample_was_rejected_exits_non_zero(tmp_path):
    import subprocess
    import sys

    text = ",".join(CHANNELS) + "\n" + "a,b,c,d,e,f\n" * 20
    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                           "--source", "stdin:", "--sink", "null:"], input=text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "wavedge: error: every one of the 20 samples from stdin: was rejected" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_excel_bom_header_is_read(tmp_path, model, rows):
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffsequence,label," + ",".join(CHANNELS) + "\n" + "".join(
        f"{r['sequence']},{r['label']}," + ",".join(r[c] for c in CHANNELS) + "\n"
        for r in rows[:30]), encoding="utf-8")
    samples = list(open_source(f"replay:{path}?rate=max", model.manifest))
    assert len(samples) == 30 and samples[0].sequence == rows[0]["sequence"]


def test_excels_unicode_text_export_is_read(tmp_path, model, rows):
    """Excel's "Unicode Text" export: UTF-16 with its byte-order mark, tab-separated. It had
    been refused as "binary data"; it reads as the recording, tab-separated by its kind as a
    `.tsv` file is (a `sep=` said wins)."""
    path = tmp_path / "export.txt"
    text = "\t".join(["sequence", "label", *CHANNELS]) + "\r\n" + "".join(
        "\t".join([r["sequence"], r["label"], *(r[c] for c in CHANNELS)]) + "\r\n"
        for r in rows[:30])
    path.write_bytes(text.encode("utf-16"))  # Python writes the BOM, as Excel does
    tsv = tmp_path / "export.tsv"
    tsv.write_text(text)
    want = list(open_source(f"replay:{RECORDING}?rate=max&limit=30", model.manifest))
    for url in (f"{path}?sep=tab", path, tsv):
        got = list(open_source(f"replay:{url}{'&' if '?' in str(url) else '?'}rate=max",
                               model.manifest))
        assert [s.values.tolist() for s in got] == [s.values.tolist() for s in want], url
        assert got[0].truth == rows[0]["label"]
        assert load_table(url, None, "training data").channels == CHANNELS
    with pytest.raises(SourceError, match=re.escape("add ?sep=tab")):
        open_source(f"replay:{tsv}?sep=,", model.manifest)
    # UTF-16 without its byte-order mark (a .NET or SQL Server export), either byte order
    for order in ("utf-16-le", "utf-16-be"):
        bare = tmp_path / f"{order}.csv"
        bare.write_bytes(text.replace("\t", ",").encode(order))
        got = list(open_source(f"replay:{bare}?rate=max", model.manifest))
        assert [s.values.tolist() for s in got] == [s.values.tolist() for s in want], order
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SourceError, match="not a text CSV file"):
        open_source(f"replay:{binary}", model.manifest)


def test_a_gzipped_table_reads_as_the_table(tmp_path, model):
    """`replay:log.csv.gz`, `train --data log.csv.gz`: a long recording kept gzipped had been
    refused as binary data. One cut short (a copy that stopped) runs up to the cut, keeps
    every result before it, and ends in one line."""
    import gzip

    packed = tmp_path / "rec.csv.gz"
    packed.write_bytes(gzip.compress(RECORDING.read_bytes()))
    got = list(open_source(f"replay:{packed}?rate=max", model.manifest))
    want = list(open_source(f"replay:{RECORDING}?rate=max", model.manifest))
    assert [s.values.tolist() for s in got] == [s.values.tolist() for s in want]
    assert load_table(packed, None, "training data").channels == CHANNELS
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(packed.read_bytes()[:20000])
    out = tmp_path / "cut.jsonl"
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{cut}?rate=max", "--sink",
                   f"jsonl:{out}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"wavedge: error: {cut}: reading stopped (Compressed "
                                            "file ended before the end-of-stream marker was "
                                            "reached)")
    kept = len(out.read_text().splitlines())
    assert kept > 500 and f"samples: {kept} in" in proc.stderr


def test_another_sample_rate_is_refused_naming_both(tmp_path, model, rows):
    fast = _logger_file(tmp_path / "fast.csv", rows, rate_hz=50.0, n=400)
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{fast}?{LOGGER_KEYS}",
                   "--sink", "null:")
    assert_one_line_error(proc, "samples at 50 Hz", "the model's rate is 10 Hz", "resample=1")
    # timestamps in milliseconds at 10 Hz: refused as 0.01 Hz, unless they are said to be ms
    ms = _logger_file(tmp_path / "ms.csv", rows, rate_hz=0.01, n=100)
    with pytest.raises(SourceError, match="samples at 0.01 Hz.*time_unit"):
        open_source(f"replay:{ms}?{LOGGER_KEYS}", model.manifest)
    samples = list(open_source(f"replay:{ms}?{LOGGER_KEYS}&time_unit=ms&rate=max",
                               model.manifest))
    assert len(samples) == 100 and samples[1].time == pytest.approx(0.1)
    # a stated rate without timestamps is checked too
    six = _write(tmp_path / "six.csv", None, [[r[c] for c in CHANNELS] for r in rows[:50]])
    with pytest.raises(SourceError, match="samples at 100 Hz, the model's rate is 10 Hz"):
        open_source(f"replay:{six}?sample_rate=100", model.manifest)
    assert len(list(open_source(f"replay:{six}?sample_rate=10&rate=max", model.manifest))) == 50


def _stamped(path, rows, stamps):
    """The recording with a ``timestamp`` column written as ``stamps`` gives them."""
    return _write(path, ["timestamp", "sequence", "label", *CHANNELS],
                  [[t, r["sequence"], r["label"], *(r[c] for c in CHANNELS)]
                   for t, r in zip(stamps, rows)])


def test_date_times_and_nanoseconds_are_timestamps(tmp_path, model, rows, monkeypatch):
    """ISO 8601 date-times (with a zone, with Z, or without one as pandas writes them) and
    epoch nanoseconds (a phone's sensor logger) are timestamps: they had been no time at all,
    so a 50 Hz file ran through a 10 Hz model without a word."""
    import datetime as dt
    import time

    start = dt.datetime(2026, 3, 29, 0, 59, 59)  # 02:00 in Berlin: the clocks go forward
    at = [start + dt.timedelta(seconds=i / 50) for i in range(200)]
    for name, text in [("zone", lambda t: t.isoformat(timespec="milliseconds") + "+01:00"),
                       ("z", lambda t: t.isoformat(timespec="milliseconds") + "Z"),
                       ("pandas", lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f"))]:
        path = _stamped(tmp_path / f"{name}.csv", rows, [text(t) for t in at])
        with pytest.raises(SourceError, match="samples at 50 Hz, the model's rate is 10 Hz"):
            open_source(f"replay:{path}", model.manifest)
    # a date-time without a zone is UTC, not local time that jumps an hour at 02:00 here
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        naive = _stamped(tmp_path / "naive.csv", rows,
                         [t.strftime("%Y-%m-%dT%H:%M:%S.%f") for t in at[::5]])
        got = [s.time for s in open_source(f"replay:{naive}?rate=max", model.manifest)]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert len(got) == 40 and np.allclose(np.diff(got), 0.1)
    ns = _stamped(tmp_path / "ns.csv", rows, [str(1_796_360_400_000_000_000 + i * 100_000_000)
                                              for i in range(100)])
    with pytest.raises(SourceError, match="time_unit=s|ms|us|ns"):
        open_source(f"replay:{ns}", model.manifest)
    table = load_table(f"{ns}?time_unit=ns", CHANNELS, "recordings", model_hz=10.0)
    assert table.rate_hz == 10.0 and sum(len(r.x) for r in table.recordings) == 100


def test_results_carry_a_logs_date_times_with_time_iso(tmp_path, rows):
    """A logger's ISO 8601 times came back as epoch seconds in the results (1796360400.1),
    which a spreadsheet shows as a number and a join to the log cannot match; with
    ``time_format=iso`` a file sink writes them as date-times, the log's own at millisecond
    steps."""
    import datetime as dt

    start = dt.datetime(2026, 12, 4, 5, 0, 0)
    stamps = [(start + dt.timedelta(seconds=i / 10)).isoformat(timespec="milliseconds") + "Z"
              for i in range(30)]
    log = _stamped(tmp_path / "log.csv", rows, stamps)
    source = ("--source", f"replay:{log}?rate=max")
    jsonl = run_cli("run", BUNDLED_MODEL, *source, "--sink", "jsonl:-?time_format=iso")
    assert [json.loads(ln)["time"] for ln in jsonl.stdout.splitlines()] == stamps, jsonl.stderr
    out = tmp_path / "results.csv"
    run_cli("run", BUNDLED_MODEL, *source, "--sink", f"csv:{out}?time_format=iso&sep=;")
    got = list(csv.DictReader(out.open(), delimiter=";"))
    assert [r["time"] for r in got] == stamps and "," in got[0]["score"]  # decimal commas
    seconds = run_cli("run", BUNDLED_MODEL, *source, "--sink", "jsonl:-")  # as before
    assert json.loads(seconds.stdout.splitlines()[1])["time"] == pytest.approx(1796360400.1)
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, *source, "--sink", "csv:-?time_format=utc"),
                          "time_format= takes s (seconds", "not 'utc'")
    assert iso_time(0.000123) == "1970-01-01T00:00:00.000123Z" and iso_time(1e300) == 1e300


def test_a_live_sensors_results_carry_the_hosts_time_with_host_time(tmp_path):
    """A sensor without timestamps (a board's lines on a port, stdin) gave results without
    any time, so a service's file of them could not say when a class was predicted;
    ``host_time=1`` adds this host's clock as each result was made, in the ``time_format=`` form."""
    import subprocess
    import sys
    import time

    lines = "acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n" + "0.1,0.2,0.3,0.4,0.5,0.6\n" * 5
    out = tmp_path / "live.csv"
    before = time.time()
    for sink in ("jsonl:-?host_time=1", "jsonl:-?host_time=1&time_format=iso",
                 f"csv:{out}?host_time=1"):
        proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL,
                               "--source", "stdin:", "--sink", sink], input=lines,
                              capture_output=True, text=True, timeout=120, env=user_env())
        assert proc.returncode == 0, proc.stderr
        if sink.endswith("time_format=iso"):
            iso = [json.loads(ln)["host_time"] for ln in proc.stdout.splitlines()]
        elif sink.startswith("jsonl"):
            got = [json.loads(ln) for ln in proc.stdout.splitlines()]
    after = time.time()
    assert len(got) == 5 and "time" not in got[0]
    assert before <= got[0]["host_time"] <= got[-1]["host_time"] <= after
    assert all(t.endswith("Z") and before - 1 <= _seconds_of(t) <= after for t in iso), iso
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:3] == ["step", "host_time", "class_id"] and len(rows) == 5
    assert before <= float(rows[0]["host_time"]) <= after
    # appending without it to the file written with it (or the other way) says which it was
    kept = out.read_text()
    for url, was in ((f"csv:{out}?append=1", 1), (f"csv:{tmp_path}/plain.csv?append=1&"
                                                  "host_time=1", 0)):
        if was == 0:
            run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max&limit=2", "--sink",
                    f"csv:{tmp_path}/plain.csv")
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                      "replay:?rate=max&limit=2", "--sink", url),
                              f"the file was written with host_time={was}; give the same")
    assert out.read_text() == kept


def _seconds_of(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_time_column_of_times_it_cannot_read_is_refused(tmp_path, model, rows):
    """A time of day or a date in another order had left the timestamps unread without a
    word, and the rate unchecked; the first good row's time decides, a later one that is
    not a time is that sample's fault."""
    for stamp in ("05:00:00.100", "04.12.2026 05:00:00"):
        path = _stamped(tmp_path / "clock.csv", rows, [stamp] * 50)
        proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{path}", "--sink", "null:")
        assert_one_line_error(proc, f"column 'timestamp' holds '{stamp}', not a timestamp",
                              "time_unit=s|ms|us|ns", "time=NAME, or none with time=")
        with pytest.raises(InputError, match="not a timestamp"):
            load_table(path, CHANNELS, "training data")
        assert len(list(open_source(f"replay:{path}?time=&rate=max", model.manifest))) == 50
    # a bad first row (its time a word) and an empty time leave it to the next row
    late = _stamped(tmp_path / "late.csv", rows,
                    ["junk", ""] + [f"{i / 10:.1f}" for i in range(2, 50)])
    late.write_text(late.read_text().replace(",-0.740653,", ",x,", 1))
    assert len(list(open_source(f"replay:{late}?rate=max", model.manifest))) == 50


def test_a_time_of_day_beside_a_date_column_is_a_timestamp(tmp_path, model, rows):
    """Excel and many data loggers write the date and the time of day in two columns
    (`date,time,...`): the time had been refused as a time of day, and the date taken as a
    channel of a new model. The two are one timestamp, across midnight too; the date is no
    channel; `date=NAME` names another column; a date in another order is refused naming
    both columns."""
    import datetime as dt

    at = [dt.datetime(2026, 12, 3, 23, 59, 58) + dt.timedelta(seconds=i / 10) for i in range(60)]
    path = _write(tmp_path / "dt.csv", ["date", "time", "sequence", "label", *CHANNELS],
                  [[t.date().isoformat(), t.strftime("%H:%M:%S.%f")[:-3], r["sequence"],
                    r["label"], *(r[c] for c in CHANNELS)] for t, r in zip(at, rows)])
    got = list(open_source(f"replay:{path}?rate=max", model.manifest))
    assert len(got) == 60 and np.allclose(np.diff([s.time for s in got]), 0.1)
    assert got[0].time == dt.datetime(2026, 12, 3, 23, 59, 58, tzinfo=dt.timezone.utc).timestamp()
    table = load_table(path, None, "training data", model_hz=10.0)
    assert table.channels == CHANNELS and table.rate_hz == 10.0
    day = tmp_path / "day.csv"
    day.write_text(path.read_text().replace("date,", "Day,", 1))
    assert load_table(f"{day}?date=Day", CHANNELS, "training data").rate_hz == 10.0
    with pytest.raises(InputError, match="column 'time' holds '23:59:58.000', not a timestamp"):
        load_table(day, CHANNELS, "training data")  # the date's column not named: no date
    day.write_text(path.read_text().replace("2026-12-03,", "03.12.2026,"))
    with pytest.raises(InputError, match=r"columns 'date' and 'time' hold '03\.12\.2026 "
                                         r"23:59:58\.000', not a timestamp"):
        load_table(day, CHANNELS, "training data")


def test_a_json_lines_file_is_a_table(tmp_path, accel):
    """A `.jsonl` file (what a script logging a sensor with `json.dumps` per line leaves) is
    a table as its CSV is: channels from the first object's keys, time, sequence and label
    by theirs; a bad line named by its own line number."""
    csv_table = load_table(f"{accel}?sequence=session", None, "training data")
    rows = list(csv.DictReader(accel.open()))
    path = tmp_path / "accel.jsonl"
    path.write_text("".join(json.dumps({"session": r["session"], "timestamp": float(r["timestamp"]),
                                        "ax": float(r["ax"]), "ay": float(r["ay"]),
                                        "az": float(r["az"]), "label": r["label"]}) + "\n"
                            for r in rows))
    table = load_table(f"{path}?sequence=session", None, "training data")
    assert table.channels == ("ax", "ay", "az") and table.rate_hz == csv_table.rate_hz == 50.0
    assert [(r.key, r.truth[-1], r.x.tolist()) for r in table.recordings] == \
        [(r.key, r.truth[-1], r.x.tolist()) for r in csv_table.recordings]
    lines = path.read_text().splitlines()
    lines[6] = lines[6].replace('"ay": ', '"ay": "x", "was": ')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"accel\.jsonl, line 7: not_numeric"):
        load_table(f"{path}?sequence=session", None, "training data")


def test_resample_is_done_properly_and_said_in_the_summary(tmp_path, model, rows):
    fast = _logger_file(tmp_path / "fast.csv", rows, rate_hz=50.0, n=500)
    source = open_source(f"replay:{fast}?{LOGGER_KEYS}&resample=1&rate=max", model.manifest)
    summary = run(model.stream(), source, open_sink("null:", model.manifest))
    assert summary.error is None
    assert 95 <= summary.samples <= 105  # 500 samples at 50 Hz are 10 s: about 100 at 10 Hz
    # the counts are the run's: the rows read at open to check the file had been counted too
    assert any(f"resampled 50 Hz -> 10 Hz (box average per output period going down, linear "
               f"interpolation going up): 500 samples in, {summary.samples} out" in line
               for line in summary.lines()), summary.lines()


def test_timestamps_that_go_back_within_a_recording_are_resampled_anew(tmp_path, model):
    """A logger that restarts under the same session starts its clock again: the samples
    after that had waited for an output time they never reached, and were lost without a
    word (100 in, 25 out). Each part now resamples as a file of its own would, and the
    summary says the clock went back."""
    rows = RECORDING.read_text().splitlines()
    half = [f"{i * 0.05:.2f},{r}" for i, r in enumerate(rows[1:51])]  # 20 Hz
    again = [f"{i * 0.05:.2f},{r}" for i, r in enumerate(rows[51:101])]
    for name, body in (("both", half + again), ("one", half), ("two", again)):
        (tmp_path / f"{name}.csv").write_text("\n".join([f"t,{rows[0]}", *body]) + "\n")

    def resampled(name):
        source = open_source(f"replay:{tmp_path / name}.csv?resample=1&time=t&rate=max",
                             model.manifest)
        return [(s.time, *s.values) for s in source], source.notes()

    both, notes = resampled("both")
    assert both == resampled("one")[0] + resampled("two")[0] and len(both) == 50
    assert "100 samples in, 50 out; the timestamps went back 1 time(s)" in notes[0], notes


def test_a_long_gap_is_left_a_gap_and_a_short_one_filled(tmp_path, model):
    """A logger paused for an hour had its hour filled with interpolated samples (36 000 at
    10 Hz from 100 in), and a gap:S reset policy never saw the gap. A break longer than four
    input periods is now left as it is; one missing sample is still filled."""
    rows = RECORDING.read_text().splitlines()[1:101]

    def resampled(times):
        text = "\n".join([f"t,{RECORDING.read_text().splitlines()[0]}",
                          *(f"{t:.2f},{r}" for t, r in zip(times, rows))]) + "\n"
        (tmp_path / "g.csv").write_text(text)
        source = open_source(f"replay:{tmp_path / 'g.csv'}?resample=1&time=t&rate=max",
                             model.manifest)
        return [s.time for s in source], source.notes()[0]

    steady = [i * 0.05 for i in range(100)]  # 20 Hz
    hour = steady[:50] + [3600 + t for t in steady[:50]]
    got, note = resampled(hour)
    assert len(got) == 50 and got[25] == pytest.approx(3600.0), got[20:30]
    assert "1 gap(s) longer than 0.2 s" in note, note
    one_missing = steady[:50] + steady[51:] + [5.0]  # a sample lost: 0.1 s between two
    got, note = resampled(one_missing)
    assert np.allclose(np.diff(got), 0.1) and "gap" not in note, (got, note)


def test_a_bad_input_is_left_out_of_the_resampling_and_passed_on_in_its_place(tmp_path,
                                                                               model):
    """A bad row had gone to the stream at once, ahead of the outputs before it in time
    (stepped out of order under --policy hold); a NaN had been averaged in, spoiling an output
    period; and without timestamps a bad row had not taken its period, so every later
    output came one input period early. The outputs now are those of the file without the
    bad rows, and each bad row comes between the outputs around it."""
    head, *rows = RECORDING.read_text().splitlines()
    rows = rows[:100]  # read as 50 Hz: 2 s, 20 outputs at 10 Hz
    bad = {23: "oops", 61: "nan"}  # not_numeric and non_finite, as acc_x
    spoilt = [r if i not in bad else re.sub(r"^([^,]*,[^,]*,)[^,]*", rf"\g<1>{bad[i]}", r)
              for i, r in enumerate(rows)]

    def read(name, lines, keys):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return list(open_source(f"replay:{tmp_path / name}?resample=1&rate=max&{keys}",
                                model.manifest))

    timed = [f"{i * 0.02:.2f},{r}" for i, r in enumerate(rows)]
    clean = read("clean.csv", [f"t,{head}", *(r for i, r in enumerate(timed) if i not in bad)],
                 "time=t")
    for got in (read("timed.csv", [f"t,{head}", *(f"{i * 0.02:.2f},{r}" for i, r in
                                                 enumerate(spoilt))], "time=t"),
                read("untimed.csv", [head, *spoilt], "sample_rate=50")):
        good = [s.problem is None and bool(np.isfinite(s.values).all()) for s in got]
        assert [(s.time, *s.values) for s, ok in zip(got, good) if ok] == \
            [(s.time, *s.values) for s in clean]
        at = [i for i, ok in enumerate(good) if not ok]
        # each between the outputs around its time: 0.46 s after 5 outputs (0 to 0.4 s),
        # 1.22 s after 13 (0 to 1.2 s) and the first bad row
        assert at == [5, 14], [(s.time, s.problem) for s in got]
        assert got[at[0]].problem == "not_numeric" and np.isnan(got[at[1]].values[0])


def test_a_row_whose_time_is_not_a_number_is_a_bad_sample_when_resampling(tmp_path, model):
    """A timestamped row whose time field did not parse was placed at its row count over the
    rate (0.8 s for row 40 of a file whose clock reads 1000 s): the clock "went back" there
    and jumped on again, splitting one recording in three, and the summary said the clock
    went back once and broke off once. It is now a bad sample (not_numeric, "its time is not
    a number") in its place, and the outputs are those of the file without it."""
    head, *rows = RECORDING.read_text().splitlines()
    lines = [f"{1000 + i * 0.02:.2f},{r}" for i, r in enumerate(rows[:100])]

    def read(name, body):
        (tmp_path / name).write_text("\n".join([f"t,{head}", *body]) + "\n")
        source = open_source(f"replay:{tmp_path / name}?resample=1&rate=max&time=t",
                             model.manifest)
        return list(source), source.notes()[0]

    clean, _ = read("clean.csv", lines[:40] + lines[41:])
    got, note = read("x.csv", lines[:40] + ["x," + lines[40].split(",", 1)[1]] + lines[41:])
    bad = [s for s in got if s.problem is not None]
    assert [(s.problem, s.detail) for s in bad] == [("not_numeric", "its time is not a number")]
    assert [(s.time, *s.values) for s in got if s.problem is None] == \
        [(s.time, *s.values) for s in clean]
    assert "went back" not in note and "gap" not in note, note


def test_the_resampler_keeps_a_slow_signal_and_removes_a_fast_one():
    t = np.arange(500) / 50.0
    slow = np.sin(2 * np.pi * 0.5 * t)
    fast = np.sin(2 * np.pi * 10.0 * t)  # the 10 Hz model's Nyquist rate is 5 Hz

    def resample(x):
        r = Resampler(10.0)
        r.source_hz = 50.0
        out = list(r.run(Sample(np.array([v], np.float32), time=ti, sequence=0)
                         for ti, v in zip(t, x)))
        return np.array([s.time for s in out]), np.array([s.values[0] for s in out])

    times, ys = resample(slow)
    assert np.allclose(np.diff(times), 0.1)
    assert np.max(np.abs(ys - np.sin(2 * np.pi * 0.5 * times))) < 0.05
    _, ys = resample(fast)
    assert np.max(np.abs(ys)) < 0.05  # averaged away, not aliased into a slow wave


def test_result_records_carry_the_samples_time(tmp_path, model, rows):
    path = _logger_file(tmp_path / "logger.csv", rows, n=40)
    for sink in ("jsonl", "csv"):
        out = tmp_path / f"out.{sink}"
        source = open_source(f"replay:{path}?rate=max&{LOGGER_KEYS}", model.manifest)
        run(model.stream(), source, open_sink(f"{sink}:{out}", model.manifest))
        if sink == "jsonl":
            times = [json.loads(line)["time"] for line in out.read_text().splitlines()]
        else:
            with open(out) as fh:
                times = [float(r["time"]) for r in csv.DictReader(fh)]
        assert times == pytest.approx([i / 10 for i in range(40)])


def test_reset_policies_parse_describe_and_split():
    assert ResetPolicy.parse("never") == ResetPolicy()
    p = ResetPolicy.parse("recording,every:4,gap:1.5")
    assert p.text() == "recording,every:4,gap:1.5" and ResetPolicy.parse(p.text()) == p
    assert "every 4 samples" in p.describe()
    for bad in ("sometimes", "every:0", "gap:-1", "every:x"):
        with pytest.raises(InputError, match="is not a reset policy"):
            ResetPolicy.parse(bad)
    # each had taken one of its parts without a word (never ignored, the last every kept)
    for bad, why in (("never,every:5", "never with another policy"),
                     ("every:5,every:10", "every given twice")):
        with pytest.raises(InputError, match=rf"^reset policy: '{bad}' contradicts itself "
                                             rf"\({why}\)$"):
            ResetPolicy.parse(bad)
    assert ResetPolicy.parse("recording, recording") == ResetPolicy(recording=True)
    pieces = list(ResetPolicy(recording=True, every=4).pieces([6, 3]))
    assert pieces == [(0, 0, 4, False), (0, 4, 6, True), (1, 0, 3, True)]
    assert list(ResetPolicy().pieces([6, 3])) == [(0, 0, 6, False), (1, 0, 3, False)]


def test_the_resetter_on_a_live_stream():
    r = Resetter(ResetPolicy(recording=True, gap_s=1.0))
    due = [r.due(seq, t) for seq, t in [("a", 0.0), ("a", 0.1), ("b", 0.2), ("b", 2.0),
                                         ("b", 2.1)]]
    assert due == [False, False, True, True, False] and r.resets == 2
    r = Resetter(ResetPolicy(every=2))
    assert [r.due(None, 0.0) for _ in range(5)] == [False, False, True, False, True]


def test_run_applies_the_policy_and_reports_it():
    manifest = load_manifest(BUNDLED_MODEL)
    assert manifest.reset_policy == ResetPolicy()  # not stated: never, as before
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                   "--sink", "null:", "--reset", "recording")
    assert proc.returncode == 0, proc.stderr
    assert "resets: 39 (state reset at each recording boundary)" in proc.stderr
    # from reset at every recording: the checkpoint's own test accuracy, 39 of 40
    acc = manifest.raw["training"]["test_accuracy"]
    assert f"{round(acc * 40)}/40" in proc.stderr
    proc = run_cli("run", BUNDLED_MODEL, "--reset", "sometimes", "--sink", "null:")
    assert_one_line_error(proc, "'sometimes' is not a reset policy")


def test_a_manifest_with_a_bad_reset_policy_is_refused(tmp_path):
    import shutil

    shutil.copytree(BUNDLED_MODEL, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "manifest.json").read_text())
    raw["reset"] = {"policy": "every:0"}
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="manifest.json: .*every:0"):
        load_manifest(tmp_path / "m")


@needs_torch
def test_the_check_stream_resets_where_the_policy_says():
    from wavedge.export.check import check_stream

    recs = [{"x": np.full((n, 1), i, np.float32)} for i, n in enumerate((40, 70, 20))]
    never = check_stream(recs, 200, 32)
    assert never.starts == (0,)
    each = check_stream(recs, 200, 32, ResetPolicy(recording=True))
    # recordings cut to whole chunks (40 -> 32, 70 -> 64, 20 dropped), a reset at each
    assert all(s % 32 == 0 for s in each.starts) and len(each.starts) > 2
    for a, b in zip(each.starts, [*each.starts[1:], 224]):
        assert len(set(each["x"][a:b, 0].tolist())) == 1  # one recording per run


@needs_torch
def test_recordings_all_shorter_than_a_chunk_are_refused_naming_a_chunk_that_fits():
    """Under a policy that resets, every held-out recording shorter than the chunk: the
    export had ended in min()'s ValueError traceback instead of this line."""
    from wavedge.errors import ExportError
    from wavedge.export.check import check_stream

    recs = [{"x": np.zeros((n, 1), np.float32)} for n in (20, 19, 21)]
    with pytest.raises(ExportError, match=r"shorter than a chunk of 32.*shortest has 19 "
                                          r"samples: --chunk 19\)"):
        check_stream(recs, 200, 32, ResetPolicy(recording=True))
    assert len(check_stream(recs, 200, 19, ResetPolicy(recording=True))["x"]) == 209


@pytest.fixture(scope="module")
def accel(tmp_path_factory):
    """Unequal recordings at 50 Hz of a 3-axis logger, two separable activities."""
    rng = np.random.default_rng(0)
    out, rows = tmp_path_factory.mktemp("accel"), []
    for session in range(16):
        label = ("still", "shaking")[session % 2]
        n = int(rng.integers(60, 120))
        t = np.arange(n) / 50.0
        amp = 0.0 if label == "still" else 2.0
        for i in range(n):
            rows.append([f"{t[i]:.2f}", f"s{session}", label,
                         *(f"{amp * np.sin(2 * np.pi * 3 * t[i] + k) + rng.normal(0, 0.1):.3f}"
                           for k in range(3))])
    return _write(out / "accel.csv", ["timestamp", "session", "label", "ax", "ay", "az"], rows)


def _one_file_each(accel, root, by_folder):
    """The accel table as one file per recording (``s3.csv``), in a folder per label without a
    label column when ``by_folder``, else side by side with theirs."""
    rows = list(csv.reader(accel.open()))
    for r in rows[1:]:
        folder = root / r[2] if by_folder else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{r[1]}.csv"
        fields = [r[0], *r[3:]] if by_folder else [r[0], r[2], *r[3:]]
        head = ["timestamp", "ax", "ay", "az"] if by_folder else ["timestamp", "label", "ax",
                                                                   "ay", "az"]
        with path.open("a", newline="") as fh:
            if fh.tell() == 0:
                csv.writer(fh).writerow(head)
            csv.writer(fh).writerow(fields)
    return root


def test_a_folder_of_recordings_is_a_table(accel, tmp_path):
    """Recordings kept one per file, side by side or in a folder per label (what a phone
    logger or Edge Impulse's export leaves), had to be joined into one file with a sequence
    column first. A folder is a table: each file a recording, labelled by its label column
    or, with label=@folder, by its folder's name."""
    whole = load_table(f"{accel}?sequence=session", None, "training data")
    want = {str(r.key): r.x.tolist() for r in whole.recordings}
    for by_folder in (False, True):
        root = _one_file_each(accel, tmp_path / f"f{by_folder}", by_folder)
        table = load_table(f"{root}?label=@folder" if by_folder else root, None, "training data")
        assert table.channels == ("ax", "ay", "az") and table.rate_hz == 50.0
        got = {str(r.key).rsplit("/", 1)[-1].removesuffix(".csv"): r for r in table.recordings}
        assert {k: r.x.tolist() for k, r in got.items()} == want
        assert {k: r.truth[-1] for k, r in got.items()} == \
            {str(r.key): r.truth[-1] for r in whole.recordings}
    bad = tmp_path / "fFalse" / "s5.csv"
    bad.write_text(bad.read_text().replace("\n", "\n0.5,still,x,1,2\n", 1))
    with pytest.raises(InputError, match=r"s5\.csv, line 2: not_numeric"):
        load_table(tmp_path / "fFalse", None, "training data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="a folder with no table file"):
        load_table(tmp_path / "empty", None, "training data")
    with pytest.raises(InputError, match="label=@folder takes each file's label from its folder"):
        load_table(f"{tmp_path / 'fFalse'}?label=@folder", None, "training data")
    # a glob (quoted for the shell) is a table as a folder is, of the files it matches
    by_glob = load_table(f"{tmp_path / 'fTrue'}/*/s*.csv?label=@folder", None, "training data")
    by_folder = load_table(f"{tmp_path / 'fTrue'}?label=@folder", None, "training data")
    assert [(r.key, r.truth[-1], r.x.tolist()) for r in by_glob.recordings] == \
        [(r.key, r.truth[-1], r.x.tolist()) for r in by_folder.recordings]
    some = load_table(tmp_path / "fFalse" / "s1[0-9].csv", None, "training data")  # ? is a key's
    assert [r.key for r in some.recordings] == [f"s1{k}.csv" for k in range(6)]
    with pytest.raises(InputError, match=r"s\*\.tsv: no file matches"):
        load_table(tmp_path / "fFalse" / "s*.tsv", None, "training data")
    # the glob unquoted: the shell gave --data its first file and left the rest over
    files = sorted(map(str, (tmp_path / "fFalse").glob("s*.csv")))
    proc = run_cli("train", "--data", *files, "--out", tmp_path / "x.pt")
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].endswith(
        "a glob the shell expanded? quote it, 'logs/*.csv', or give their folder)")


def test_a_folder_replays_as_its_recordings_in_name_order(tmp_path, model, rows):
    """`replay:FOLDER`: each file a recording, in name order, each scored at its end as the
    same recordings in one file are."""
    folder = tmp_path / "recordings"
    for r in rows[:1000]:
        path = folder / r["label"] / f"{int(r['sequence']):03d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a") as fh:
            fh.write(",".join(CHANNELS) + "\n" if new else "")
            fh.write(",".join(r[c] for c in CHANNELS) + "\n")
    order = sorted(folder.rglob("*.csv"))
    flat = tmp_path / "flat.csv"
    flat.write_text("sequence,label," + ",".join(CHANNELS) + "\n" + "".join(
        f"{f.stem},{f.parent.name},{line}\n" for f in order
        for line in f.read_text().splitlines()[1:]))
    said = {}
    for url in (f"replay:{folder}?label=@folder&rate=max", f"replay:{flat}?rate=max",
                f"replay:{folder}/*/*.csv?label=@folder&rate=max"):
        summary = run(model.stream(), open_source(url, model.manifest),
                      open_sink("null:", model.manifest), resets=ResetPolicy(recording=True))
        said[url] = [ln for ln in summary.lines() if "agreement" in ln or "each recording" in ln]
    first, second, third = said.values()
    assert first == second == third and len(first) == 3, said


@needs_torch
@pytest.mark.parametrize("glob", ["", "/*/*.csv"])
def test_a_folder_trains_and_exports_and_its_change_is_seen(accel, tmp_path, glob):
    root = _one_file_each(accel, tmp_path / "data", True)
    ckpt = tmp_path / "a.pt"
    proc = run_cli("train", "--data", f"{root}{glob}?label=@folder", "--arch", "irnn",
                   "--out", ckpt, "--epochs", "2", "--quant-aware-epochs", "0", "--config",
                   '{"hidden_size": 16}', "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", ckpt, "--out", tmp_path / "m", "--recording")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m" / "recording.csv").is_file()
    (root / "still" / "s0.csv").unlink()  # a recording taken out since
    proc = run_cli("export", ckpt, "--out", tmp_path / "m2")
    assert_one_line_error(proc, "has changed since", "--data FILE")


@needs_torch
def test_train_on_own_recordings_and_export_with_no_code(accel, tmp_path):
    ckpt = tmp_path / "a.pt"
    proc = run_cli("train", "--data", str(accel), "--arch", "irnn", "--out", ckpt,
                   "--epochs", "3", "--quant-aware-epochs", "0", "--reset", "recording",
                   "--config", '{"hidden_size": 16}', "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "4 held-out recordings" in proc.stdout and "reset policy recording" in proc.stdout
    from wavedge.models.checkpoint import load_checkpoint

    meta = load_checkpoint(ckpt).meta
    assert meta["channels"] == ["ax", "ay", "az"] and meta["sample_rate_hz"] == 50.0
    assert meta["labels"] == ["shaking", "still"] and len(meta["data"]["validation"]) == 4
    out = tmp_path / "m"
    proc = run_cli("export", ckpt, "--out", out)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["reset"]["policy"] == "recording"
    assert raw["quality"]["task"].startswith("accel.csv: 4 recording(s) held out")
    assert "state reset at each recording boundary" in raw["check"]["data"]
    # the data changed since training: refused, with the way out
    accel2 = tmp_path / "accel.csv"
    accel2.write_text(accel.read_text())
    meta_path = accel
    original = meta_path.read_text()
    try:
        meta_path.write_text(original + "9.99,s99,still,0,0,0\n")
        proc = run_cli("export", ckpt, "--out", tmp_path / "m2")
        assert_one_line_error(proc, "has changed since", "--data FILE")
        proc = run_cli("export", ckpt, "--out", tmp_path / "m2", "--data", str(accel2))
        assert proc.returncode == 0, proc.stderr
    finally:
        meta_path.write_text(original)
    # the gate scores each recording's last prediction: one whose label changes is refused
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(original.replace("0.00,s1,shaking,", "0.00,s1,still,"))
    proc = run_cli("export", ckpt, "--out", tmp_path / "m3", "--data", str(mixed))
    assert_one_line_error(proc, "recordings: ", "mixed.csv: the label changes within 1 of 16 "
                                "recordings (recording s1: still, shaking)")


@needs_torch
def test_training_data_mistakes_are_one_line(accel, tmp_path):
    nolabel = _write(tmp_path / "n.csv", ["session", "ax"], [["a", "1"], ["b", "2"]])
    proc = run_cli("train", "--data", str(nolabel), "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "no label column 'label'", "?label=COLUMN")
    np.save(tmp_path / "X.npy", np.zeros((4, 20, 3), np.float32))  # labels come beside it
    proc = run_cli("train", "--data", tmp_path / "X.npy", "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "X.npy: no labels; give one per recording with "
                                "?labels=LABELS.npy")
    proc = run_cli("train", "--data", str(accel), "--task", "digits", "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "not both")
    proc = run_cli("train", "--data", f"{accel}?label=nope", "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "no column 'nope'")
    # the file as one recording, and a label that changes within a session: the last row's
    # label had been the one example's ("one class only")
    proc = run_cli("train", "--data", f"{accel}?sequence=&columns=ax,ay,az", "--out",
                   tmp_path / "x.pt")
    assert_one_line_error(proc, "accel.csv: the table is one recording (no sequence, session or "
                                "recording column; name one with ?sequence=COLUMN), and its "
                                "label changes within it (still, shaking)")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(accel.read_text().replace("0.00,s1,shaking,", "0.00,s1,still,"))
    proc = run_cli("train", "--data", str(mixed), "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "mixed.csv: the label changes within 1 of 16 recordings "
                                "(recording s1: still, shaking)")
    # a seed numpy refuses had been its traceback; a window that equal recordings ignored
    proc = run_cli("train", "--data", str(accel), "--seed", "-1", "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "--seed must be a whole number, 0 or more, got -1")
    proc = run_cli("train", "--task", "digits", "--window", "10", "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "window 10: the training recordings are all 64 samples long")
    # a logger that left two sessions unlabelled: they had been a class named ""
    blank = tmp_path / "blank.csv"
    blank.write_text(re.sub(r",(s[13]),(still|shaking),", r",\1,,", accel.read_text()))
    proc = run_cli("train", "--data", str(blank), "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "blank.csv: 2 of 16 recordings have an empty label at their "
                                "last sample (label of recording s1, s3); label them or leave "
                                "them out")


@needs_torch
def test_a_clock_among_a_new_models_channels_is_refused(accel, tmp_path):
    """phyphox names its clock "Time (s)", and a phone logger writes "seconds_elapsed" beside
    its "time": neither is a time column by name, so each had become a channel, and the model
    learned the time of each sample, not the sensor. A column that rises at every step of
    every recording is refused as a channel taken from the header; named as the time, or left
    out of a column map, the same file trains."""
    from wavedge.models.data import recordings_dataset

    rows = list(csv.reader(accel.open()))
    phyphox = _write(tmp_path / "phyphox.csv", ["Time (s)", *rows[0][1:]], rows[1:])
    proc = run_cli("train", "--data", str(phyphox), "--out", tmp_path / "x.pt")
    assert_one_line_error(proc, "column 'Time (s)' rises at every step of every recording",
                          "?time=Time (s)")
    assert not (tmp_path / "x.pt").exists()
    named = recordings_dataset(f"{phyphox}?time=Time (s)")
    listed = recordings_dataset(f"{phyphox}?columns=ax,ay,az")
    plain = recordings_dataset(str(accel))
    assert named.x_train[0].shape[-1] == listed.x_train[0].shape[-1] == 3
    assert np.array_equal(named.x_train[0], plain.x_train[0])


def test_a_table_is_read_whole_with_its_rate(accel):
    table = load_table(f"{accel}?sequence=session", None, "training data")
    assert table.channels == ("ax", "ay", "az") and table.rate_hz == 50.0
    assert len(table.recordings) == 16
    assert len({len(r.x) for r in table.recordings}) > 1
    with pytest.raises(InputError, match="samples at 50 Hz, the model's rate is 10 Hz"):
        load_table(accel, ("ax", "ay", "az"), "recordings", model_hz=10.0)


def test_a_table_from_npy_arrays_with_labels(tmp_path):
    """`--data X.npy?labels=y.npy&columns=ax,ay,az`: the numpy user's recordings and labels."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 40, 3)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", np.array(["a", "b"] * 3))
    table = load_table(f"{tmp_path / 'X.npy'}?labels=y.npy&columns=ax,ay,az", None, "data")
    assert table.channels == ("ax", "ay", "az") and len(table.recordings) == 6
    assert [r.truth[-1] for r in table.recordings] == ["a", "b"] * 3
    assert np.array_equal(table.recordings[2].x, x[2])
    np.save(tmp_path / "bad.npy", np.array([1, 2]))
    with pytest.raises(InputError, match="expected 6 integer or string labels"):
        load_table(f"{tmp_path / 'X.npy'}?labels=bad.npy", None, "data")
    assert load_table(tmp_path / "X.npy", None, "data").channels == ("x0", "x1", "x2")


def test_a_new_models_channels_from_name_value_lines(tmp_path):
    """A Serial Plotter log (`cat /dev/ttyACM0 > log.txt`) trains as a table: its names are
    the channels, but for the sequence, time and label."""
    log = tmp_path / "log.txt"
    log.write_text("".join(f"time:{i / 50:.2f} session:{i // 60} ax:{i % 7}\tay:1,5 "
                           f"label:{'ab'[i // 60 % 2]}\n" for i in range(240)))
    table = load_table(f"{log}?sep=;", None, "training data")
    assert table.channels == ("ax", "ay") and table.rate_hz == 50.0
    # a time with a decimal comma, as the values have: read as they are
    comma = tmp_path / "comma.txt"
    comma.write_text(re.sub(r"time:(\d+)\.", r"time:\1,", log.read_text()))
    read = load_table(f"{comma}?sep=;", None, "training data")
    assert read.rate_hz == 50.0 and all(r.times is not None for r in read.recordings)
    assert [r.key for r in table.recordings] == ["0", "1", "2", "3"]
    assert table.recordings[1].x[3].tolist() == [(63 % 7), 1.5]


@pytest.mark.parametrize("sep", [";", "\t", " "])
def test_a_new_models_table_of_another_separator_is_named_as_such(tmp_path, sep):
    """`train --data` takes its channels from the header: a ';' file had given one channel
    named 'label;acc_x;...' and failed later on its first row as 'not_numeric'."""
    (tmp_path / "t.csv").write_text(sep.join(["label", "acc_x", "acc_y"]) + "\nwalking"
                                    + sep + "1,5" + sep + "2,5\n")
    with pytest.raises(InputError, match=re.escape(f"is the file {sep!r}-separated")):
        header_channels(tmp_path / "t.csv", Columns(), "training data")
    name = {";": ";", "\t": "tab", " ": "space"}[sep]
    table = load_table(f"{tmp_path / 't.csv'}?sep={name}", None, "training data")
    assert table.channels == ("acc_x", "acc_y") and table.recordings[0].x.tolist() == [[1.5, 2.5]]


def test_a_json_line_nested_deeper_than_it_can_be_read_is_one_bad_line(monkeypatch):
    """An object nested 1200 deep (a garbled or hostile message): from Python 3.12 the JSON
    parser reads it and the flattening into dotted keys then runs out of recursion (Python
    3.11's parser refuses it first). It is one bad line, and the next object a sample; on
    3.11 the flattening's failure is stood in for."""
    import sys

    from wavedge import recordings

    deep = '{"a": ' + '{"x": ' * 1200 + "1" + "}" * 1200 + ', "b": 2}'
    if sys.version_info < (3, 12):  # the flattening's failure, stood in for
        deep = '{"a": {"x": 1}, "b": 2}'
        flat = recordings._flat

        def runs_out(obj, prefix=""):
            if isinstance(obj.get("a"), dict):
                raise RecursionError
            return flat(obj, prefix)
        monkeypatch.setattr(recordings, "_flat", runs_out)
    got = list(recordings.Messages(("a", "b"), Columns()).wrap([deep, '{"a": 1, "b": 2}'], True))
    assert got == [deep, "a,b", "1,2"]
