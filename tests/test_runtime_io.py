"""Sources and sinks by URL, the `wavedge run` loop and its CLI: real files, real pipes, a real
pseudo-terminal with pyserial on it, a real TCP socket; no torch on the board side."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import BUNDLED_MODEL, ROOT, assert_one_line_error, run_cli, user_env, \
    sigint_inside_a_lock_wait
from wavedge.errors import InputError, LinkError, SinkError
from wavedge.manifest import Manifest
from wavedge.runtime import SourceError, load_model, open_sink, open_source, register_source
from wavedge.runtime.loop import _latency, run
from wavedge.runtime.sources import Sample

RECORDING = BUNDLED_MODEL / "recording.csv"


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_MODEL)


def _collect(url, model):
    return list(open_source(url, model.manifest))


def test_replay_csv_with_header_carries_truth(model):
    samples = _collect(f"replay:{RECORDING}?rate=max&limit=250", model)
    assert len(samples) == 250
    assert samples[0].truth in model.labels and samples[0].sequence == "0"
    assert samples[-1].sequence == "2"
    assert samples[0].values.shape == (6,) and samples[0].problem is None


def test_replay_headerless_csv_and_npy_give_the_same_samples(model, tmp_path):
    rows = _collect(f"replay:{RECORDING}?rate=max&limit=30", model)
    x = np.stack([s.values for s in rows])
    (tmp_path / "plain.csv").write_text("\n".join(",".join(map(str, r)) for r in x) + "\n")
    np.save(tmp_path / "rec.npy", x.reshape(3, 10, 6))
    for name in ("plain.csv", "rec.npy"):
        got = np.stack([s.values for s in _collect(f"replay:{tmp_path / name}?rate=max", model)])
        np.testing.assert_allclose(got, x, rtol=1e-6)


def test_replay_paces_at_the_requested_rate(model):
    t0 = time.perf_counter()
    n = len(_collect(f"replay:{RECORDING}?rate=200&limit=41", model))
    elapsed = time.perf_counter() - t0
    assert n == 41 and elapsed >= 0.19  # 40 periods of 5 ms at least; never early


def test_replay_loop_repeats(model):
    assert len(_collect(f"replay:{RECORDING}?rate=max&loop=3&limit=9000", model)) == 9000


@pytest.mark.parametrize("url,message", [
    ("replay:/nonexistent.csv", "no such file"),
    # a folder is a table of its files (one per recording): one with none is refused
    ("replay:{dir}", "{dir}: a folder with no table file"),
    ("replay:{rec}?speed=2", "unknown parameter(s) speed"),
    ("replay:{rec}?rate=fast", "rate=fast"),
    ("replay:{rec}?rate=max&limit=5&rate=10", "rate given twice"),  # the last had won
    ("nosuch:thing", "unknown source scheme 'nosuch'"),
    ("recording.csv", "is not a URL"),
    # the system's words, not pyserial's message that repeats the port and a nested errno
    ("serial:///dev/nonexistent-tty", "serial port /dev/nonexistent-tty: cannot open (No such "
                                      "file or directory)"),
    # pyserial's socket:// says "Could not open port socket://...: [Errno 111] ..." around it
    ("serial://socket://127.0.0.1:1", "serial port socket://127.0.0.1:1: cannot open (Connection "
                                      "refused)"),
    ("link:socket://127.0.0.1:1", "link socket://127.0.0.1:1: cannot open (Connection refused)"),
])
def test_bad_source_urls_are_clear_errors(model, tmp_path, url, message):
    message = message.format(dir=tmp_path)
    with pytest.raises((SourceError, InputError, LinkError), match=message.replace("(", r"\(")
                       .replace(")", r"\)")):
        open_source(url.format(rec=RECORDING, dir=tmp_path), model.manifest)


def test_replay_without_a_path_replays_the_model_directorys_own_recording(model):
    """`replay:?rate=max` had been ". is a directory, not a file"."""
    own, named = (_collect(url, model) for url in ("replay:?rate=max&limit=5",
                                                   f"replay:{RECORDING}?rate=max&limit=5"))
    assert np.array_equal([s.values for s in own], [s.values for s in named])
    bare = Manifest(model.manifest.directory, {k: v for k, v in model.manifest.raw.items()
                                               if k != "recording"})
    with pytest.raises(SourceError, match=r"^replay:\?rate=max: .* has no recording of its "
                                          r"own \(`wavedge export --recording` writes its "
                                          r"test split there\); give one \(replay:FILE\)$"):
        open_source("replay:?rate=max", bare)


def test_a_boards_copy_without_its_recording_says_so(tmp_path):
    """A pruned copy lists recording.csv but does not hold it: `wavedge run M` (the recording
    by default) and `wavedge probe M` had said only "no such file"."""
    import shutil

    copy = tmp_path / "bm"
    shutil.copytree(BUNDLED_MODEL, copy)
    (copy / "recording.csv").unlink()
    for argv, instead in ((("run", copy, "--sink", "null:"), "give --source URL"),
                          (("probe", copy), "give DATA")):
        assert_one_line_error(run_cli(*argv), "recording recording.csv is listed in its "
                              "manifest but not here (a board's pruned copy?)", instead)


def test_a_pipe_given_to_replay_is_named_as_one(model, tmp_path):
    """`replay:/dev/stdin` from a pipe, or a named pipe, had been "no such file" (it exists).
    replay reads its file twice, so it points to stdin: instead."""
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SourceError, match=r"fifo is a pipe or a device, not a file; stream "
                                          r"from a pipe with stdin:"):
        open_source(f"replay:{tmp_path / 'fifo'}", model.manifest)


def test_a_file_named_npy_that_is_not_one(model, tmp_path):
    (tmp_path / "bad.npy").write_text("garbage")
    with pytest.raises(SourceError, match=r"bad.npy: not a .npy file \(no NUMPY header\)"):
        open_source(f"replay:{tmp_path / 'bad.npy'}", model.manifest)


def test_csv_header_without_the_models_channels(model, tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SourceError, match=r"lacks channel\(s\) \['acc_x'"):
        open_source(f"replay:{tmp_path / 'h.csv'}", model.manifest)


@pytest.mark.parametrize("text", ["", "acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n", "\n\n"])
def test_a_recording_without_samples_is_refused_at_open(model, tmp_path, text):
    """Before, it streamed nothing and exited 0, and with loop=0 reread the file for ever."""
    (tmp_path / "e.csv").write_text(text)
    np.save(tmp_path / "e.npy", np.zeros((0, 6), np.float32))
    for name in ("e.csv", "e.npy"):
        with pytest.raises(SourceError, match=f"{name} holds no samples"):
            open_source(f"replay:{tmp_path / name}?rate=max&loop=0", model.manifest)


@pytest.mark.parametrize("sep,name", [(";", ";"), ("\t", "tab"), (" ", "space")])
def test_a_table_of_another_separator_is_named_and_read(model, tmp_path, sep, name):
    """Excel's ';' with decimal commas, a .tsv, numpy.savetxt's spaces: each had been
    refused with "wavedge reads comma-separated values" and no way to read it."""
    header = sep.join(["label", *model.manifest.channels])
    label = "walking, fast" if sep != " " else '"walking fast"'
    (tmp_path / "s.csv").write_text(f"{header}\n{label}{sep}{sep.join(['1.5'] * 6)}\n"
                                    f"still{sep}{sep.join(['-2,25'] * 6)}\n")
    with pytest.raises(SourceError, match=re.escape(f"is the file {sep!r}-separated? add "
                                                    f"?sep={name})")):
        open_source(f"replay:{tmp_path / 's.csv'}", model.manifest)
    got = list(open_source(f"replay:{tmp_path / 's.csv'}?sep={name}&rate=max",
                           model.manifest))
    assert [s.problem for s in got] == [None, None] and got[0].truth == label.strip('"')
    assert got[0].values.tolist() == [1.5] * 6 and got[1].values.tolist() == [-2.25] * 6
    # a header-less file of numbers with decimal commas, columns aligned by runs of spaces
    (tmp_path / "n.txt").write_text("\n".join(sep.join(["0,5"] * 6) if sep != " " else
                                              "  0,5  " + "   ".join(["0,5"] * 5)
                                              for _ in range(3)) + "\n")
    got = list(open_source(f"replay:{tmp_path / 'n.txt'}?sep={name}&rate=max", model.manifest))
    assert [s.values.tolist() for s in got] == [[0.5] * 6] * 3
    with pytest.raises(InputError, match=re.escape("sep='x'; allowed: ',', ';', tab, space, '|'")):
        open_source(f"replay:{tmp_path / 's.csv'}?sep=x", model.manifest)


def test_malformed_rows_are_counted_not_fatal(model, tmp_path):
    good = "1.0,-9.8,0.5,0.01,0.02,0.03"
    (tmp_path / "m.csv").write_text(
        "\n".join([good, "1.0,-9.8,abc,0.01,0.02,0.03", "1,2,3", good, "nan,1,1,1,1,1", good]))
    source = open_source(f"replay:{tmp_path / 'm.csv'}?rate=max", model.manifest)
    warnings = []
    summary = run(model.stream("reject"), source, open_sink("null:", model.manifest),
                  warn=warnings.append)
    assert summary.samples == 3
    assert summary.dropped == {"not_numeric": 1, "wrong_shape": 1, "non_finite": 1}
    # each warning names the line to mend; the step alone cannot: a refused sample takes none
    assert [w.split(":")[0] for w in warnings] == ["line 2, step 1", "line 3, step 1",
                                                   "line 5, step 2"]
    source = open_source(f"replay:{tmp_path / 'm.csv'}?rate=max", model.manifest)
    summary = run(model.stream("hold"), source, open_sink("null:", model.manifest))
    assert summary.samples == 6 and sum(summary.repaired.values()) == 3


def test_a_refused_npy_row_is_named_by_its_index(model, tmp_path):
    x = np.tile(np.float32([1.0, -9.8, 0.5, 0.01, 0.02, 0.03]), (2, 5, 1))
    x[0, 3, 2] = np.nan
    x[1, 1, 0] = np.inf
    for name, arr, expected in (("flat.npy", x[0], ["row 3, step 3"]),
                                ("recs.npy", x, ["recording 0, row 3, step 3",
                                                 "recording 1, row 1, step 5"])):
        np.save(tmp_path / name, arr)
        source = open_source(f"replay:{tmp_path / name}?rate=max", model.manifest)
        warnings = []
        run(model.stream("reject"), source, open_sink("null:", model.manifest),
            warn=warnings.append)
        # numpy's own indices, so that arr[0, 3] is the sample to look at
        assert [w.split(":")[0] for w in warnings] == expected


def test_sinks_write_jsonl_and_csv(model, tmp_path):
    for scheme in ("jsonl", "csv"):
        path = tmp_path / "out" / f"r.{scheme}"
        source = open_source(f"replay:{RECORDING}?rate=max&limit=100", model.manifest)
        summary = run(model.stream(), source, open_sink(f"{scheme}:{path}", model.manifest))
        assert summary.samples == 100
        lines = path.read_text().splitlines()
        if scheme == "jsonl":
            last = json.loads(lines[-1])
            assert last["step"] == 99 and last["truth"] in model.labels
            assert last["label"] in model.labels and len(last["logits"]) == 4
        else:
            assert lines[0].startswith("step,class_id,label,score,truth,logit_badminton")
            assert len(lines) == 101


def test_a_csv_sink_for_excel_where_the_decimal_mark_is_a_comma(model, tmp_path):
    """`csv:out.csv?sep=;` writes what Excel opens as columns where the decimal mark is a
    comma (`;` between fields, `0,29` in them): a file of `,` and `.` opened there had been one
    column of text. Its rows are the plain CSV's, numbers and all; append reads its header
    with the same separator; other separators keep decimal points."""
    rows = {}
    for name, url in (("plain", "csv:{}"), ("excel", "csv:{}?sep=;"), ("tab", "csv:{}?sep=tab")):
        path = tmp_path / f"{name}.csv"
        for _ in range(2):  # the second run appends to the first
            source = open_source(f"replay:{RECORDING}?rate=max&limit=20", model.manifest)
            run(model.stream(), source, open_sink(url.format(path) + ("&" if "?" in url else "?")
                                                   + "append=1", model.manifest))
        rows[name] = list(csv.reader(path.open(), delimiter={"plain": ",", "excel": ";",
                                                            "tab": "\t"}[name]))
    assert len(rows["plain"]) == 41 and rows["excel"][0] == rows["plain"][0]
    assert rows["excel"][1][3].count(",") == 1 and "." not in rows["excel"][1][3]
    assert [[c.replace(",", ".") for c in r] for r in rows["excel"]] == rows["plain"]
    assert rows["tab"] == rows["plain"]
    with pytest.raises(InputError, match="sep='x'; allowed"):
        open_sink(f"csv:{tmp_path / 'x.csv'}?sep=x", model.manifest)
    with pytest.raises(InputError, match="unknown"):
        open_sink(f"jsonl:{tmp_path / 'x.jsonl'}?sep=;", model.manifest)


def test_users_can_add_a_scheme(model):
    class Ones:
        def __init__(self, url, manifest):
            self.n = url.get("n", 3, int)

        def __iter__(self):
            return (Sample(np.ones(6, np.float32)) for _ in range(self.n))

        def close(self):
            pass

    register_source("ones", Ones)
    assert len(_collect("ones:?n=5", model)) == 5


def _run_on_stdin(text: str, *extra: str, source: str = "stdin:") -> subprocess.CompletedProcess:
    """`wavedge run` on the bundled model, ``text`` piped in, results as JSON lines."""
    return subprocess.run([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                           "--source", source, "--sink", "jsonl:-", *extra], input=text,
                          capture_output=True, text=True, timeout=60)


def test_json_lines_are_samples_on_stdin_and_a_serial_port(model):
    """A script printing JSON Lines, a board printing ArduinoJson's `serializeJson` output:
    every line had been one bad sample ("header ['{\"acc_x\": 0.0', ...] lacks channel(s)").
    Each object is a sample by its keys, its time and label read as a table's; after a CSV
    header, objects fill its columns by name; a sketch's boot message and a first line cut by
    connecting mid-way are bad samples, and the next object decides."""
    channels = model.manifest.channels
    rows = np.round(np.random.default_rng(5).normal(size=(30, 6)), 3)

    def obj(i, **more):
        return json.dumps({"time": 100 + i / 10, **dict(zip(channels, rows[i])), **more})

    proc = _run_on_stdin("".join(obj(i, label="walking") + "\n" for i in range(30)))
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(out) == 30 and out[3]["time"] == pytest.approx(100.3)
    assert out[3]["truth"] == "walking" and "agreement with truth" in proc.stderr
    # a CSV header first: objects fill its columns by name, in its order
    header = ",".join(reversed(channels)) + ",time"
    proc = _run_on_stdin(header + "\n" + obj(0) + "\n" + ",".join(
        f"{v:g}" for v in reversed(rows[1])) + ",100.1\n")
    want = _run_on_stdin("".join(",".join(f"{v:g}" for v in rows[i]) + "\n" for i in range(2)))
    assert [json.loads(ln)["logits"] for ln in proc.stdout.splitlines()] == \
        [json.loads(ln)["logits"] for ln in want.stdout.splitlines()]
    # ArduinoJson's nested documents (doc["acc"]["x"], an array of three): dotted keys
    nested = "".join(json.dumps({"t": 5000 + 100 * i, "acc": dict(zip("xyz", rows[i][:3])),
                                 "gyr": list(rows[i][3:])}) + "\n" for i in range(2))
    mapped = ",".join(f"{c}:{k}" for c, k in zip(channels, ("acc.x", "acc.y", "acc.z", "gyr.0",
                                                            "gyr.1", "gyr.2")))
    proc = _run_on_stdin(nested, source=f"stdin:?columns={mapped}&time=t&time_unit=ms")
    assert [json.loads(ln)["logits"] for ln in proc.stdout.splitlines()] == \
        [json.loads(ln)["logits"] for ln in want.stdout.splitlines()], proc.stderr
    assert [json.loads(ln)["time"] for ln in proc.stdout.splitlines()] == pytest.approx([5.0, 5.1])

    got = []
    summary, _ = _board_run(model, [obj(0)[30:] + "\r\n", "IMU ready\r\n",
                                    *(obj(i, label="idle") + "\r\n" for i in range(1, 30))],
                            sink=_Kept(got))
    assert summary.samples == 29 and sum(summary.dropped.values()) == 2, summary
    assert np.allclose(np.stack([s.values for s in got]), rows[1:].astype(np.float32))
    assert got[0].time == pytest.approx(100.1) and {s.truth for s in got} == {"idle"}


def test_stdin_source_through_the_cli_survives_bad_lines():
    lines = ["acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"] + ["0.1,-9.8,0.2,0.0,0.1,0.0"] * 5
    lines.insert(3, "0.1,oops,0.2,0.0,0.1,0.0")
    proc = _run_on_stdin("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    assert "not_numeric 1" in proc.stderr and "Traceback" not in proc.stderr
    assert "warning: line 4, step 2: sample rejected by the source: not_numeric" in proc.stderr


def test_a_field_with_digit_groups_is_not_a_number():
    """Python's float() reads "1_0" as 10: a typo had been stepped as a value ten times the
    one meant, with no warning."""
    lines = ["acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z", "0.1,-9.8,0.2,0.0,0.1,0.0",
             "0.1,-9.8,0_2,0.0,0.1,0.0", "0.1,-9.8,0.2,0.0,0.1,0.0"]
    proc = _run_on_stdin("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert "warning: line 3, step 1: sample rejected by the source: not_numeric" in proc.stderr


def test_a_row_with_more_fields_than_the_header_is_a_bad_sample():
    """Two lines run together (a serial line cut without its newline) make a row of more
    fields than the header: its first ones had been read as a sample, as if whole. Extra
    empty fields (a logger's trailing comma) are still read."""
    lines = ["acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"] + ["0.1,-9.8,0.2,0.0,0.1,0.0"] * 5
    lines.insert(3, "0.1,-9.8,0.1,-9.8,0.2,0.0,0.1,0.0")
    lines.insert(4, "0.1,-9.8,0.2,0.0,0.1,0.0,,")
    proc = _run_on_stdin("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 6
    assert "warning: line 4, step 2: sample rejected by the source: wrong_shape (8 field(s), " \
           "the header has 6)" in proc.stderr


def test_a_row_of_the_wrong_shape_is_warned_of_with_its_field_count():
    """A logger that prints no name for its last column makes every row one field longer
    than the header, and every sample is rejected: the warnings had said "wrong_shape" and
    nothing of why. A headerless row is measured against the model's channels."""
    header = "acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"
    proc = _run_on_stdin("\n".join([header, *["0.1,-9.8,0.2,0.0,0.1,0.0,17"] * 3]) + "\n")
    assert proc.returncode == 1
    assert "line 2, step 0: sample rejected by the source: wrong_shape (7 field(s), the " \
           "header has 6)" in proc.stderr, proc.stderr
    proc = _run_on_stdin("0.1,-9.8,0.2,0.0,0.1,0.0\n0.1,-9.8,0.2,,\n")
    assert proc.returncode == 0, proc.stderr
    assert "line 2, step 1: sample rejected by the source: wrong_shape (3 field(s), the model " \
           "takes 6 channel(s))" in proc.stderr, proc.stderr


def test_the_header_again_is_skipped_not_a_bad_sample():
    """`cat day1.csv day2.csv |` (the second with Excel's byte-order mark and CRLF), or a board
    that restarted and sent its header anew: each header after the first had been a
    not_numeric sample with a warning."""
    header = "acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"
    row = "0.1,-9.8,0.2,0.0,0.1,0.0"
    text = f"{header}\n{row}\n\ufeff{header}\r\n{row}\r\n {header.replace(',', ', ')}\n{row}\n"
    proc = _run_on_stdin(text)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3 and "dropped: none" in proc.stderr, proc.stderr


def test_serial_source_on_a_pseudo_terminal_and_the_port_vanishing(model):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    source = open_source(f"serial://{port}?reconnect_s=0.5", model.manifest)

    def mcu():
        os.write(master, b"garbage-from-a-line-cut-in-half\n")
        for i in range(20):
            os.write(master, f"{i * 0.1:.1f},-9.8,0.2,0.0,0.1,0.0\r\n".encode())
        time.sleep(0.3)
        os.close(master)  # unplug
        os.close(slave)

    threading.Thread(target=mcu, daemon=True).start()
    t0 = time.monotonic()
    summary = run(model.stream(), source, open_sink("null:", model.manifest), warn=lambda m: None)
    assert summary.samples == 20
    assert summary.dropped == {"wrong_shape": 1}  # the half line, never half-used
    assert summary.error and "vanished and did not come back within 0.5 s" in summary.error
    assert time.monotonic() - t0 < 5


def test_a_board_on_a_serial_port_reads_its_prediction_back_on_it(model):
    """A sketch printing its readings (`Serial.println`) had no way to hear the class on the
    same port without the bridge's framing (`link:`), and a `serial://` source beside a sink
    of another scheme on its port is refused. With `?reply=last` each line is answered by a
    line on the port: its result's jsonl record, or why it was refused; a header is not."""
    import select

    from wavedge.runtime.sinks import json_text, record

    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:4]]
    alone = model.stream()
    expected = [json_text(record(alone.push(np.array(r.split(","), np.float32)), None))
                for r in rows]
    master, slave = os.openpty()
    source = open_source(f"serial://{os.ttyname(slave)}?reply=last&reconnect_s=0.2",
                         model.manifest)
    thread, summary = _running(run, model.stream(), source, open_sink("null:", model.manifest),
                               warn=lambda m: None)

    def answer() -> str:
        got = b""
        while not got.endswith(b"\n"):
            assert select.select([master], [], [], 10)[0], got
            got += os.read(master, 4096)
        return got.decode().rstrip("\n")

    try:
        os.write(master, (",".join(model.manifest.channels) + "\r\n").encode())
        answers = []
        for line in (*rows, "1,2,x,4,5,6"):
            os.write(master, (line + "\r\n").encode())
            answers.append(answer())
    finally:
        os.close(master)  # unplugged: the run ends
        os.close(slave)
    thread.join(30)
    assert answers[:3] == expected
    assert json.loads(answers[3]) == {"refused": "no sample taken (line 1: step 3: sample "
                                                 "rejected by the source: not_numeric)"}
    assert summary[0].samples == 3
    assert any(n.endswith("; reply=last: 4 answered") for n in source.notes()), source.notes()


