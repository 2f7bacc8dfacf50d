"""What a run writes of a classifier's results: --smooth, --on-change, --min-score
(``wavedge.runtime.events``)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import BUNDLED_MODEL, assert_one_line_error, run_cli
from wavedge.errors import InputError
from wavedge.runtime import load_model
from wavedge.runtime import Events
from wavedge.runtime.events import Found
from wavedge.runtime.heads import heads_for
from wavedge.runtime.stream import Result
from wavedge.signature import InputSpec, OutputSpec, Signature


def _softmax(z):
    e = np.exp(np.asarray(z, np.float64) - np.max(z))
    return e / e.sum()


def _expected(logits: list, recordings: list, smooth: int, on_change: bool, min_score: float):
    """The steps an independent reading of the rules writes, with their averaged scores: the
    probabilities averaged over the last ``smooth`` samples since the recording began (the
    state's reset), a step written when its score reaches ``min_score`` and, ``on_change``,
    when its class differs from the recording's last written one, its window full."""
    out, window, last = [], [], None
    for step, (z, rec) in enumerate(zip(logits, recordings)):
        if step and rec != recordings[step - 1]:
            window, last = [], None
        window = (window + [_softmax(z)])[-smooth:]
        p = np.mean(window, axis=0)
        c = int(p.argmax())
        if p[c] < min_score or (on_change and (c == last or len(window) < smooth)):
            continue
        last = c
        out.append((step, c, float(p[c])))
    return out


def _found_line(labels: list, steps: list, truth: list) -> str:
    """The summary's line on what the written results found, read independently: each run
    of one true class found by the first result written with it, so many samples in."""
    runs = [k for k in range(len(truth)) if k == 0 or truth[k] != truth[k - 1]]
    delays = []
    for start, end in zip(runs, runs[1:] + [len(truth)]):
        hit = [s for s, lab in zip(steps, labels) if start <= s < end and lab == truth[start]]
        delays += [hit[0] - start] if hit else []
    false = sum(lab != truth[s] for s, lab in zip(steps, labels))
    delays.sort()
    return (f"written against truth: found {len(delays)} of {len(runs)} runs of a true class, "
            f"{delays[0]}-{delays[-1]} samples after (median {delays[len(delays) // 2]}); "
            f"{false} written with another class")


def test_a_classifier_writes_its_class_when_it_changes_averaged_as_asked():
    """`wavedge run --smooth 5 --on-change --min-score 0.6 --reset recording`: the sink
    gets the steps an independent reading of the rules picks from the unfiltered run's
    logits, each reading as the average (label, score and log-probabilities) in the sink;
    the summary scores every sample and says how many were written."""
    rows = list(csv.reader((BUNDLED_MODEL / "recording.csv").open()))[1:]
    recordings = [r[0] for r in rows]
    plain = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max", "--sink", "jsonl:-",
                    "--reset", "recording")
    assert plain.returncode == 0, plain.stderr
    logits = [json.loads(line)["logits"] for line in plain.stdout.splitlines()]
    labels = load_model(BUNDLED_MODEL).manifest.signature.outputs[0].labels
    for options in ((5, True, 0.6), (3, False, 0.9), (1, True, 0.0)):
        smooth, on_change, min_score = options
        argv = ["--smooth", str(smooth), "--min-score", str(min_score)]
        proc = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max", "--sink",
                       "jsonl:-", "--reset", "recording", *argv,
                       *(["--on-change"] if on_change else []))
        assert proc.returncode == 0, proc.stderr
        got = [json.loads(line) for line in proc.stdout.splitlines()]
        want = _expected(logits, recordings, *options)
        assert 0 < len(want) < len(logits) and [r["step"] for r in got] == [w[0] for w in want]
        assert [r["label"] for r in got] == [labels[w[1]] for w in want]
        np.testing.assert_allclose([r["score"] for r in got], [w[2] for w in want], atol=2e-6)
        np.testing.assert_allclose([_softmax(r["logits"]).max() for r in got],
                                   [w[2] for w in want], atol=2e-6)
        assert f"wavedge: written: {len(want)} of {len(logits)} results (" in proc.stderr
        assert "agreement with truth: " in proc.stderr
        assert _found_line([labels[w[1]] for w in want], [w[0] for w in want],
                           [r[1] for r in rows]) in proc.stderr
    # two sensors: each stream averages and changes on its own
    proc = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max", "--source",
                   "replay:?rate=max", "--sink", "jsonl:-", "--reset", "recording",
                   "--smooth", "5", "--on-change", "--min-score", "0.6")
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    for k in (0, 1):
        assert [r["step"] for r in got if r["stream"] == k] == \
            [w[0] for w in _expected(logits, recordings, 5, True, 0.6)], proc.stderr
    assert re.search(r"writes results averaged over 5 samples, on a change of class, score "
                     r"at least 0.6", run_cli(
                         "run", BUNDLED_MODEL, "--source", "replay:?rate=max&limit=3", "--sink",
                         "null:", "--smooth", "5", "--on-change", "--min-score",
                         "0.6").stderr)


