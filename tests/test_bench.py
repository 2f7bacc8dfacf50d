"""`wavedge bench`: complete, well-formed output whose ratios come from the same run. Speed is
never asserted here (see docs/benchmarks.md for measured numbers)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import (BUNDLED_CHECKPOINT, BUNDLED_MODEL, BUNDLED_MPL, HAS_TORCH,
                      assert_one_line_error, needs_torch, run_cli)
from wavedge.runtime import available


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    baselines = ("--checkpoint", BUNDLED_CHECKPOINT) if HAS_TORCH else ()
    proc = run_cli("bench", BUNDLED_MODEL, *baselines, "--samples", "100",
                   "--repeats", "2", "--warmup", "20", "--rate", "1000", "--window", "40",
                   "--paced", "0.5", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, json.loads((out / "bench.json").read_text())


def test_every_installed_backend_and_mode_is_measured(report):
    _, _, r = report
    backends = [b for b, ok in available().items() if ok]
    for b in backends:
        for mode in ("step", "bare", "chunk32", "window40"):
            assert f"{b}/fp32/{mode}" in r["configs"], mode
        assert f"{b}/floor" in r["configs"]
    assert {"torch/step", "numpy/step"} <= set(r["configs"]) or not HAS_TORCH
    for name, c in r["configs"].items():
        u = c["us_per_sample"]
        assert 0 < u["min"] <= u["p50"] <= u["p99"] <= u["max"], name
        assert u["p90"] <= u["p99"] and u["std"] >= 0
        assert len(u["p50_per_repeat"]) == 2
        assert c["throughput_samples_per_s"] > 0
        assert set(c["duty_cycle"]) == {"10", "1000"}  # the manifest's 10 Hz and the asked rate


def test_step_configs_carry_init_first_inference_and_size(report):
    _, _, r = report
    step = r["configs"]["onnxruntime/fp32/step"]
    assert step["init_ms"] > 0 and step["first_inference_us"] > 0
    assert step["warmup_us_per_sample"] > 0 and step["artefact_bytes"] > 10_000
    assert r["peak_rss_mb"] > 0
    m = r["machine"]
    assert m["cpu"] and m["cores"] >= 1 and "numpy" in m["versions"]
    assert r["method"]["threads"] == 1 and r["method"]["repeats"] == 2


def test_ratios_are_computed_from_the_same_run(report):
    _, _, r = report
    c = r["configs"]
    for b in [b for b, ok in available().items() if ok]:
        step = c[f"{b}/fp32/step"]["us_per_sample"]["p50"]
        for key, other in ((f"{b}/fp32: step / bare", f"{b}/fp32/bare"),
                           (f"{b}/fp32: step / floor", f"{b}/floor")):
            assert r["ratios"][key] == pytest.approx(step / c[other]["us_per_sample"]["p50"])
        if HAS_TORCH:
            assert r["ratios"][f"{b}/fp32: torch step / step"] == pytest.approx(
                c["torch/step"]["us_per_sample"]["p50"] / step)
        assert r["ratios"][f"{b}/fp32: chunk / step"] > 0
    duty = c["onnxruntime/fp32/step"]["duty_cycle"]["1000"]
    assert duty == pytest.approx(c["onnxruntime/fp32/step"]["us_per_sample"]["p50"] * 1e-3)


def test_the_step_is_also_timed_paced_at_each_rate(report):
    """The duty cycle had come from calls back to back alone, where the caches and a board's
    clock are warm; a run's push comes after the process slept a period, and costs more
    (16 us back to back, 97 us at 100 Hz on this VM). Each rate's schedule is run for
    --paced seconds, PACED_MIN calls at the least and --samples at the most."""
    from wavedge.runtime.bench import PACED_MIN

    _, stdout, r = report
    assert r["method"]["paced_s"] == 0.5
    for b in [b for b, ok in available().items() if ok]:
        name = f"{b}/fp32/step"
        paced = r["configs"][name]["paced"]
        assert set(paced) == {"10", "1000"}
        assert paced["10"]["samples"] == PACED_MIN and paced["1000"]["samples"] == 100
        for rate, p in paced.items():
            assert 0 < p["p50"] <= p["p99"] <= p["max"]
            assert p["duty_cycle"] == pytest.approx(p["p50"] * 1e-6 * float(rate))
            assert r["ratios"][f"{b}/fp32: step paced at {rate} Hz / step"] == pytest.approx(
                p["p50"] / r["configs"][name]["us_per_sample"]["p50"])
            assert re.search(rf"^{re.escape(name)}\s+{rate}\s+{p['samples']}\s+"
                             rf"{p['p50']:.2f}\s", stdout, re.M), stdout
    assert "paced: push (a group's: a tick) on each rate's schedule for 0.5 s" in stdout
    assert all("paced" not in c for n, c in r["configs"].items() if not n.endswith("/step"))


def test_paced_calls_keep_to_their_schedule():
    import time

    from wavedge.runtime.bench import _time_paced

    at = []
    us = _time_paced(lambda: at.append(time.perf_counter()), 200.0, 41)
    assert len(us) == 41 and (us >= 0).all()
    # an absolute schedule: 40 periods of 5 ms (a late wake-up made up by the next, so a busy
    # machine stretches it little; the bound is loose so that no stall fails it)
    assert 0.19 <= at[-1] - at[0] <= 1.0 and np.median(np.diff(at)) >= 0.004


def test_the_boards_conditions_are_recorded_before_and_after_and_said(report, tmp_path,
                                                                     monkeypatch):
    """A Pi's latency moves with its CPU governor, clock, temperature and throttling; the
    bench recorded none of them, so two runs of the same code on one board differed without
    a word why. Read here from a Pi's files laid out under a folder, and its firmware tool
    (a stand-in `vcgencmd` on PATH answering as a Pi 5 on a weak supply does)."""
    import os

    from wavedge.runtime.machine import condition_notes, conditions, conditions_line

    out, stdout, r = report
    assert set(r["conditions"]) == {"before", "after"}
    assert "conditions: " in stdout
    root, cpus = tmp_path / "pi", os.sched_getaffinity(0)
    for c in cpus:
        freq = root / f"sys/devices/system/cpu/cpu{c}/cpufreq"
        freq.mkdir(parents=True)
        for name, text in (("scaling_governor", "ondemand\n"), ("scaling_cur_freq", "1500000\n"),
                           ("cpuinfo_max_freq", "2400000\n")):
            (freq / name).write_text(text)
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("52100\n")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x50005\n")
    (tools / "vcgencmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    before = conditions(root)
    flags = ["under-voltage", "throttled"]
    assert before == {"board": "Raspberry Pi 5 Model B Rev 1.0", "governors": ["ondemand"],
                      "mhz": [1500.0] * len(cpus), "max_mhz": [2400.0] * len(cpus),
                      "temperatures_c": {"cpu-thermal": 52.1},
                      "throttled": {"now": flags, "since_boot": flags}}
    after = {**before, "temperatures_c": {"cpu-thermal": 61.0}}
    assert conditions_line(before, after) == (
        "conditions: Raspberry Pi 5 Model B Rev 1.0; governor ondemand; clock 1500-1500 MHz "
        "after (max 2400); cpu-thermal 52.1 -> 61.0 C; throttled now: under-voltage, "
        "throttled, since boot: under-voltage, throttled")
    notes = condition_notes(before, after)
    assert len(notes) == 2 and notes[0].startswith("CPU governor ondemand: ")
    assert notes[1].startswith("the board was throttled during the run (under-voltage, ")
    steady = {**before, "governors": ["performance"], "throttled": {"now": [],
                                                                    "since_boot": []}}
    assert condition_notes(steady, steady) == []
    nothing = conditions(tmp_path / "vm")  # vcgencmd still answers: a Pi's flags alone
    del nothing["throttled"]
    assert conditions_line(nothing, nothing).startswith("conditions: none exposed here")


def test_table_and_plot_are_written(report):
    out, stdout, _ = report
    assert "onnxruntime/fp32/step" in stdout and "ratios (p50, same run)" in stdout
    assert "duty@1000Hz" in stdout
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the bench extra)")
    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_keeps_every_cell_apart_and_aligned(report):
    """A name that grows with ``--streams`` and a slow baseline in the thousands of us ran
    their cells together ("1229.641224.10-1235.17") in fixed-width columns."""
    from wavedge.runtime.bench import format_table

    _, _, r = report
    r = json.loads(json.dumps(r))
    slow = json.loads(json.dumps(r["configs"]["onnxruntime/fp32/step"]))
    slow["us_per_sample"].update(p50=1229.64, p50_per_repeat=[1224.1, 1235.17], max=123456.7)
    r["configs"]["onnxruntime/fp32/streams16-group-chunk32-round-robin"] = slow
    lines = format_table(r).splitlines()
    end = next(i for i, ln in enumerate(lines) if ln.startswith("(us per sample"))
    head, rows = lines[1], lines[3:end]
    assert len(rows) == len(r["configs"])
    cells = len(head.split()) - 1  # "p50 spread" is one heading in two words
    ends = [m.end() for m in re.finditer(r"\S+", head)]
    for row in rows:
        assert len(row.split()) == cells, row
        assert [m.end() for m in re.finditer(r"\S+", row)][1:] == ends[1:2] + ends[3:], row
    assert "1229.64  1224.10-1235.17" in "\n".join(rows)


def test_compare_two_reports(report, tmp_path):
    out, _, r = report
    other = json.loads(json.dumps(r))
    for c in other["configs"].values():
        c["us_per_sample"]["p50"] *= 2
    del other["conditions"]  # a report written before they were recorded
    (tmp_path / "b.json").write_text(json.dumps(other))
    proc = run_cli("bench", "--compare", out / "bench.json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith("   conditions: ")]
    assert len(said) == 1 and proc.stdout.splitlines()[1] == said[0]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("onnxruntime/fp32/step"))
    assert line.split()[-1] == "2.00"
    # the paced pushes side by side too, where both runs timed them (one board against another)
    other["configs"]["onnxruntime/fp32/step"]["paced"]["10"]["p50"] *= 3
    del other["configs"]["onnxruntime/fp32/step"]["paced"]["1000"]
    (tmp_path / "b.json").write_text(json.dumps(other))
    out_lines = run_cli("bench", "--compare", out / "bench.json", tmp_path / "b.json") \
        .stdout.splitlines()
    paced = [ln.split() for ln in out_lines if ln.startswith("onnxruntime/fp32/step paced")]
    assert [(p[3], p[-1]) for p in paced] == [("10", "3.00")], out_lines


def test_compare_refuses_a_file_that_is_not_a_report(tmp_path):
    (tmp_path / "a.json").write_text('{"hello": 1}')
    assert_one_line_error(run_cli("bench", "--compare", tmp_path / "a.json", tmp_path / "a.json"),
                          "not a wavedge bench report")


@pytest.mark.parametrize("extra, message", [
    (("--pin", "-1"), "cannot pin to CPU -1; this process may run on CPUs 0"),
    (("--pin", "4096"), "cannot pin to CPU 4096; this process may run on CPUs 0"),
    (("--precision", "int4"), "has no step graph at precision 'int4'; it has fp32, int8"),
    (("--paced", "-1"), "paced must be 0 to 3600 seconds, got -1"),
    (("--paced", "nan"), "paced must be 0 to 3600 seconds, got nan"),
])
def test_a_cpu_or_precision_the_bench_cannot_use_is_one_line(extra, message):
    """--pin -1 was a ValueError traceback; --precision int4 printed a table of the floor alone
    and exited 0."""
    assert_one_line_error(run_cli("bench", BUNDLED_MODEL, "--samples", "50", "--repeats", "1",
                                  *extra), message)


def test_settings_the_bench_refuses_leave_no_out_folder(tmp_path):
    assert_one_line_error(run_cli("bench", BUNDLED_MODEL, "--samples", "20", "--out",
                                  tmp_path / "new"), "samples must be at least 50, got 20")
    assert not (tmp_path / "new").exists()


@needs_torch
def test_numpy_baseline_is_the_same_model():
    import torch

    from wavedge.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(BUNDLED_CHECKPOINT)
    mean = np.array(ckpt.meta["normalisation"]["mean"], np.float32)
    std = np.array(ckpt.meta["normalisation"]["std"], np.float32)
    step = ckpt.model.numpy_step()  # the family's hook that bench times
    x = (mean + std * np.random.default_rng(0).standard_normal((200, 6))).astype(np.float32)
    with torch.inference_mode():
        ref = ckpt.model(torch.from_numpy((x - mean) / std)[None])[0].numpy()
    got = np.stack([step(v) for v in x])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_a_backend_or_precision_named_twice_is_measured_once():
    """--backend litert --backend litert measured every configuration twice; a string was read
    as its letters."""
    from wavedge.runtime.bench import BenchOptions

    options = BenchOptions(backends=("litert", "litert"), precisions="fp32,fp32",
                           providers="cuda")
    assert (options.backends, options.precisions, options.providers) == \
        (("litert",), ("fp32",), ("cuda",))


def test_every_installed_backend_runs_on_the_providers_of_those_asked_that_it_has():
    """A Jetson's `bench --provider cuda` measures ONNX Runtime on CUDA and LiteRT on the CPU,
    which a note says; LiteRT had been handed providers it ignored."""
    from wavedge.runtime.bench import BenchOptions, _options_for

    notes = []
    for backend, want in (("onnxruntime", ("cuda", "cpu")), ("litert", ("cpu",))):
        got = _options_for(backend, BenchOptions(providers=("cuda", "cpu"), threads=2), notes)
        assert got.providers == want and got.threads == 2
    assert notes == ["litert on cpu: it has no provider cuda"]


def test_a_board_copy_without_one_formats_files_is_measured_on_what_it_has(tmp_path):
    """A Pi's model directory pruned to its .tflite files: the bench had refused it for the
    .onnx files; it measures the rest and says what it left out. Asked for by name, the
    missing format is one line."""
    import shutil

    if not available()["litert"]:
        pytest.skip("needs LiteRT")
    d = tmp_path / "m"
    shutil.copytree(BUNDLED_MODEL, d)
    for f in d.glob("*.onnx"):
        f.unlink()
    proc = run_cli("bench", d, "--samples", "50", "--repeats", "1", "--warmup", "5",
                   "--precision", "fp32", "--paced", "0", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {c.split("/")[0] for c in report["configs"]} == {"litert"}, report["configs"]
    assert "onnxruntime/fp32 not measured: model.step.onnx is not in the directory" in \
        proc.stdout + proc.stderr
    assert_one_line_error(run_cli("bench", d, "--backend", "onnxruntime", "--precision", "fp32",
                                  "--samples", "50", "--repeats", "1"),
                          "model.step.onnx: listed in the manifest but missing")


def test_a_report_that_does_not_fit_on_the_disk_leaves_the_last_one_whole(report, tmp_path):
    """bench.json was rewritten in place: a full disk left it cut short, and the last run's
    report (a baseline kept for --compare) was lost with it. Now the new one is written
    beside and renamed over; a file-size limit stands in for the full disk."""
    import resource
    import shutil
    import subprocess
    import sys

    from conftest import user_env

    out = tmp_path / "out"
    shutil.copytree(report[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    limit = 1000  # bytes; any report is several times this

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "bench", str(BUNDLED_MODEL),
                           "--backend", "onnxruntime", "--precision", "fp32", "--samples", "50",
                           "--repeats", "1", "--paced", "0", "--out", str(out)],
                          capture_output=True, text=True,
                          timeout=300, env=user_env(), preexec_fn=capped)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("wavedge: error: ") and \
        "File too large" in proc.stderr.splitlines()[-1], proc.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before) and after == before, sorted(after)


@pytest.mark.parametrize("model_dir, verdict", [
    (BUNDLED_MODEL, r"the CPU's classes, the outputs up to \S+ of their scale off \(the "
                    r"export's check allows 1e-05; stepped and in chunks, 4 runs from reset\)"),
    (BUNDLED_MPL, r"NOT the CPU's answers \(largest difference \S+ of the output's scale, "
                  r"[1-9]\d* of 256 classes differ; stepped and in chunks, 4 runs from "
                  r"reset\): do not deploy on it")])
def test_an_accelerator_is_checked_against_the_cpus_answers(monkeypatch, model_dir, verdict):
    """`bench --provider cuda` says whether the graphs give the CPU's answers there: CUDA had
    given every sample the first one's answer, which the times alone never showed. Stood in
    for here by the float32 graphs again (the same) and the int8 graphs (the wave-encoder's
    classes hold, its outputs are off by more than the export's check allows; the
    spike-and-slab RNN's classes differ)."""
    from wavedge.runtime import bench, load_model
    from wavedge.runtime.backends import BackendOptions

    data = bench._Samples(load_model(model_dir).manifest.signature)
    cpu = BackendOptions(providers=("cpu",))
    assert bench.against_cpu(model_dir, "onnxruntime", "fp32", cpu, data) == (
        "onnxruntime/fp32 on cpu: the CPU's answers (largest difference 0 of the output's "
        "scale, 0 of 256 classes differ; stepped and in chunks, 4 runs from reset)")
    loads = []

    def other_precision(model_dir, backend, precision, options):
        loads.append(options)  # the CPU's first, then the accelerator's: int8 there
        return load_model(model_dir, backend, "int8" if len(loads) == 2 else precision,
                          options)

    monkeypatch.setattr(bench, "load_model", other_precision)
    note = bench.against_cpu(model_dir, "onnxruntime", "fp32", cpu, data)
    assert re.fullmatch("onnxruntime/fp32 on cpu: " + verdict, note), note


@pytest.mark.parametrize("model_dir", [BUNDLED_MODEL, BUNDLED_MPL])
def test_the_bare_loop_for_a_gpu_keeps_the_state_there_and_gives_the_same_answers(model_dir):
    """On an accelerator the bench's bare row is the loop a careful user writes there, the
    state kept in the device's memory; run on the CPU's memory here, its answers are the
    runner's, call after call."""
    from wavedge.runtime import load_model

    graph = load_model(model_dir).step_graph
    feeds = [np.random.default_rng(0).normal(size=(50, *graph.inputs[0].shape))
             .astype(np.float32)]
    host, device = graph.bare_call(feeds), graph.bare_call_on_device(feeds, "cpu")
    for _ in range(120):
        np.testing.assert_array_equal(device()[0], host()[0])


def test_a_profile_says_where_each_graphs_time_goes_by_op(tmp_path):
    """`bench --profile`: ONNX Runtime's per-node trace of the step and chunk graphs, run as a
    stream runs them, summed by op type beside the call's time without the profiler; the
    traces and profile.json written; what the profile cannot do is one line."""
    from wavedge.runtime import load_model

    out = tmp_path / "profile"
    proc = run_cli("bench", BUNDLED_MODEL, "--profile", "--precision", "fp32", "--samples",
                   "60", "--warmup", "10", "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "profile.json").read_text())
    assert [(g["graph"], g["file"]) for g in report["graphs"]] == \
        [("step", "model.step.onnx"), ("chunk", "model.chunk.onnx")]
    step, chunk = report["graphs"]
    trace = json.loads((out / "profile-fp32-step.json").read_text())
    assert sum(e.get("name") == "model_run" for e in trace) == 70  # warm-up and samples
    assert step["calls"] == 60 and chunk["calls"] == 10 and step["us_per_call"] > 0
    # the chunk graph's recurrence is unrolled, one Conv a step: every one is in the trace
    convs = load_model(BUNDLED_MODEL).chunk_samples
    assert {o["op"]: o["nodes"] for o in chunk["ops"]}["Conv"] == convs == 32
    assert sum(o["us"] for o in step["ops"]) == pytest.approx(step["kernels_us"])
    assert "onnxruntime fp32 chunk graph (model.chunk.onnx): " in proc.stdout
    assert_one_line_error(run_cli("bench", BUNDLED_MODEL, "--profile", "--backend", "litert"),
                          "ONNX Runtime only", "--enable_op_profiling")
    assert_one_line_error(run_cli("bench", BUNDLED_MODEL, "--profile", "--streams", "2"),
                          "--streams is for the timing bench")
    if available()["litert"]:  # asked of the API: refused, not ignored
        from wavedge.runtime import BackendError, BackendOptions

        with pytest.raises(BackendError, match="no per-operator profile"):
            load_model(BUNDLED_MODEL, "litert", options=BackendOptions(profile=str(tmp_path)))


def test_a_profile_takes_each_node_less_the_profilers_floor():
    """The arithmetic on a trace written by hand: the warm-up calls left out, each node less
    the least any node was given, a Scan counted by the nodes inside it."""
    from wavedge.runtime.profile import summarise

    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op}}

    events = [{"name": "model_run", "ts": 0, "dur": 50}, node("a", "Conv", 1, 40),
              {"name": "model_run", "ts": 100, "dur": 30}, node("a", "Conv", 101, 13),
              node("b", "Relu", 115, 3), node("s", "Scan", 101, 20),
              {"name": "model_run", "ts": 200, "dur": 26}, node("a", "Conv", 201, 11),
              node("b", "Relu", 213, 5)]
    got = summarise(events, skipped=1)
    assert (got["calls"], got["profiler_floor_us"]) == (2, 3)
    assert got["ops"] == [{"op": "Conv", "nodes": 1, "us": 9.0},
                          {"op": "Relu", "nodes": 1, "us": 1.0}]
    assert got["kernels_us"] == 10.0 and got["slowest_nodes"][0]["node"] == "a"