class _Kept:
    """A sink that keeps each sample it is given in ``into``."""

    def __init__(self, into: list) -> None:
        self.into = into

    def write(self, result, sample) -> None:
        self.into.append(sample)

    def close(self) -> None:
        pass


def _board_run(model, pieces, params="", pause=0.0, sink=None, manifest=None):
    """The model run on a serial source on a pseudo-terminal (``?reconnect_s=0.2`` and
    ``params``) while a board writes ``pieces``, one each ``pause`` on a fixed schedule (each
    a read of its own), then is unplugged; returns the run's summary and warnings."""
    master, slave = os.openpty()
    source = open_source(f"serial://{os.ttyname(slave)}?reconnect_s=0.2{params}",
                         manifest or model.manifest)

    def mcu():
        due = time.monotonic()
        for piece in pieces:
            os.write(master, piece.encode())
            due += pause
            time.sleep(max(0.0, due - time.monotonic()))
        time.sleep(0.3)
        os.close(master)
        os.close(slave)

    threading.Thread(target=mcu, daemon=True).start()
    warnings = []
    summary = run(model.stream(), source, sink or open_sink("null:", model.manifest),
                  warn=warnings.append)
    return summary, warnings


def test_serial_plotter_lines_of_name_value_pairs(model, tmp_path):
    """An Arduino sketch written for the IDE's Serial Plotter prints NAME:VALUE pairs
    (`acc_x:0.12,acc_y:-0.03` or apart by spaces or tabs), in any order, with names of its
    own beside them. Every such line had been a bad sample. The first line, cut by
    connecting mid-stream, and a sketch's own message are bad samples; the next line decides
    the layout."""
    channels = model.manifest.channels
    rows = np.round(np.random.default_rng(3).normal(size=(20, 6)), 3).astype(np.float32)

    def line(i):
        pairs = [f"{c}:{v:g}" for c, v in zip(channels, rows[i])] + [f"temp:{20 + i}"]
        if i % 2:
            pairs.reverse()
        return ("\t" if i % 3 == 0 else " " if i % 3 == 1 else ",").join(pairs) + "\r\n"

    got = []
    summary, _ = _board_run(model, [line(0)[17:],  # the tail of a line: connected mid-way
                                    "IMU ready\r\n", *map(line, range(20)),
                                    ",".join(f"{c}:x" for c in channels) + "\r\n"], sink=_Kept(got))
    assert summary.samples == 20, summary
    assert summary.dropped == {"wrong_shape": 2, "not_numeric": 1}, summary
    assert np.array_equal(np.stack([s.values for s in got]), rows)
    # a file of them reads the same, its time and label by name; a channel absent is named
    path = tmp_path / "plot.txt"
    path.write_text("".join(f"time:{i * 0.1:.1f},label:walking,{line(i)}" for i in range(20)))
    read = list(open_source(f"replay:{path}?rate=max", model.manifest))
    assert np.array_equal(np.stack([s.values for s in read]), rows)
    assert read[3].time == pytest.approx(0.3) and read[3].truth == "walking"
    path.write_text(f"time:05:00:00.100,{line(0)}")  # a time of day: no timestamp
    with pytest.raises(SourceError, match="column 'time' holds '05:00:00.100', not a timestamp"):
        open_source(f"replay:{path}", model.manifest)
    path.write_text("acc_x:1,acc_y:2\n")
    lack = "the first line's NAME:VALUE pairs (acc_x, acc_y) lack ['acc_z', 'gyr_x', 'gyr_y', "
    with pytest.raises(SourceError, match=re.escape(lack + "'gyr_z']")):
        open_source(f"replay:{path}", model.manifest)