def test_events_in_the_api_and_their_refusals():
    """``Events(...).start()`` per stream from Python; a reset starts the average anew; what
    cannot be averaged or is out of range is refused in one line."""
    model = load_model(BUNDLED_MODEL)
    sig = model.manifest.signature
    heads = heads_for(sig)
    n = len(sig.outputs[0].labels)

    def result(step, hot):
        z = np.full(n, -4.0, np.float32)
        z[hot] = 4.0
        return Result(step, [z], heads)

    events = Events(smooth=3, on_change=True).check(sig).start()
    written = [events(result(k, c))[1] for k, c in enumerate([0, 0, 0, 1, 1, 1, 0])]
    assert written == [False, False, True, False, True, False, False]
    events.reset()
    assert [events(result(k, 2))[1] for k in range(3)] == [False, False, True]
    averaged, _ = Events(smooth=2).start()(result(0, 0))
    assert averaged.label == sig.outputs[0].labels[0]
    for bad, message in ((Events(smooth=0), "--smooth must be a whole number, 1 to 100000"),
                         (Events(min_score=1.5), "--min-score: a probability between 0 and 1"),
                         (Events(min_score=float("nan")), "--min-score")):
        with pytest.raises(InputError, match=message):
            bad.check(sig)
    regression = Signature((InputSpec("x", (3,)),), (OutputSpec("y", (2,), "regression"),), ())
    with pytest.raises(InputError, match="for a model whose first output is class scores; y "
                                         "is regression"):
        Events(on_change=True).check(regression)
    Events().check(regression)  # nothing asked: nothing to refuse
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--smooth", "0"), "--smooth")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--min-score", "2"), "--min-score")


def test_a_service_passes_the_flags_on(tmp_path):
    """`service install ... --on-change`: a flag goes into the unit as its name alone (the
    unit's options had all been `--name value`)."""
    from wavedge.cli import build_parser

    proc = run_cli("service", "install", "bm", BUNDLED_MODEL, "--root", tmp_path / "root",
                   "--no-activate", "--wavedge", f"{sys.executable} -m wavedge.cli",
                   "--source", "serial:///dev/ttyACM0", "--sink", "null:", "--smooth", "4",
                   "--on-change")
    assert proc.returncode == 0, proc.stderr
    env = (tmp_path / "root/etc/wavedge/bm.env").read_text()
    options = re.search(r"^WAVEDGE_OPTIONS=(.*)$", env, re.M).group(1).split()
    args = build_parser().parse_args(["run", "m", *options])
    assert (args.smooth, args.on_change, args.min_score) == (4, True, None)
    assert_one_line_error(run_cli("service", "install", "bm", BUNDLED_MODEL, "--root",
                                  tmp_path / "root", "--no-activate", "--source", "stdin:",
                                  "--sink", "null:", "--smooth", "0"), "--smooth")