def test_a_board_printing_values_apart_by_spaces_is_told_which_sep(model):
    """`Serial.print(ax); Serial.print(" "); ...`: on a live port every line was a bad sample
    saying only "1 field(s), the model takes 6 channel(s)"; the warning now names the
    separator to give, and with it every line is a sample."""
    for params, want in (("", 0), ("&sep=space", 10)):
        summary, warnings = _board_run(model, [f"{i}  0.5 9.81 0 0 {i / 10}\r\n"
                                               for i in range(10)], params)
        assert summary.samples == want, summary
        if not want:
            assert "(one field: are its values ' '-separated? add ?sep=space)" in warnings[0]


def test_a_board_sending_at_another_rate_than_the_models_is_said(model):
    """Lines without timestamps from a board at 100 Hz into the 10 Hz model had run as if at
    10 Hz without a word; the arrivals are timed by this host's clock, and a warning line
    and the summary say so. A model of the board's rate takes them without a note, and a
    stated rate is not second-guessed."""
    import dataclasses

    from wavedge.runtime.sources import ARRIVAL_S, ARRIVAL_SKIP

    # enough lines at 100 Hz for two windows of ARRIVAL_S after those left out
    lines = [f"{i % 7},0.5,9.81,0,0,{i / 100}\r\n"
             for i in range(ARRIVAL_SKIP + int(2 * ARRIVAL_S * 100) + 20)]
    summary, warnings = _board_run(model, lines, pause=0.01)
    note = [n for n in summary.lines() if "samples arrived at about" in n]
    assert len(note) == 1 and "the model's rate is 10 Hz" in note[0], summary.lines()
    assert note[0].endswith(warnings[0]), warnings  # said as it was found, not only at the end
    hz = float(note[0].split("about ")[1].split(" Hz")[0])
    assert 50 <= hz <= 200, note  # about 100: a busy machine bunches the arrivals a little
    # a model of 20 Hz fed at 20 Hz (slow enough that a stall of the machine moves the rate
    # little), and a stated rate, which is not timed: no note
    raw = model.manifest.raw
    at_20 = dataclasses.replace(model.manifest, raw={**raw, "signature": {
        **raw["signature"], "sample_rate_hz": 20.0}})
    for params, manifest, pause in (("", at_20, 0.05), ("&sample_rate=10", None, 0.01)):
        summary, _ = _board_run(model, lines[:90], params, pause=pause, manifest=manifest)
        assert summary.samples == 90
        assert not [n for n in summary.lines() if "arrived" in n], summary.lines()


def test_a_live_ports_header_after_a_cut_first_line_is_its_header(model):
    """Connected mid-way through a board's header line, then the board restarted and sent it
    whole: the cut line is a bad sample and the header names the columns, where the cut line
    had fixed the layout as positions and the header had been one more bad sample."""
    from wavedge.recordings import csv_samples

    channels = model.manifest.channels
    header = ",".join(reversed(channels)) + ",time,label"
    lines = [header[9:], header, "1,2,3,4,5,6,0.1,walking", "1,2,3,4,5,6,0.2,walking"]
    got = list(csv_samples(lines, channels, strict=False))
    assert [s.problem for s in got] == ["wrong_shape", None, None]
    assert got[1].values.tolist() == [6, 5, 4, 3, 2, 1] and got[2].time == 0.2
    assert got[1].truth == "walking"


def test_lines_that_end_in_a_bare_cr_are_lines(model):
    """Some RS-232 instruments end each line with a CR alone: the serial source had waited for
    a LF that never came (every sample lost as one line too long), and stdin had read the
    whole input as one bad line. A CR LF that arrives in two reads stays one line end: the
    warnings' line numbers do not drift."""
    row = "0.1,-9.8,0.2,0.0,0.1,0.0"
    summary, warnings = _board_run(model, [f"{row}\r{row}\r", f"{row}\r", f"\n{row}\r\n",
                                           "0.1,oops\r", f"{row}\r"], pause=0.05)
    assert summary.samples == 5 and summary.dropped == {"wrong_shape": 1}, summary
    assert warnings[0].startswith("line 5, step 4: "), warnings
    proc = _run_on_stdin(f"acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\r{row}\r{row}\r")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr


def test_serial_source_reconnects_when_the_port_returns(model):
    """A socket:// port (pyserial URL) closed and re-accepted: the stream carries on."""
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()

    def mcu():
        for batch in range(2):
            conn, _ = server.accept()
            time.sleep(0.1)  # pyserial flushes input on open: what came before is discarded
            for i in range(10):
                conn.sendall(f"{batch}.{i},-9.8,0.2,0.0,0.1,0.0\n".encode())
            time.sleep(0.2)
            conn.close()  # unplug; the next accept is the replug
        server.close()

    threading.Thread(target=mcu, daemon=True).start()
    source = open_source(f"serial:socket://{host}:{port}?reconnect_s=1", model.manifest)
    summary = run(model.stream(), source, open_sink("null:", model.manifest), limit=20)
    assert summary.samples == 20 and summary.error is None, summary
    assert source.gaps == 1


def test_synthetic_source_smoke_through_the_cli(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_cli("run", BUNDLED_MODEL, "--source", "synthetic:imu?n=300&rate=max",
                   "--sink", f"jsonl:{out}")
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 300
    assert "latency per push: p50" in proc.stderr


def test_cli_run_default_source_is_the_recording():
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                   "--sink", "stdout:?every=100")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 40
    assert "at the last sample of each recording: " in proc.stderr


def test_ctrl_c_stops_cleanly_with_a_summary():
    proc = subprocess.Popen([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                             "--source", "synthetic:imu?n=0&rate=200", "--sink", "null:"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # printed once the model is loaded and the loop starts
    assert first.startswith("wavedge: wave_rnn-basic_motions on "), first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "(stopped by SIGINT)" in err and "latency per push" in err and "Traceback" not in err


def test_cli_run_reports_a_bad_model_dir_in_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "wavedge-model", "version": 9}')
    assert_one_line_error(run_cli("run", tmp_path), "version 9 is not supported")


@pytest.mark.parametrize("command", ["train", "export", "inspect", "run"])
def test_every_command_has_help(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "usage: wavedge " + command in proc.stdout


def test_run_help_names_every_source_and_sink_scheme():
    """The link: source was left out of the list `wavedge run --help` gives."""
    from wavedge.runtime import urls

    text = " ".join(run_cli("run", "--help").stdout.split())
    for table, kind in ((urls._SOURCES, "Sources:"), (urls._SINKS, "Sinks:")):
        part = text.split(kind, 1)[1].split("Sinks:" if kind == "Sources:" else "positional")[0]
        built_in = [s for s, t in table.items()  # other tests register schemes of their own
                    if isinstance(t, str) and t.startswith("wavedge.") and s != "mqtts"]
        missing = [s for s in built_in if f"{s}:" not in part]
        assert not missing, (kind, missing)


BLOCKER = """
import importlib.abc, sys
HEAVY = ("torch", "onnx", "onnxscript", "sklearn", "sktime", "pandas", "scipy", "tqdm")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def test_runtime_and_run_never_import_torch_or_the_builders():
    """With torch, onnx (the builder), sklearn and friends made unimportable, the runtime
    still loads and `wavedge run` still streams: numpy + onnxruntime + pyserial suffice."""
    code = BLOCKER + f"""
import wavedge.runtime
from wavedge.cli import main
rc = main(["run", {str(BUNDLED_MODEL)!r}, "--source", "replay:{RECORDING}?rate=max&limit=200",
           "--sink", "null:"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print("RC", rc, "HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert "RC 0 HEAVY []" in proc.stdout, proc.stderr


@pytest.mark.parametrize("n", [1, 2, 3, 100, 131072])
def test_the_summarys_latencies_are_numpys_percentiles(n):
    """The summary's p50 and p99 are ``np.percentile``'s (linear between ranks), got without
    it (see the next test)."""
    ns = np.random.default_rng(n).integers(1_000, 5_000_000, n)
    got = _latency(ns)
    np.testing.assert_allclose([got["p50"], got["p99"]], np.percentile(ns / 1000.0, [50, 99]),
                               rtol=1e-12)
    assert got["max"] == ns.max() / 1000.0


def test_a_run_imports_no_numpy_ma_of_its_own():
    """``np.percentile``'s ``np.unique`` imports ``numpy.ma``: 12 ms of a 0.22 s ``wavedge run
    --limit 1``, spent at its exit for the summary. (NumPy 1.x imports it with numpy itself.)"""
    code = f"""
import sys
import numpy
with_numpy = "numpy.ma" in sys.modules
from wavedge.cli import main
rc = main(["run", {str(BUNDLED_MODEL)!r}, "--source", "replay:{RECORDING}?rate=max&limit=20",
           "--sink", "null:"])
print("RC", rc, "MA", "numpy.ma" in sys.modules, "WITH NUMPY", with_numpy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.stdout.split()[:2] == ["RC", "0"], proc.stderr
    assert proc.stdout.split()[3] == proc.stdout.split()[-1], proc.stdout


def test_runtime_dependencies_are_lean():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = sorted(d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps)
    assert names == ["numpy", "onnxruntime", "pyserial"]


def test_output_piped_into_a_reader_that_stops_is_not_an_error():
    """`wavedge run ... | head -3`: no traceback, exit 0, a summary that says it stopped."""
    cmd = (f"{sys.executable} -m wavedge.cli run {BUNDLED_MODEL} "
           f"--source 'replay:{RECORDING}?rate=max' | head -3")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr and "(interrupted)" in proc.stderr


def test_binary_piped_in_by_mistake_is_one_short_error_line():
    """The header of 3 KB of random bytes was echoed whole, and twice: as the summary's
    'stopped:' line and as the error line."""
    from conftest import user_env

    junk = np.random.default_rng(0).integers(14, 256, 3000, dtype=np.uint8).tobytes()  # one line
    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                           "--source", "stdin:", "--sink", "null:"], input=junk,
                          capture_output=True, env=user_env(), timeout=60)
    err = proc.stderr.decode("utf-8", "replace").splitlines()
    errors = [ln for ln in err if "header" in ln]
    assert proc.returncode == 1 and len(errors) == 1, err
    assert errors[0].startswith("wavedge: error: stdin: header [") and len(errors[0]) < 600
    assert "columns) lacks channel(s)" in errors[0]


def test_resetting_at_each_recording_on_a_source_without_recordings_says_so():
    """The bundled digit-rows model resets at each digit; fed from a source with no sequence
    column its state was never reset, without a word."""
    note = "gave no recording (sequence) column, so the state was never reset at one"
    blind = run_cli("run", BUNDLED_MODEL, "--source", "synthetic:imu?n=30&rate=max", "--sink",
                    "null:", "--reset", "recording")
    seen = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max&limit=300",
                   "--sink", "null:", "--reset", "recording")
    assert blind.returncode == 0 and f"the source {note}" in blind.stderr, blind.stderr
    assert seen.returncode == 0 and "resets: 2" in seen.stderr and note not in seen.stderr


def test_a_csv_appended_to_keeps_one_models_columns(tmp_path):
    """append=1 (a service restarted) adds rows under the header already there; a file another
    model wrote (a service's model replaced) had the new model's rows mixed under the old
    header. Now refused at open, with nothing written; the same model appends."""
    from conftest import BUNDLED_MPL

    out = tmp_path / "r.csv"
    source = f"replay:{RECORDING}?rate=max&limit=5"
    for _ in range(2):
        assert run_cli("run", BUNDLED_MODEL, "--source", source, "--sink",
                       f"csv:{out}?append=1").returncode == 0
    before = out.read_text()
    assert len(before.splitlines()) == 11 and before.count("step,") == 1
    other = run_cli("run", BUNDLED_MPL, "--source", "synthetic:imu?n=5&rate=max", "--sink",
                    f"csv:{out}?append=1")
    assert other.returncode == 1 and "is not one this model writes" in other.stderr
    assert out.read_text() == before


@pytest.mark.parametrize("sequence_column", [True, False])
def test_a_header_sent_again_starts_a_new_recording(sequence_column):
    """A board that restarts sends its CSV header again, and its sequence numbers start at 0
    again: the rows after it were stepped from the state the last rows had left. Under
    `--reset recording` they now start from a reset state, as the same rows do at the start,
    and each part's last sample is scored as a recording's, with a sequence column or not."""
    rows = [r if sequence_column else r.split(",", 1)[1]
            for r in RECORDING.read_text().splitlines()]
    text = "\n".join([rows[0], *rows[1:31], rows[0], *rows[1:31]]) + "\n"
    proc = _run_on_stdin(text, "--reset", "recording")
    assert proc.returncode == 0, proc.stderr
    logits = [json.loads(line)["logits"] for line in proc.stdout.splitlines()]
    assert len(logits) == 60 and logits[30:] == logits[:30]
    assert "at the last sample of each recording: 2/2" in proc.stderr


@pytest.mark.parametrize("sequence_column", [True, False])
def test_each_pass_of_a_looped_replay_is_a_recording_of_its_own(tmp_path, sequence_column):
    """`replay:FILE?loop=N` over a file of one recording had run the passes together as one:
    the second pass was stepped from the state the first had left, under `--reset recording`
    too, and only the last pass's end was scored."""
    rows = [r if sequence_column else r.split(",", 1)[1]
            for r in RECORDING.read_text().splitlines()[:31]]
    (tmp_path / "one.csv").write_text("\n".join(rows) + "\n")
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{tmp_path / 'one.csv'}?rate=max"
                   "&loop=3", "--sink", "jsonl:-", "--reset", "recording")
    assert proc.returncode == 0, proc.stderr
    logits = [json.loads(line)["logits"] for line in proc.stdout.splitlines()]
    assert len(logits) == 90 and logits[30:60] == logits[:30] and logits[60:] == logits[:30]
    assert "at the last sample of each recording: 3/3" in proc.stderr
    assert "resets: 2 " in proc.stderr


def test_a_looped_replay_with_timestamps_resamples_each_pass_from_its_start(tmp_path):
    """Each pass's timestamps start again; read as one recording, they went back in time."""
    rows = RECORDING.read_text().splitlines()[:101]
    text = "\n".join([f"t,{rows[0]}", *(f"{i * 0.05:.2f},{r}" for i, r in
                                        enumerate(rows[1:]))]) + "\n"  # 20 Hz, one recording
    (tmp_path / "fast.csv").write_text(text)
    model = load_model(BUNDLED_MODEL)
    once, twice = ([(s.sequence, s.time, *s.values) for s in _collect(
        f"replay:{tmp_path / 'fast.csv'}?rate=max&resample=1&time=t&loop={n}", model)]
        for n in (1, 2))
    assert len(once) == 50 and len(twice) == 100
    assert [("0 (loop 2)", *s[1:]) for s in once] == twice[50:]


@pytest.mark.parametrize("sources", [1, 2])
def test_a_replay_cut_by_its_limit_scores_only_the_recordings_it_finished(sources):
    """The bundled recordings are 100 samples each. `replay:?limit=150` stops half-way
    through the second: its last sample had been scored as a recording's last."""
    for limit, finished in ((150, 1), (200, 2), (5, 0)):
        proc = run_cli("run", BUNDLED_MODEL, *["--source", f"replay:?rate=max&limit={limit}"]
                       * sources, "--sink", "null:")
        assert proc.returncode == 0, proc.stderr
        ends = re.search(r"at the last sample of each recording: \d+/(\d+)", proc.stderr)
        assert (int(ends[1]) if ends else 0) == finished * sources, proc.stderr


@pytest.mark.parametrize("scheme", ["jsonl", "csv"])
def test_appending_to_a_file_that_ends_in_part_of_a_line_cuts_that_part_first(tmp_path, scheme):
    """A SIGKILL inside a write of several pages can leave part of a line; the service,
    restarted, appends (append=1). Its first record had run on from that half line, so a
    reader (json.loads, csv) met one broken record made of two. Now the part is cut, with a
    warning, and every line the first run wrote whole is kept."""
    out = tmp_path / f"r.{scheme}"
    args = ("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max&limit=5", "--sink",
            f"{scheme}:{out}?append=1")
    assert run_cli(*args).returncode == 0
    whole = out.read_bytes()
    with out.open("ab") as fh:
        fh.write(whole.splitlines(keepends=True)[-1][:17])  # what a cut write leaves
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("warning") == 1 and "cut 17 bytes" in second.stderr
    lines = out.read_text().splitlines()
    assert out.read_bytes().startswith(whole) and len(lines) == (10 if scheme == "jsonl" else 11)
    if scheme == "jsonl":
        assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3, 4] * 2
    else:
        assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3", "4"] * 2


def test_standard_input_closed_is_one_line_naming_the_source():
    """Started with stdin closed (`<&-`), the stdin source had been an AttributeError
    traceback."""
    from conftest import user_env

    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                           "--source", "stdin:", "--sink", "null:"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=user_env(), timeout=60,
                          preexec_fn=lambda: os.close(0))
    assert_one_line_error(proc, "stdin source: standard input is closed")


@pytest.mark.parametrize("argv", [["inspect", str(BUNDLED_MODEL)], ["--version"], ["--help"],
                                  ["bench", str(BUNDLED_MODEL), "--samples", "50"]])
def test_a_command_started_with_standard_output_closed_says_so(argv):
    """`wavedge inspect MODEL >&-` (a cron line, a unit with StandardOutput=null mistyped)
    printed into nothing and exited 0, as did `bench` after its whole run; refused now
    before any work, in one line. `run` into a sink of its own still runs."""
    from conftest import user_env

    def closed(args):
        return subprocess.run([sys.executable, "-m", "wavedge.cli", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=user_env(), timeout=120, preexec_fn=lambda: os.close(1))

    assert_one_line_error(closed(argv), "standard output is closed, so what this command "
                                        "prints would be lost; redirect it")
    ran = closed(["run", str(BUNDLED_MODEL), "--limit", "3", "--sink", "null:"])
    assert ran.returncode == 0 and "samples: 3" in ran.stderr, ran.stderr


@pytest.mark.parametrize("sink", ["stdout:", "jsonl:-", "csv:-"])
def test_standard_output_closed_or_full_is_one_line_naming_the_sink(sink):
    """Started with stdout closed (`>&-`), the stdout sink printed into nothing and exited 0
    and jsonl:- was an AttributeError traceback; behind a full disk (`> /dev/full`) the
    stdout sink's OSError lost the summary and named no sink."""
    from conftest import user_env

    argv = [sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL), "--source",
            "synthetic:imu?n=5&rate=max", "--sink", sink]
    closed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=user_env(), timeout=60, preexec_fn=lambda: os.close(1))
    assert_one_line_error(closed, "standard output is closed")
    other = subprocess.run([*argv[:-1], "null:"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=user_env(), timeout=60,
                           preexec_fn=lambda: os.close(1))
    assert other.returncode == 0 and "samples: 5" in other.stderr, other.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            proc = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True,
                                  env=user_env(), timeout=60)
        assert proc.returncode == 1 and "samples: " in proc.stderr, proc.stderr
        assert "cannot write (No space left on device)" in proc.stderr.splitlines()[-1]
        assert "Traceback" not in proc.stderr


def test_synthetic_samples_follow_the_models_clock_whatever_the_pacing(model):
    """`synthetic:imu` is a signal at the model's sample rate: paced faster, or not at all
    (rate=max), it gives the same samples, only sooner. rate=max had drawn it at 100 Hz and a
    stated rate at that rate, so the sinusoids' frequencies changed with the pacing."""
    runs = [[s.values for s in open_source(f"synthetic:imu?n=40&seed=3&rate={rate}",
                                           model.manifest)] for rate in ("max", "1000", "400")]
    assert all(np.array_equal(np.stack(runs[0]), np.stack(r)) for r in runs[1:])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("argv", [["inspect", str(BUNDLED_MODEL)], ["--version"],
                                  ["upgrade", str(BUNDLED_MODEL)], ["run", "--help"]])
def test_a_command_behind_a_full_disk_names_standard_output(argv):
    """`wavedge inspect DIR > /dev/full` said only "No space left on device", as if of a
    file it wrote, `--version` there was a traceback, and `--help` printed nothing and
    exited 0 (argparse drops its own write errors)."""
    from conftest import user_env

    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "wavedge.cli", *argv], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=user_env(), timeout=60)
    assert_one_line_error(proc, "standard output: No space left on device")