def test_one_sink_given_its_own_choice_beside_a_file_that_keeps_every_result(tmp_path):
    """`--sink jsonl:all.jsonl --sink 'jsonl:-?smooth=5&on_change=1&min_score=0.6'`: the file
    keeps every result while the other sink (a board's link:) is given the changes alone,
    chosen per stream and started anew at each reset as the run's flags are; its summary
    line counts them. A sink's key out of range, or on a model without class scores, is one
    line, and an unknown key names them beside the sink's own."""
    rows = list(csv.reader((BUNDLED_MODEL / "recording.csv").open()))[1:]
    recordings = [r[0] for r in rows]
    plain = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max", "--sink", "jsonl:-",
                    "--reset", "recording")
    logits = [json.loads(line)["logits"] for line in plain.stdout.splitlines()]
    want = [w[0] for w in _expected(logits, recordings, 5, True, 0.6)]
    chosen = "jsonl:-?smooth=5&on_change=1&min_score=0.6"
    for sources in (["replay:?rate=max"], ["replay:?rate=max"] * 2):
        everything = tmp_path / "all.jsonl"
        proc = run_cli("run", BUNDLED_MODEL, *(a for s in sources for a in ("--source", s)),
                       "--sink", f"jsonl:{everything}", "--sink", chosen, "--reset", "recording")
        assert proc.returncode == 0, proc.stderr
        assert len(everything.read_text().splitlines()) == len(logits) * len(sources)
        got = [json.loads(line) for line in proc.stdout.splitlines()]
        for k in range(len(sources)):
            assert [r["step"] for r in got if r.get("stream", 0) == k] == want
        assert f"sink {chosen}: written {len(want) * len(sources)} of " \
               f"{len(logits) * len(sources)} results (averaged over 5 samples, on a change " \
               "of class, score at least 0.6)" in proc.stderr
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "stdout:?min_score=2"),
                          "stdout:?min_score=2: parameter min_score=2")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "stdout:?smooth=2&x=1"),
                          "unknown parameter(s) x; allowed: every, smooth, on_change, min_score")
    regression = Signature((InputSpec("x", (3,)),), (OutputSpec("y", (2,), "regression"),), ())
    from wavedge.runtime import open_sink

    class Own:
        signature = regression

    with pytest.raises(InputError, match=r"null:\?on_change=1: smooth, on_change and min_score: "
                                         "for a model whose first output is class scores"):
        open_sink("null:?on_change=1", Own())


def test_a_services_status_lines_say_how_many_results_were_written():
    """`--status-every` with events: a service's journal shows what reached the sink as it
    happens (the run's choice, and a sink's own), as the MQTT `stats` command's counters."""
    proc = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=100&limit=60", "--sink",
                   "null:?on_change=1", "--smooth", "2", "--status-every", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("wavedge: status: ")]
    assert lines, proc.stderr
    for line in lines:
        samples = int(line.split()[2])
        written, given = map(int, re.search(r"; written (\d+); sink: written (\d+)$",
                                            line).groups())
        assert written == samples >= given  # the run writes all, the sink takes the changes


def test_the_runs_summary_as_json_for_a_script(tmp_path):
    """`wavedge run ... --summary FILE`: the end's summary as JSON, the numbers of its lines
    by name (a nightly check on recorded data reads it, not the text); written when the run
    fails too; a place it cannot be written is refused before the run, in one line."""
    path = tmp_path / "runs" / "last.json"
    proc = run_cli("run", BUNDLED_MODEL, "--source", "replay:?rate=max", "--sink", "null:",
                   "--smooth", "20", "--on-change", "--min-score", "0.8", "--summary", path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(path.read_text())
    share = float(re.search(r"agreement with truth: ([\d.]+)% of 4000", proc.stderr).group(1))
    assert got["samples"] == 4000 and got["truth"]["metric"] == "agreement"
    assert round(got["truth"]["value"] * 100, 1) == share
    assert got["recording_ends"] == {"recordings": 40, "correct": int(re.search(
        r"recording: (\d+)/40", proc.stderr).group(1))}
    found = got["written"]["against_truth"]
    assert Found.line(found) in proc.stderr and got["written"]["results"] == int(
        re.search(r"written: (\d+) of 4000", proc.stderr).group(1))
    assert got["latency_us"]["p50"] > 0 and got["dropped"] == {} and got["error"] is None
    def fed(lines):
        return subprocess.run([sys.executable, "-m", "wavedge.cli", "run", BUNDLED_MODEL,
                               "--source", "stdin:", "--sink", "null:", "--summary", path],
                              input=lines, capture_output=True, text=True, timeout=120)

    channels = ",".join(load_model(BUNDLED_MODEL).manifest.channels)
    rejected = fed(f"{channels}\na,b,c,d,e,f\n")
    assert rejected.returncode == 1 and json.loads(path.read_text())["dropped"] == {
        "not_numeric": 1}
    refused = fed("1,2\n")  # refused before the run: the file tells of it, not the last run
    assert refused.returncode == 1 and json.loads(path.read_text())["samples"] == 0
    assert json.loads(path.read_text())["error"] in refused.stderr
    for url in (("--source", "serail:///dev/ttyACM0"), ("--sink", "fil:out.csv")):  # a typo
        typo = run_cli("run", BUNDLED_MODEL, *url, "--summary", path)
        assert typo.returncode == 1 and json.loads(path.read_text())["error"] in typo.stderr
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--summary", tmp_path), "is a folder")
    assert_one_line_error(run_cli("service", "install", "bm", BUNDLED_MODEL, "--root",
                                  tmp_path / "root", "--no-activate", "--source", "stdin:",
                                  "--sink", "null:", "--summary", "last.json"),
                          "--summary: last.json is a relative path")