def test_a_long_run_says_how_it_goes_while_it_runs(model):
    """A service's journal had only the run's summary, at its stop weeks later: a sensor gone
    quiet or a run dropping samples showed nowhere while it ran. With a status interval a
    line comes that often: the totals, the rate since the last line (0.0/s while the sensor
    is quiet), the drops so far."""
    from wavedge.runtime.loop import run as run_loop

    class Sensor:  # six samples (the fourth not finite), a quiet spell, six more
        def __iter__(self):
            for i in range(12):
                time.sleep(0.8 if i == 6 else 0.02)
                yield Sample(np.full(6, np.nan if i == 3 else 0.1, np.float32))

        def close(self):
            pass

    lines = []
    summary = run_loop(model.stream(), Sensor(), open_sink("null:", model.manifest),
                       warn=lines.append, status_every_s=0.2)
    status = [ln for ln in lines if ln.startswith("status: ")]
    assert summary.samples == 11 and len(status) >= 3, lines
    # the quiet spell (0.8 s) holds a whole interval or more, however late the thread wakes
    assert any(re.search(r", 0\.0/s over the last [0-9.]+ s; ", ln) for ln in status), status
    assert "; dropped: non_finite 1; repaired: none; latency p50 " in status[-1], status
    counts = [int(ln.split()[1]) for ln in status]
    assert counts == sorted(counts) and counts[-1] <= 11
    from wavedge.runtime.loop import status_line

    # a sink that counts (a link's, a broker's) has its losses said as they happen
    sinking = status_line({**{"samples": 4, "seconds": 2.0, "dropped": {}, "repaired": {},
                              "latency_us": {"p50": 5.0, "p99": 9.0}},
                           "sink": {"posted": 4, "queue_dropped": 1}}, None)
    assert sinking.endswith("p99 9.0 us; sink: posted 4, queue_dropped 1"), sinking
    refused = run_cli("run", BUNDLED_MODEL, "--status-every", "0", "--limit", "1")
    assert_one_line_error(refused, "--status-every: between 0.1 and 86400 seconds, got 0")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_wifi_board_sends_its_samples_in_udp_datagrams(model):
    """An ESP32 on WiFi sends its IMU's readings to the Pi as UDP datagrams: a CSV header,
    CSV lines, a JSON list, a JSON object by channel. `udp://` takes them as the MQTT source
    takes a broker's messages (a bad line is a bad sample); the summary counts datagrams and
    senders, and says so when two boards share the port."""
    import json

    port = _free_udp_port()
    source = open_source(f"udp://127.0.0.1:{port}?idle=0.3", model.manifest)
    lines = (BUNDLED_MODEL / "recording.csv").read_text().splitlines()
    rows = [r.split(",")[2:] for r in lines[1:4]]
    board, other = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    other.bind(("127.0.0.2", 0))
    try:
        to = ("127.0.0.1", port)
        board.sendto(b"acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n" + ",".join(rows[0]).encode(), to)
        board.sendto((",".join(rows[1]) + "\n" + ",".join(rows[2])).encode(), to)
        board.sendto(json.dumps([0.5] * 6).encode(), to)
        other.sendto(json.dumps({c: 0.25 for c in model.manifest.channels}).encode(), to)
        board.sendto(b"1,2,x,4,5,6", to)
        samples = list(source)
        notes = source.notes()
    finally:
        source.close()
        board.close()
        other.close()
    want = [[float(v) for v in r] for r in rows] + [[0.5] * 6, [0.25] * 6]
    np.testing.assert_allclose(np.stack([s.values for s in samples[:5]]), want, rtol=1e-6)
    assert [s.problem for s in samples] == [None] * 5 + ["not_numeric"]
    assert notes == [f"udp source udp://127.0.0.1:{port}?idle=0.3: 5 datagrams from 2 "
                     "sender(s) (their samples interleave in one stream: give each board its "
                     "own port)"]
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source", "udp://:99999"),
                          "give the port to listen on, e.g. udp://:5005")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source", f"udp://:{port}",
                                  "--source", f"udp://127.0.0.1:{port}"),
                          f"UDP port {port} is already a source of this run")


def test_results_go_to_a_board_on_wifi_in_udp_datagrams():
    """`--sink udp://HOST:PORT`: each result one datagram of the jsonl sink's record (an
    ESP32 acting on the predictions); a send the host refuses (nothing listening) is counted
    and said, not the end of the run; a broadcast address needs ?broadcast=1, and a host
    that does not resolve or a missing port is one line before the run."""
    port = _free_udp_port()
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", port))
    board.settimeout(5)
    try:
        replay = ("--source", f"replay:{BUNDLED_MODEL / 'recording.csv'}?rate=max", "--limit",
                  "30")
        proc = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"udp://127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr
        got = [json.loads(board.recv(65535)) for _ in range(30)]
    finally:
        board.close()
    want = run_cli("run", BUNDLED_MODEL, *replay, "--sink", "jsonl:-").stdout.splitlines()
    assert got == [json.loads(ln) for ln in want]
    assert f"udp sink udp://127.0.0.1:{port}: 30 datagrams sent, 0 refused" in proc.stderr
    # the same port with nothing on it: the host answers each send but one with a refusal
    nobody = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"udp://127.0.0.1:{port}")
    assert nobody.returncode == 0, nobody.stderr
    assert re.search(r"\d+ datagrams sent, [1-9]\d* refused by this host \(the last: "
                     r"Connection refused: nothing listens on that port\)", nobody.stderr)
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "udp://255.255.255.255:5006"),
                          "add ?broadcast=1 to send to a broadcast address")
    loud = run_cli("run", BUNDLED_MODEL, *replay, "--sink",
                   "udp://127.255.255.255:5006?broadcast=1")
    assert loud.returncode == 0 and "30 datagrams sent" in loud.stderr, loud.stderr
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "udp://nohost.invalid:5006"),
                          "cannot resolve nohost.invalid")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "udp://:5006"),
                          "give the host and port to send to, e.g. udp://192.168.1.20:5006")


def _ipv6_loopback() -> bool:
    """Whether this host (a container may not) has the IPv6 loopback address."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/samples", "serial:loop://"])
def test_ctrl_c_while_a_source_waits_on_a_queue_ends_with_the_summary(model, url):
    """A Ctrl-C landing inside the wait of a queue (an http: or mqtt:// source's inbox, a
    pyserial loop:// port, with no sample coming) had left the queue's lock released under
    its `with`: a traceback ending in "cannot release un-acquired lock" instead of the
    summary. The source now polls for the stop."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = open_source(url.format(port=port), model.manifest)
    with sigint_inside_a_lock_wait("get") as fired:
        summary = run(model.stream(), source, open_sink("null:", model.manifest), signals=True)
    assert fired and summary.interrupted and summary.stopped_by == "SIGINT"
    assert summary.error is None


def test_a_second_ctrl_c_stops_a_source_that_never_looks_for_one(model):
    """A user's own source that waits on a lock and never returns: the first Ctrl-C inside
    that wait only marks the stop (raised there it can break the lock), so a second one
    must stop the run, as users press it."""
    import os
    import signal
    import threading

    class Stuck:
        def __iter__(self):
            threading.Event().wait()
            yield from ()

        def close(self):
            pass

    again = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    again.start()
    with sigint_inside_a_lock_wait("wait") as fired:
        summary = run(model.stream(), Stuck(), open_sink("null:", model.manifest), signals=True)
    again.join()
    assert fired and summary.interrupted and summary.stopped_by == "SIGINT"


def test_a_wifi_board_gets_its_prediction_back_on_the_socket_it_sends_from(model):
    """An ESP32 sending datagrams had to listen at an address the run was given (a `udp://`
    sink; DHCP may change it) to act on the class. With `udp://:PORT?reply=last` each
    datagram is answered to its sender's address and port, once the model has taken its
    samples, with the last one's jsonl record (`reply=all`: every sample's, a refusal by its
    line); one whose samples were all refused with why; one with no sample not at all."""
    from wavedge.runtime.sinks import json_text, record

    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:6]]
    alone = model.stream()
    expected = [json.loads(json_text(record(alone.push(np.array(r.split(","), np.float32)),
                                            None))) for r in rows]
    port = _free_udp_port()
    got = {}
    for reply in ("last", "all"):
        source = open_source(f"udp://127.0.0.1:{port}?reply={reply}&idle=1", model.manifest)
        thread, summary = _running(run, model.stream(), source,
                                   open_sink("null:", model.manifest))
        board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        board.settimeout(10)
        try:
            answers = []
            for body in (",".join(model.manifest.channels), "\n".join(rows[:3]),
                         "1,2,x,4,5,6", "\n".join([rows[3], "1,2", rows[4]])):
                board.sendto(body.encode(), ("127.0.0.1", port))
                if body != ",".join(model.manifest.channels):  # a header alone: no answer
                    answers.append(json.loads(board.recv(65535)))
        finally:
            board.close()
        thread.join(30)
        got[reply] = answers, source.notes()[0]
    last, notes = got["last"]
    assert last == [expected[2], {"refused": "no sample taken (line 1: step 3: sample "
                                              "rejected by the source: not_numeric)"},
                    expected[4]]
    assert notes.endswith("; reply=last: 3 answered"), notes
    every, _ = got["all"]
    assert every[0] == expected[:3] and every[2] == [
        expected[3], {"line": 2, "refused": "step 4: sample rejected by the source: "
                                            "wrong_shape"}, expected[4]]
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                  f"udp://127.0.0.1:{port}?reply=first"),
                          "reply= takes last (the last sample's result) or all")


def test_a_reply_too_long_for_a_datagram_comes_in_several(model, monkeypatch):
    """`reply=all` to a datagram of many samples: its list of records went as one datagram,
    and one past UDP's 65,507 bytes (600 samples: 74 KB) as nothing. It comes as lists of
    whole records, in order, each within the limit (here set to 400 bytes)."""
    from wavedge.runtime.sources import udp

    monkeypatch.setattr(udp, "MAX_REPLY", 400, raising=False)
    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:9]]
    port = _free_udp_port()
    source = open_source(f"udp://127.0.0.1:{port}?reply=all&idle=1", model.manifest)
    thread, _ = _running(run, model.stream(), source, open_sink("null:", model.manifest))
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.settimeout(10)
    try:
        board.sendto("\n".join(rows).encode(), ("127.0.0.1", port))
        parts = []
        while sum(map(len, parts)) < len(rows):
            data = board.recv(65535)
            assert len(data) <= 400, len(data)
            parts.append(json.loads(data))
    finally:
        board.close()
    thread.join(30)
    alone = model.stream()
    steps = [alone.push(np.array(r.split(","), np.float32)).step for r in rows]
    assert len(parts) > 1 and [r["step"] for p in parts for r in p] == steps
    assert source.notes()[0].endswith("; reply=all: 1 answered"), source.notes()


def test_a_board_posts_its_samples_over_http(model, monkeypatch):
    """An ESP32's HTTPClient, a phone app, a script's requests.post: `http://:PORT/PATH` takes
    each POST's body as an MQTT message (CSV lines, a JSON list or object, laid out over
    lines or not) and answers 204 at once; a GET is 405, another path 404, a body over the
    limit 413, each counted in the summary; a port in use is one line."""
    import http.client
    import urllib.error
    import urllib.request

    from wavedge.runtime.sources import http as http_source

    monkeypatch.setattr(http_source, "MAX_BODY", 1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = open_source(f"http://127.0.0.1:{port}/samples?idle=0.5", model.manifest)
    channels = model.manifest.channels
    rows = [[float(v) for v in r.split(",")[2:]]
            for r in (BUNDLED_MODEL / "recording.csv").read_text().splitlines()[1:5]]

    def post(body, path="/samples", method="POST"):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=body.encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        answers = [post(",".join(channels) + "\n" + ",".join(map(str, rows[0])) + "\n"),
                   post(json.dumps(dict(zip(channels, rows[1])), indent=2)),
                   post(json.dumps(rows[2])), post(",".join(map(str, rows[3]))),
                   post(None, method="GET"), post("1,2,3,4,5,6", "/other"), post("9," * 600)]
        other = http.client.HTTPConnection("127.0.0.1", port, source_address=("127.0.0.2", 0))
        other.request("POST", "/samples", ",".join(map(str, rows[0])))  # a second board
        answers.append(other.getresponse().status)
        other.close()
        samples = list(source)
        notes = source.notes()
    finally:
        source.close()
    assert answers == [204, 204, 204, 204, 405, 404, 413, 204]
    np.testing.assert_allclose(np.stack([s.values for s in samples]), rows + rows[:1], rtol=1e-6)
    assert notes == [f"http source http://127.0.0.1:{port}/samples?idle=0.5: 5 POSTs from 2 "
                     "sender(s) (their samples interleave in one stream: give each board its "
                     "own path), 0 dropped from a full queue; refused on its port: 1 answered "
                     "404, 1 answered 405, 1 answered 413"]
    # two boards, a path each on one port: a stream each, one server
    imu = {k: open_source(f"http://127.0.0.1:{port}/imu{k}?idle=0.3", model.manifest)
           for k in (1, 2)}
    try:
        with pytest.raises(SourceError, match=f"port {port} already takes POSTs to /imu1, /imu2; "
                                              "give each source its own path"):
            open_source(f"http://127.0.0.1:{port}", model.manifest)
        assert [post(",".join(map(str, rows[k])), f"/imu{k}") for k in (1, 2, 2)] == [204] * 3
        got = {k: [s.values.tolist() for s in source] for k, source in imu.items()}
    finally:
        for source in imu.values():
            source.close()
    assert got == {1: [np.float32(rows[1]).tolist()], 2: [np.float32(rows[2]).tolist()] * 2}
    if _ipv6_loopback():  # [::1]: an IPv6 address too
        source = open_source(f"http://[::1]:{port}?idle=0.3", model.manifest)
        try:
            request = urllib.request.Request(f"http://[::1]:{port}/", method="POST",
                                             data=",".join(map(str, rows[0])).encode())
            assert urllib.request.urlopen(request, timeout=10).status == 204
            assert len(list(source)) == 1
        finally:
            source.close()
    with socket.socket() as taken:  # another program's server on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                      f"http://127.0.0.1:{taken.getsockname()[1]}"),
                              "cannot listen on")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source", "http://:8080/a",
                                  "--source", "http://:8080/a"),
                          "TCP port 8080, path /a is already a source of this run")


def test_the_latest_result_served_to_whoever_asks(model):
    """Home Assistant's RESTful sensor, a dashboard or `curl` poll a URL rather than listen:
    `--sink serve://:PORT/PATH` answers each GET with the latest result's jsonl record (or a
    stream's, `?stream=K`); 503 before the first, 404 elsewhere, 405 for another method; a
    port in use is one line."""
    import http.client

    from wavedge.runtime.sinks import json_text, record

    port = _free_tcp_port()
    sink = open_sink(f"serve://127.0.0.1:{port}/latest?host_time=1", model.manifest)

    def get(target: str, method: str = "GET") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, target)
            answer = conn.getresponse()
            return answer.status, answer.read().decode()
        finally:
            conn.close()

    try:
        before = get("/latest")
        streams = [model.stream(), model.stream()]
        rows = [np.array(r.split(",")[2:], np.float32)
                for r in RECORDING.read_text().splitlines()[1:4]]
        made = []
        for k, values in enumerate(rows):
            result = streams[k % 2].push(values)
            sink.write(result, Sample(values, stream=k % 2))
            made.append(json.loads(json_text(record(result, Sample(values, stream=k % 2)))))
        latest, first, other = get("/latest"), get("/latest?stream=1"), get("/other")
        unknown, posted = get("/latest?stream=7"), get("/latest", "POST")
        notes = sink.notes()
    finally:
        sink.close()
    assert before == (503, "no result yet")
    got = json.loads(latest[1])
    assert latest[0] == 200 and {k: v for k, v in got.items() if k != "host_time"} == made[2]
    assert abs(got["host_time"] - time.time()) < 60
    assert json.loads(first[1])["step"] == made[1]["step"] and json.loads(first[1])["stream"] == 1
    assert other[0] == 404 and unknown == (404, "no result of stream 7 (streams: 0, 1)")
    assert posted[0] == 405
    assert notes == [f"serve sink serve://127.0.0.1:{port}/latest?host_time=1: 5 GETs from 1 "
                     "host(s)"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink",
                                      f"serve://127.0.0.1:{taken.getsockname()[1]}/latest"),
                              "cannot listen on")
    # a health check during a run: its counters so far, from the run itself
    sink = open_sink(f"serve://127.0.0.1:{port}/latest", model.manifest)
    source = open_source("replay:?rate=20&limit=60", model.manifest)
    thread, summary = _running(run, model.stream(), source, sink)
    deadline = time.monotonic() + 20
    while get("/latest")[0] == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, body = get("/latest/stats")
    one = get("/latest?stream=0")  # a run of one stream: stream 0, as its records number it
    thread.join(30)
    assert one[0] == 200 and "step" in json.loads(one[1])
    stats = json.loads(body)
    assert status == 200 and stats["ok"] and 0 < stats["samples"] < 60, body
    assert set(stats["latency_us"]) == {"p50", "p99"} and stats["dropped"] == {}
    assert summary[0].samples == 60 and summary[0].commands["stats"] == 1


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: str, path: str = "/imu") -> tuple[int, str, str]:
    """A board's POST: (status, Content-Type, body) of its answer."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body.encode())
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read().decode()
    finally:
        conn.close()


def _running(target, *args, **kwargs):
    """``target`` on a thread; its return value in the list once joined."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(target(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, out


def test_a_board_posts_its_samples_and_gets_the_prediction_back(model):
    """A board posting its readings to `http://:PORT/PATH?reply=last` and acting on the
    class had had `204` and no result: it needed a UDP listener at an address the run knew
    as well. Now the POST is answered once the model has taken its samples: the last one's
    jsonl record, as a stream fed the same samples gives it (state carried across POSTs);
    `reply=all` every sample's, a refused one's line of the POST and why; a body with no
    sample 204, one whose every sample is refused 422. Through several sources too (a
    stream per board), and counted in the summary."""
    from wavedge.runtime.loop import run_many
    from wavedge.runtime.sinks import json_text, record

    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:9]]
    alone, expected = model.stream(), []
    for row in rows:
        result = alone.push(np.array(row.split(","), np.float32))
        expected.append(json.loads(json_text(record(result, None))))
    port = _free_tcp_port()
    source = open_source(f"http://127.0.0.1:{port}/imu?reply=last&idle=1", model.manifest)
    thread, summary = _running(run, model.stream(), source, open_sink("null:", model.manifest))
    answers = [_post(port, ",".join(model.manifest.channels)),
               _post(port, "\n".join(rows[:3])), _post(port, "\n".join(rows[3:5])),
               _post(port, "1,2,x,4,5,6")]
    thread.join(30)
    assert answers[0][0] == 204 and summary[0].samples == 5
    assert answers[1:3] == [(200, "application/json", json_text(expected[k])) for k in (2, 4)]
    assert answers[3] == (422, "text/plain; charset=utf-8", "no sample taken (line 1: step 5: "
                          "sample rejected by the source: not_numeric)")
    assert source.notes()[0].endswith("; reply=last: 2 answered 200, 1 answered 204, "
                                      "1 answered 422"), source.notes()
    # reply=all, a source per board: each POST its own stream's records, refusals by line
    urls = [f"http://127.0.0.1:{port}/imu{k}?reply=all&idle=3" for k in (0, 1)]  # slack: CI
    sources = [open_source(u, model.manifest) for u in urls]
    thread, _ = _running(run_many, [model.stream(), model.stream()], sources,
                         open_sink("null:", model.manifest))
    both = [_post(port, "\n".join([rows[0], "1,2\n", rows[1]]), "/imu0"),
            _post(port, "\n".join(rows[:3]), "/imu1")]
    thread.join(30)
    assert [status for status, _, _ in both] == [200, 200]
    assert json.loads(both[0][2]) == [{"stream": 0, **expected[0]},
                                      {"line": 2, "refused": "step 1: sample rejected by the "
                                       "source: wrong_shape"}, {"stream": 0, **expected[1]}]
    assert json.loads(both[1][2]) == [{"stream": 1, **r} for r in expected[:3]]
    # a source whose stream reached --limit while another runs on: its POSTs told at once
    sources = [open_source(u.replace("reply=all", "reply=last"), model.manifest) for u in urls]
    thread, _ = _running(run_many, [model.stream(), model.stream()], sources,
                         open_sink("null:", model.manifest), limit=1)
    over = [_post(port, rows[0], "/imu0"), _post(port, rows[1], "/imu0"),
            _post(port, rows[2], "/imu1")]
    thread.join(30)
    assert [status for status, _, _ in over] == [200, 422, 200]
    assert over[1][2] == "no sample taken (line 1: its stream has ended (--limit))"
    # the run's --smooth N --on-change: the answer is the averaged result, given every time
    from wavedge.runtime.events import Events

    events = Events(smooth=4, on_change=True)
    averaged, ev = model.stream(), events.start()
    smoothed = [json.loads(json_text(record(ev(averaged.push(
        np.array(r.split(","), np.float32)))[0], None))) for r in rows]
    source = open_source(f"http://127.0.0.1:{port}/imu?reply=last&idle=1", model.manifest)
    thread, _ = _running(run, model.stream(), source, open_sink("null:", model.manifest),
                         events=events)
    answers = [_post(port, row) for row in rows]
    thread.join(30)
    assert [json.loads(body) for _, _, body in answers] == smoothed
    assert smoothed != expected


def test_a_post_waiting_on_its_prediction_is_never_left_hanging(model):
    """A POST that waits on its results (`reply=`) is answered 504 when the model has not
    taken them within `wait` seconds, 503 when the run ends before it takes them; the keys
    are checked at open."""
    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:5]]

    class Slow:  # a sink that holds the run
        def write(self, result, sample):
            time.sleep(0.5)

        def close(self):
            pass

    port = _free_tcp_port()
    source = open_source(f"http://127.0.0.1:{port}/imu?reply=last&wait=0.2&idle=1",
                         model.manifest)
    thread, _ = _running(run, model.stream(), source, Slow())
    late = _post(port, "\n".join(rows))
    thread.join(30)
    assert late == (504, "text/plain; charset=utf-8",
                    "the model had not taken the samples within 0.2 s")
    source = open_source(f"http://127.0.0.1:{port}/imu?reply=last&idle=1", model.manifest)
    thread, summary = _running(run, model.stream(), source, open_sink("null:", model.manifest),
                               limit=2)
    ended = _post(port, "\n".join(rows))
    thread.join(30)
    assert ended == (503, "text/plain; charset=utf-8",
                     "the run ended before it took the samples") and summary[0].samples == 2
    # a full queue (queue=1) drops its oldest POST, which is told so at once
    source = open_source(f"http://127.0.0.1:{port}/imu?reply=last&queue=1&idle=1",
                         model.manifest)
    slow = Slow()
    slow.writing = threading.Event()
    slow.write = lambda result, sample: (slow.writing.set(), time.sleep(0.3))
    thread, _ = _running(run, model.stream(), source, slow)
    first = _running(_post, port, rows[0])
    assert slow.writing.wait(20)  # the first POST is in the model; the queue is empty
    second = _running(_post, port, rows[1])
    deadline = time.monotonic() + 20
    while source.inbox.queue.empty() and time.monotonic() < deadline:  # the second waits
        time.sleep(0.01)
    third = _running(_post, port, rows[2])
    for posting in (first, second, third, (thread, None)):
        posting[0].join(30)
    assert [p[1][0][0] for p in (first, second, third)] == [200, 503, 200]
    assert second[1][0][2] == "dropped from the source's full queue"
    for url, words in (("reply=yes", "reply= takes last (the last sample's result) or all"),
                       ("wait=5", "wait= is how long a POST waits for its results"),
                       ("reply=last&resample=1", "resample=1 makes other samples of them")):
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                      f"http://127.0.0.1:{port}/imu?{url}"), words)


def test_several_sinks_each_get_every_result(tmp_path):
    """`--sink jsonl:FILE --sink csv:FILE --sink udp://BOARD`: a file that keeps every result
    beside a board that acts on them; each sink gets every result, as it would alone, and
    the summary has each one's notes. Two sinks on one target are refused, and a sink
    refused at open leaves a file sink's existing file as it was."""
    from wavedge.runtime.sinks import Sinks

    port = _free_udp_port()
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", port))
    board.settimeout(5)
    replay = ("--source", "replay:?rate=max&limit=30")
    try:
        proc = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
                       "--sink", f"csv:{tmp_path / 'a.csv'}", "--sink", f"udp://127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr
        sent = [json.loads(board.recv(65535)) for _ in range(30)]
    finally:
        board.close()
    alone = [json.loads(ln) for ln in run_cli("run", BUNDLED_MODEL, *replay, "--sink",
                                               "jsonl:-").stdout.splitlines()]
    assert [json.loads(ln) for ln in (tmp_path / "a.jsonl").read_text().splitlines()] == \
        alone == sent
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert [(int(r["step"]), r["label"]) for r in rows] == [(r["step"], r["label"]) for r in alone]
    assert f"sinks jsonl:{tmp_path / 'a.jsonl'}, csv:" in proc.stderr
    assert f"udp sink udp://127.0.0.1:{port}: 30 datagrams sent" in proc.stderr
    kept = tmp_path / "kept.jsonl"
    kept.write_text("yesterday's results\n")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"jsonl:{kept}",
                                  "--sink", "udp://127.0.0.1:9?every=2"), "unknown parameter")
    assert kept.read_text() == "yesterday's results\n"
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "jsonl:-", "--sink",
                                  "stdout:"), "standard output is already written by --sink "
                                              "jsonl:-")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", f"jsonl:{kept}", "--sink",
                                  f"csv:{tmp_path}/../{tmp_path.name}/kept.jsonl"),
                          f"the file {kept} is already written by")
    # from Python: counters named by their sink's kind; a user's own sinks' commands, one inbox
    from collections import deque

    class Commanded:
        def __init__(self, *commands):
            self.inbox, self.closed = deque(commands), False

        def write(self, result, sample):
            pass

        def close(self):
            self.closed = True

    manifest = load_model(BUNDLED_MODEL).manifest
    udp = [open_sink(f"udp://127.0.0.1:{port}", manifest) for _ in range(2)]
    a, b = Commanded("reset"), Commanded("stats", "reset")
    both = Sinks([*udp, a, b])
    assert both.counters() == {"udp 1 sent": 0, "udp 1 refused": 0, "udp 2 sent": 0,
                               "udp 2 refused": 0}
    assert Sinks(udp[:1] + [a]).counters() == {"udp sent": 0, "udp refused": 0}
    chosen = Sinks([open_sink(f"udp://127.0.0.1:{port}?on_change=1", manifest), a])
    assert chosen.counters() == {"udp sent": 0, "udp refused": 0, "udp written": 0}
    chosen.close()  # named by the sink it wraps, not as "selected"
    assert [both.inbox.popleft() for _ in range(3)] == ["reset", "stats", "reset"]
    assert not both.inbox and not hasattr(both, "flush_due")
    both.close()
    assert a.closed and b.closed


def test_a_file_sink_is_started_anew_only_when_the_run_begins(tmp_path, model):
    """A run refused before it began (a second file sink that cannot open, another model's
    CSV to append to) had already started the first file sink's file anew, losing
    yesterday's results; it is left as it was now. A run that begins with no result still
    starts it anew (a CSV with its header only); from Python, a sink's first line does."""
    kept = tmp_path / "kept.jsonl"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    other = tmp_path / "other.csv"
    other.write_text("step,speed\n1,2\n")
    replay = ("--source", "replay:?rate=max&limit=3")
    for second in (f"csv:{blocker}/x.csv", f"csv:{other}?append=1",
                   f"jsonl:{blocker}/y.jsonl"):
        for order in ((f"jsonl:{kept}", second), (second, f"jsonl:{kept}")):
            kept.write_text("yesterday's results\n")
            sinks = [a for url in order for a in ("--sink", url)]
            assert_one_line_error(run_cli("run", BUNDLED_MODEL, *replay, *sinks))
            assert kept.read_text() == "yesterday's results\n", order
    assert other.read_text() == "step,speed\n1,2\n"
    out = tmp_path / "out.csv"
    out.write_text("an old run's rows, longer than a header line is, longer still\n" * 3)
    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL,
                           "--source", "stdin:", "--sink", f"jsonl:{kept}", "--sink",
                           f"csv:{out}"], input="", capture_output=True, text=True,
                          timeout=300, env=user_env())
    assert proc.returncode == 0, proc.stderr  # a sensor that sent nothing
    assert kept.read_text() == "" and out.read_text().count("\n") == 1, proc.stderr
    assert out.read_text().startswith("step,")
    kept.write_text("yesterday's results, a long line of them\n")
    sink = open_sink(f"jsonl:{kept}", model.manifest)
    sink.close()  # closed before any result: as it was
    assert kept.read_text() == "yesterday's results, a long line of them\n"
    summary = run(model.stream(), open_source("replay:?limit=2", model.manifest),
                  sink := open_sink(f"jsonl:{kept}", model.manifest))
    assert summary.samples == 2
    assert [json.loads(ln)["step"] for ln in kept.read_text().splitlines()] == [0, 1]
    kept.write_text("yesterday's results, a long line of them\n")
    sink = open_sink(f"jsonl:{kept}", model.manifest)
    sink.write(*next((r, s) for s in open_source("replay:?limit=1", model.manifest)
                     for r in [model.stream().push(s.values)]))
    sink.close()  # written from Python, no run: its first line starts the file anew
    assert len(kept.read_text().splitlines()) == 1 and "yesterday" not in kept.read_text()


def test_a_file_sink_under_a_compressed_name_is_refused(tmp_path):
    """`--sink jsonl:results.jsonl.gz` had written plain text under a gzip name, which
    replay: ("holds no samples"), zcat and pandas then refuse; it is refused at open now."""
    for url in (f"jsonl:{tmp_path}/r.jsonl.gz", f"csv:{tmp_path}/r.csv.XZ?append=1"):
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                      "replay:?rate=max&limit=3", "--sink", url),
                              "write plain text, not", f"name it {tmp_path}/r.")
    assert not list(tmp_path.glob("r.*"))


def test_a_file_sink_over_a_file_the_run_reads_is_refused(tmp_path):
    """`--source replay:log.csv --sink csv:log.csv` had started the recording anew before it
    was read: the run read nothing, ended 0, and left the user's log a header. A sink on a
    file a source reads (by any path to it, appended to or not), or in a folder or glob it
    replays (read as a recording the next time), is refused in one line, the file as it was."""
    log = tmp_path / "logs" / "log.csv"
    log.parent.mkdir()
    log.write_text(RECORDING.read_text())
    for source, sink in ((log, f"csv:{log}"), (log, f"jsonl:{tmp_path}/logs/../logs/log.csv"),
                         (log, f"csv:{log}?append=1"), (log.parent, f"csv:{log}"),
                         (log.parent, f"jsonl:{log.parent}/day2/results.jsonl"),
                         (f"{log.parent}/*.csv", f"csv:{log.parent}/results.csv"),
                         # '**' is any depth, none too (it had been read as one folder)
                         (f"{tmp_path}/**/*.csv", f"csv:{log.parent}/day2/results.csv"),
                         (f"{log.parent}/**/*.csv", f"csv:{log.parent}/results.csv")):
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source",
                                      f"replay:{source}?rate=max", "--sink", sink),
                              f"is read by --source replay:{source}",
                              "give it a file of its own")
        assert log.read_text() == RECORDING.read_text() and os.listdir(log.parent) == \
            ["log.csv"], sink
    beside = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{log.parent}/*.csv?limit=3",
                     "--sink", f"jsonl:{log.parent}/results.jsonl")  # not a file it matches
    assert beside.returncode == 0, beside.stderr
    # --summary FILE had replaced the recording, or the results, with the summary at the end
    results = log.parent / "results.jsonl"
    kept = results.read_text()
    for summary, fragment in ((log, "is read by --source"), (results, "is written by --sink")):
        assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--source", f"replay:{log}?limit=3",
                                      "--sink", f"jsonl:{results}", "--summary", summary),
                              f"--summary {summary}: {summary} {fragment}")
        assert log.read_text() == RECORDING.read_text() and results.read_text() == kept


def test_network_sinks_carry_the_hosts_time_with_host_time():
    """A UDP board's and a webhook's records of a live sensor had no time; with
    ``host_time=1`` (and ``time_format=iso``) they carry this host's clock as each result was
    made, as the file sinks do."""
    import datetime as dt

    model = load_model(BUNDLED_MODEL)
    port = _free_udp_port()
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", port))
    board.settimeout(5)
    hook = _Hook()
    before = time.time()
    try:
        udp = open_sink(f"udp://127.0.0.1:{port}?host_time=1", model.manifest)
        http = open_sink(f"http://127.0.0.1:{hook.port}/hook?host_time=1&time_format=iso",
                         model.manifest)
        sample = next(iter(open_source("replay:?limit=1", model.manifest)))
        result = model.stream().push(sample.values)
        for sink in (udp, http):
            sink.write(result, sample)
            sink.close()
        sent = json.loads(board.recv(65535))
    finally:
        board.close()
        hook.close()
    after = time.time()
    assert before <= sent["host_time"] <= after and "time" not in sent
    (posted,) = hook.bodies
    at = dt.datetime.fromisoformat(posted["host_time"].replace("Z", "+00:00")).timestamp()
    assert posted["host_time"].endswith("Z") and before - 0.001 <= at <= after
    with pytest.raises(SinkError, match="time_format= takes s"):
        open_sink("udp://127.0.0.1:9?time_format=local", model.manifest)


class _Hook:
    """A webhook's server on the loopback (plain, or TLS with ``cert``): the bodies POSTed to
    /hook, answered 204; any other path answered 500."""

    def __init__(self, cert=None, busy_at: int | None = None) -> None:
        """``busy_at``: the first POST of that step is answered 503 (a hook restarting), late."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = self.bodies = []
        sent = self.sent = []  # (Content-Type, body) of every POST to /hook, JSON or not
        busy = [busy_at]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/hook" or (self.path == "/api" and self.headers.get(
                    "Authorization") == "Bearer s3cret")
                if self.path == "/hook":
                    sent.append((self.headers["Content-Type"], body.decode()))
                record = ok and self.headers["Content-Type"] == "application/json" and \
                    "step" in json.loads(body)
                if record and json.loads(body)["step"] == busy[0]:
                    busy[0] = None
                    time.sleep(0.3)  # the run has ended and its sink is closing
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if record:
                    bodies.append(json.loads(body))
                self.send_response(204 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if cert is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert[0], cert[1])
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_results_posted_to_a_webhook(tmp_path):
    """`--sink http://HOST:PORT/PATH` (Home Assistant's webhook, Node-RED): each result one
    JSON POST, the jsonl sink's record, in order, on one kept-alive connection; with the
    sink's own choice only the changes. A hook that answers 500, or nothing listening, is
    counted with its reason, the run unhurt to its end, which is then an error (exit 1, one
    line after the summary: it had ended 0, a wrong URL passing as a success in a script);
    https:// checks the server's certificate."""
    import shutil

    replay = ("--source", "replay:?rate=max&limit=60")
    alone = [json.loads(ln) for ln in run_cli("run", BUNDLED_MODEL, *replay, "--sink",
                                               "jsonl:-").stdout.splitlines()]
    hook = _Hook()
    try:
        url = f"http://127.0.0.1:{hook.port}"
        every = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}/hook")
        posted = list(hook.bodies)
        changes = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}/hook?on_change=1")
        changed = hook.bodies[len(posted):]
        failing = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}/other")
        secrets = tmp_path / "hook.env"  # a token, never on the command line
        secrets.write_text("# the API's token\nWAVEDGE_HTTP_AUTHORIZATION='Bearer s3cret'\n")
        token = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}/api?env={secrets}")
        argv = [sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL, *replay, "--sink",
                f"{url}/api"]
        environ = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={
            **user_env(), "WAVEDGE_HTTP_AUTHORIZATION": "Bearer s3cret"})
        wrong = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                               env={**user_env(), "WAVEDGE_HTTP_AUTHORIZATION": "Bearer guess"})
    finally:
        hook.close()
    assert "60 answered 2xx" in token.stderr and "60 answered 2xx" in environ.stderr, \
        token.stderr + environ.stderr
    assert "60 failed (the last: answered 500" in wrong.stderr, wrong.stderr
    secrets.write_text("TOKEN=x\n")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", f"{url}/api?env={secrets}"),
                          "line 1: expected KEY=VALUE with KEY one of WAVEDGE_HTTP_AUTHORIZATION")
    assert every.returncode == 0 and posted == alone, every.stderr
    assert f"http sink {url}/hook: 60 results posted, 60 answered 2xx, 0 failed" in every.stderr
    labels = [r["label"] for r in alone]
    assert [r["step"] for r in changed] == [k for k in range(60)
                                            if k == 0 or labels[k] != labels[k - 1]]
    assert f"written {len(changed)} of 60 results (on a change of class)" in changes.stderr
    assert "60 failed (the last: answered 500 Internal Server Error)" in failing.stderr
    assert failing.stderr.splitlines()[-1] == f"wavedge: error: http sink {url}/other: none " \
        "of the 60 results reached the hook (the last: answered 500 Internal Server Error)"
    assert failing.returncode == 1 and "samples: 60 in" in failing.stderr
    nobody = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}/hook")
    assert nobody.returncode == 1 and "0 answered 2xx" in nobody.stderr
    assert nobody.stderr.endswith("none of the 60 results reached the hook (the last: "
                                  "Connection refused)\n"), nobody.stderr
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "http:///hook"),
                          "give the host to post to")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "http://ha.local/my hook"),
                          "a space or control character in the host or path", "%20")
    if shutil.which("openssl") is None:
        return
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    hook = _Hook((cert, key))
    try:
        argv = [sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL, *replay, "--sink",
                f"https://127.0.0.1:{hook.port}/hook"]
        trusted = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                 env={**user_env(), "SSL_CERT_FILE": str(cert)})
        untrusted = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                   env=user_env())
    finally:
        hook.close()
    assert "60 answered 2xx" in trusted.stderr and hook.bodies == alone, trusted.stderr
    assert "0 answered 2xx" in untrusted.stderr and "(the last: TLS certificate not " \
        "trusted: " in untrusted.stderr, untrusted.stderr
    assert untrusted.returncode == 1 and "error: http sink" in untrusted.stderr


def test_a_chat_or_a_phone_gets_one_line_a_result():
    """Slack answers a record's JSON fields "invalid payload", ntfy shows them as a blob:
    ``body=text`` posts each result as one plain line, ``body=slack`` as ``{"text": LINE}``,
    ``body=discord`` as ``{"content": LINE}``; the line is the model's name and the result as
    ``stdout:`` reads it."""
    replay = ("--source", "replay:?rate=max&limit=30")
    shown = [" ".join(ln.split()[2:4]) for ln in run_cli(
        "run", BUNDLED_MODEL, *replay, "--sink", "stdout:").stdout.splitlines()]
    name = load_model(BUNDLED_MODEL).manifest.name
    lines = [f"{name}: {text}" for text in shown]
    hook = _Hook()
    try:
        url = f"http://127.0.0.1:{hook.port}/hook"
        for body in ("text", "slack", "discord"):
            ran = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"{url}?body={body}")
            assert ran.returncode == 0 and "30 answered 2xx" in ran.stderr, ran.stderr
    finally:
        hook.close()
    kinds = {kind for kind, _ in hook.sent}
    assert kinds == {"text/plain; charset=utf-8", "application/json"}, kinds
    assert [b for _, b in hook.sent[:30]] == lines
    assert [json.loads(b) for _, b in hook.sent[30:60]] == [{"text": ln} for ln in lines]
    assert [json.loads(b) for _, b in hook.sent[60:]] == [{"content": ln} for ln in lines]
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", f"{url}?body=teams"),
                          "body= takes json (the record), text", "not 'teams'")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink",
                                  f"{url}?body=text&host_time=1"),
                          "body=text posts one line, dated as it arrives")


def test_a_webhook_told_only_of_changes_gets_the_last_one_after_a_failure():
    """`?on_change=1`: the hook hears of a class once. Its answer 503 (restarting) to the
    last change had left it on the class before, for good (a failed POST was never sent
    again); the newest is now sent again after a wait."""
    replay = ("--source", "replay:?rate=max&limit=60")
    labels = [json.loads(ln)["label"] for ln in run_cli(
        "run", BUNDLED_MODEL, *replay, "--sink", "jsonl:-").stdout.splitlines()]
    changes = [k for k in range(60) if k == 0 or labels[k] != labels[k - 1]]
    hook = _Hook(busy_at=changes[-1])
    try:
        run = run_cli("run", BUNDLED_MODEL, *replay, "--sink",
                      f"http://127.0.0.1:{hook.port}/hook?on_change=1")
    finally:
        hook.close()
    assert run.returncode == 0, run.stderr
    assert [b["step"] for b in hook.bodies] == changes, hook.bodies
    assert f"{len(changes)} results posted, {len(changes)} answered 2xx, 0 failed, 1 sent " \
        "again (the last: answered 503 Service Unavailable)" in run.stderr, run.stderr


def _chunked(port: int, path: str = "/imu") -> socket.socket:
    """A connection that has sent the head of a chunked POST to ``path``."""
    board = socket.create_connection(("127.0.0.1", port), timeout=10)
    board.sendall(f"POST {path} HTTP/1.1\r\nHost: pi\r\nTransfer-Encoding: chunked\r\n\r\n"
                  .encode())
    return board


def _chunk(board: socket.socket, text: str) -> None:
    board.sendall(b"%x\r\n%s\r\n" % (len(text.encode()), text.encode()))


def _status(board: socket.socket) -> int:
    answer = board.recv(4096)
    board.close()
    return int(answer.split()[1])


def test_a_board_streams_its_samples_in_one_chunked_post(model, monkeypatch):
    """`sensor | curl -T - http://pi:8080/imu`, an ESP32 streaming with esp_http_client: one
    POST (or PUT) whose chunked body runs as long as the sensor does. Its lines reach the
    model as their chunks come, not at the body's end (a line cut between chunks waits for
    its rest); it is answered 204 when it ends. A JSON document over several chunks is one
    sample; a stream cut short keeps what came before; a line over the limit is 413."""
    import shutil

    from wavedge.runtime.sources import http as http_source

    monkeypatch.setattr(http_source, "MAX_BODY", 1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = [r.split(",", 2)[2] for r in
            (BUNDLED_MODEL / "recording.csv").read_text().splitlines()[1:7]]
    values = [[float(v) for v in r.split(",")] for r in rows]
    channels = model.manifest.channels
    source = open_source(f"http://127.0.0.1:{port}/imu?idle=1", model.manifest)
    try:
        samples = iter(source)
        board = _chunked(port)
        _chunk(board, ",".join(channels) + "\n" + rows[0] + "\n" + rows[1][:5])
        first = next(samples)  # while the POST is still open
        _chunk(board, rows[1][5:] + "\n" + rows[2])
        board.sendall(b"0\r\nX-Trailer: 1\r\n\r\n")
        streamed = _status(board)
        board = _chunked(port)
        pretty = json.dumps(dict(zip(channels, values[3])), indent=2)
        for k in range(0, len(pretty), 20):
            _chunk(board, pretty[k:k + 20])
        board.sendall(b"0\r\n\r\n")
        document = _status(board)
        board = _chunked(port)
        _chunk(board, (rows[0] + "\n") * 20)  # a chunk over the limit, its lines under it
        board.sendall(b"0\r\n\r\n")
        many = _status(board)
        board = _chunked(port)
        _chunk(board, rows[4] + "\n" + rows[5][:3])
        board.sendall(b"zz\r\n")  # not a chunk size
        cut = _status(board)
        board = _chunked(port)
        _chunk(board, "9," * 600)
        too_long = _status(board)
        rest = list(samples)
        notes = source.notes()
    finally:
        source.close()
    assert (streamed, document, many, cut, too_long) == (204, 204, 204, 400, 413)
    np.testing.assert_allclose(first.values, values[0], rtol=1e-6)
    np.testing.assert_allclose(np.stack([s.values for s in rest]),
                               values[1:4] + values[:1] * 20 + values[4:5], rtol=1e-6)
    assert notes[0] == (f"http source http://127.0.0.1:{port}/imu?idle=1: 5 POSTs (3 streamed, "
                        "2 cut short) from 1 sender(s), 0 dropped from a full queue; refused on "
                        "its port: 1 answered 400, 1 answered 413")
    if shutil.which("curl") is None:
        return
    out = subprocess.Popen([sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL,
                            "--source", f"http://127.0.0.1:{port}/imu?idle=2", "--sink",
                            "jsonl:-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=user_env())
    for _ in range(300):  # its server up
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            break
        time.sleep(0.05)
    lines = "\n".join([",".join(channels), *rows]) + "\n"
    curl = subprocess.run(["curl", "-sS", "-T", "-", "-w", "%{http_code}",
                           f"http://127.0.0.1:{port}/imu"], input=lines.encode(),
                          capture_output=True, timeout=30)
    stdout, stderr = out.communicate(timeout=30)
    assert curl.stdout == b"204", curl.stderr
    assert [json.loads(line)["step"] for line in stdout.splitlines()] == list(range(6)), stderr


def _udp_samples(params: str, manifest, datagrams) -> list:
    port = _free_udp_port()
    source = open_source(f"udp://127.0.0.1:{port}?idle=0.3&{params}", manifest)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as board:
            for d in datagrams:
                board.sendto(d.encode() if isinstance(d, str) else d, ("127.0.0.1", port))
        return list(source)
    finally:
        source.close()


def test_a_sensors_json_objects_bring_their_time_and_label(model):
    """An ESP32 publishing its readings as JSON objects, as most do, sends its own clock and
    what it is doing beside them, under its own key names: the time is the sample's (the
    rate checked against the model's), the label its truth (scored), `columns=` maps its
    keys; a status object is no sample, and a label keeps its comma."""
    rows = [[float(v) for v in r.split(",")[2:]]
            for r in (BUNDLED_MODEL / "recording.csv").read_text().splitlines()[1:11]]
    keys = ("ax", "ay", "az", "gx", "gy", "gz")
    mapped = "columns=" + ",".join(f"{c}:{k}" for c, k in zip(model.manifest.channels, keys))

    def objects(period_ms):
        return [json.dumps({"status": "online"})] + [json.dumps(
            {"board": "esp32-1", "time": 1_733_290_000_000 + k * period_ms, **dict(zip(keys, r)),
             "label": "walking, then up" if k > 4 else "standing"}) for k, r in enumerate(rows)]

    got = _udp_samples(f"{mapped}&time_unit=ms", model.manifest, objects(100))
    np.testing.assert_allclose(np.stack([s.values for s in got]), rows, rtol=1e-6)
    assert [s.problem for s in got] == [None] * 10
    assert [s.time for s in got] == pytest.approx([1_733_290_000 + k / 10 for k in range(10)])
    assert [s.truth for s in got] == ["standing"] * 5 + ["walking, then up"] * 5
    with pytest.raises(InputError, match="samples at 100 Hz, the model's rate is 10 Hz"):
        _udp_samples(f"{mapped}&time_unit=ms", model.manifest, objects(10))
    # an object lacking a channel is a bad sample, as a CSV line lacking one is
    short = json.dumps({**dict(zip(keys, rows[0])), "time": 1_733_290_001_000})
    shorter = json.dumps({k: v for k, v in zip(keys[:5], rows[1])})
    got = _udp_samples(f"{mapped}&time_unit=ms&sep=;", model.manifest, [short, shorter])
    assert [s.problem for s in got] == [None, "not_numeric"] and got[0].time == 1_733_290_001
    # laid out over several lines (json.dumps(..., indent=2)): one message, one sample
    pretty = json.dumps(dict(zip(model.manifest.channels, rows[0])), indent=2)
    got = _udp_samples("", model.manifest, [pretty, pretty])
    assert [s.problem for s in got] == [None, None]
    np.testing.assert_allclose(got[1].values, rows[0], rtol=1e-6)


def test_a_file_sink_begins_a_new_file_at_its_size_limit(tmp_path):
    """A service appending results for months filled the board's card: `rotate=SIZE&keep=N`
    renames the file PATH.1 once a batch has taken it past SIZE (the older ones up a number,
    the oldest beyond N removed) and begins a new one, a CSV one with its header. No line is
    cut between files: the files kept, oldest first, are the run's last results."""
    replay = ("--source", "replay:?rate=max")
    every = run_cli("run", BUNDLED_MODEL, *replay, "--sink", "jsonl:-").stdout.splitlines()
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    proc = run_cli("run", BUNDLED_MODEL, *replay, "--sink", f"jsonl:{jsonl}?rotate=64k&keep=2",
                   "--sink", f"csv:{table}?rotate=64k")
    assert proc.returncode == 0, proc.stderr
    kept = [tmp_path / f"r.jsonl.{k}" for k in (2, 1)] + [jsonl]
    assert not (tmp_path / "r.jsonl.3").exists() and all(p.stat().st_size for p in kept)
    lines = [ln for p in kept for ln in p.read_text().splitlines()]
    assert lines == every[-len(lines):] and len(lines) < len(every)
    assert all(p.stat().st_size < 64 * 1024 + 20_000 for p in kept)  # a batch past the limit
    header = table.read_text().splitlines()[0]
    files = sorted(tmp_path.glob("r.csv*"))
    assert len(files) > 2 and all(p.read_text().splitlines()[0] == header for p in files)
    assert re.search(rf"jsonl sink {jsonl}: began a new file \d+ time\(s\) at 65536 bytes, "
                     "keeping 2 full ones", proc.stderr)
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "jsonl:-?rotate=1M"),
                          "rotate= is for a file")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", f"csv:{table}?rotate=10"),
                          "rotate=10 is not a size of 1k or more")
