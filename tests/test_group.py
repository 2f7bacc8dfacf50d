"""StreamGroup: N streams stepped in one call of a batch graph (`wavedge export --batch N`)."""

from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import diverge  # noqa: E402
from wavedge.errors import InputError, ManifestError  # noqa: E402
from wavedge.export.model_dir import ExportOptions, export_model_dir  # noqa: E402
from wavedge.models.base import StepModel  # noqa: E402
from wavedge.models.checkpoint import load_checkpoint  # noqa: E402
from wavedge.runtime.model import load_model  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "wavedge" / "bundled"


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("b4") / "model"
    ckpt = load_checkpoint(BUNDLED / "wave_basic_motions.pt")
    export_model_dir(ckpt, out, ExportOptions(batch=4))
    return out


def _same(actual, desired):
    """A member's row against its stream alone: equal within the export's gate against torch
    (rounding, which the recurrence carries along: 3.5e-6 after 300 steps). The ONNX graphs of
    several streams run the ring convolution as a 2-D Conv (wavedge.models.wave_rnn._ring),
    whose sums ONNX Runtime orders otherwise; a wrong row or state is off by far more."""
    tol = StepModel.export_tolerance
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol)


def _data(n=60, streams=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, streams, 6)).astype(np.float32)


def test_manifest_lists_batch_graphs_checked_against_torch(batch_dir):
    model = load_model(batch_dir, streams=3)
    assert model.batch == 4 and model.manifest.batches() == [1, 4]
    entry = model.manifest.find_file("step", batch=4)
    assert entry.error_vs_torch["error"] < 1e-5
    assert entry.error_vs_torch["steps"] == 4 * model.manifest.raw["check"]["steps"]


def test_group_equals_separate_streams(batch_dir):
    group = load_model(batch_dir, streams=4).group()
    keys = [group.add(k).key for k in ("a", "b", "c", "d")]
    single = load_model(batch_dir)
    streams = [single.stream() for _ in keys]
    for tick in _data():
        res = group.push(tick)
        for k, s, x in zip(keys, streams, tick):
            want = s.push(x)
            _same(res[k].values[0], want.values[0])
            assert res[k].step == want.step
    for k, s in zip(keys, streams):
        _same(group.member(k).state[0], s.state[0])


def test_rejected_or_absent_member_keeps_its_state(batch_dir):
    group = load_model(batch_dir, streams=2).group()
    a, b = group.add(), group.add(policy="hold")
    ticks = _data(10, 2)
    for t in ticks:
        group.push(t)
    before = a.state[0].copy()
    bad = np.full(6, np.nan, np.float32)
    res = group.push({a.key: bad, b.key: bad})
    assert list(res.errors) == [a.key] and "NaN" in str(res.errors[a.key])
    assert res.keys() == [b.key] and b.stats.repaired["non_finite"] == 1
    np.testing.assert_array_equal(a.state[0], before)
    group.push({b.key: ticks[0]})  # a left out: not stepped
    assert len(group.push({a.key: bad})) == 0  # every sample rejected: nothing stepped
    np.testing.assert_array_equal(a.state[0], before)
    assert a.steps == 10 and b.steps == 12 and a.stats.dropped["non_finite"] == 2


def test_members_join_and_leave(batch_dir):
    group = load_model(batch_dir, streams=2).group()
    a = group.add()
    for t in _data(5, 1):
        group.push(t)
    b = group.add()
    with pytest.raises(InputError, match=r"stream key \['imu'\]: a key is a name or a number"):
        group.add(["imu"])
    with pytest.raises(InputError, match=r"no stream \['imu'\] in this group"):
        group.remove(["imu"])
    assert len(group) == 2  # a refused key takes no row
    group.remove(a.key)
    c = group.add()
    assert c.slot == a.slot and c.steps == 0
    np.testing.assert_array_equal(c.state[0], 0)  # joins from reset, whatever a left
    while len(group) < group.capacity:  # 4: the exported batch that holds 2
        group.add()
    with pytest.raises(InputError, match="full"):
        group.add()
    with pytest.raises(InputError, match="belongs to a group"):
        b.push(np.zeros(6, np.float32))
    with pytest.raises(InputError, match="3 samples for 4 streams"):
        group.push(np.zeros((3, 6), np.float32))
    counts = {k: 4 if k == b.key else 3 for k in group.keys}
    given = ", ".join(f"{k} {n}" for k, n in counts.items())
    with pytest.raises(InputError, match=rf"^push_chunk: the members' sample counts differ "
                                         rf"\({given}\); give each the same N by key order, "
                                         r"or a mapping of key to samples$"):
        group.push_chunk([np.zeros((n, 6), np.float32).tolist() for n in counts.values()])
    for tick in (None, 5, "abcd"):  # a TypeError; a string, one letter per member
        with pytest.raises(InputError, match="a tick is a mapping of key to sample, or one"):
            group.push(tick)


def test_a_handle_kept_on_a_removed_member_touches_no_one_elses_row(batch_dir):
    """A reset through the handle of a member that had left reset whichever member took its
    row over, and its counters were the newcomer's."""
    group = load_model(batch_dir, streams=2).group()
    gone = group.add("gone")
    group.add("stays")
    for t in _data(5, 2):
        group.push(t)
    kept, counts = gone.state, (gone.steps, dict(gone.stats.dropped))
    group.remove("gone")
    new = group.add("new")
    assert new.slot == gone.slot
    for t in _data(7, 2, seed=1):
        group.push(t)
    live = new.state
    for act in (gone.reset, lambda: setattr(gone, "state", kept),
                lambda: gone.push(np.zeros(6, np.float32))):
        with pytest.raises(InputError, match=r"^stream 'gone' has left its group"):
            act()
    np.testing.assert_array_equal(new.state[0], live[0])  # untouched
    assert new.steps == 7 and (gone.steps, dict(gone.stats.dropped)) == counts
    np.testing.assert_array_equal(gone.state[0], kept[0])  # what it had when it left
    assert "'gone', left its group" in repr(gone)


def test_no_batch_graphs_is_one_clear_error(batch_dir):
    with pytest.raises(ManifestError, match="--batch 8"):
        load_model(batch_dir, streams=8)
    with pytest.raises(InputError, match="make a group"):
        load_model(batch_dir, streams=4).stream()


def test_bench_streams_rows(batch_dir):
    from wavedge.runtime.bench import BenchOptions, run_bench

    report = run_bench(batch_dir, BenchOptions(samples=100, repeats=1, warmup=5, streams=4,
                                               backends=("onnxruntime",), precisions=("fp32",),
                                               paced_s=0.2, rates_hz=(50.0,)))
    names = set(report["configs"])
    for mode in ("round-robin", "group", "group-bare"):
        assert f"onnxruntime/fp32/streams4-{mode}" in names
    group = report["configs"]["onnxruntime/fp32/streams4-group"]
    assert group["batch"] == 4
    assert "onnxruntime/fp32: group / raw batch call" in report["ratios"]
    # a group's tick paced as a run of 4 sensors calls it: per sample per stream, as its
    # back-to-back row, and the duty cycle of the whole tick
    paced = group["paced"]
    assert set(paced) == set(report["configs"]["onnxruntime/fp32/step"]["paced"])
    for rate, p in paced.items():
        assert p["samples"] >= 10 and 0 < p["p50"] <= p["p99"] <= p["max"]
        assert p["duty_cycle"] == pytest.approx(4 * p["p50"] * 1e-6 * float(rate))
        assert report["ratios"][f"onnxruntime/fp32: group paced at {rate} Hz / group"] == \
            pytest.approx(p["p50"] / group["us_per_sample"]["p50"])


def test_poisoned_member_is_reset_and_rerun_the_others_untouched(batch_dir):
    group = load_model(batch_dir, streams=2).group()
    a, b = group.add(), group.add()
    single = load_model(batch_dir).stream()
    ticks = _data(5, 2)
    for t in ticks:
        group.push(t)
        want = single.push(t[1])
    diverge(a)
    res = group.push(ticks[0])
    assert a.stats.state_resets["non_finite"] == 1 and np.isfinite(res[a.key].values[0]).all()
    _same(res[b.key].values[0], single.push(ticks[0][1]).values[0])
    assert want is not None and b.stats.state_resets == {}


def test_run_of_several_sources_on_a_group_equals_each_alone(batch_dir, tmp_path):
    from wavedge.runtime.loop import run, run_many
    from wavedge.runtime import open_source

    class Collect:
        def __init__(self):
            self.rows = []

        def write(self, result, sample):
            self.rows.append((sample.stream, result.step, result.values[0].copy()))

        def close(self):
            pass

    rec = BUNDLED / "wave_basic_motions" / "recording.csv"
    lines = rec.read_text().splitlines()
    bad = tmp_path / "bad.csv"  # a second sensor whose 5th row is not numeric
    rows = [lines[0], *lines[1001:1301]]
    rows[5] = ",".join(["oops"] * len(rows[5].split(",")))
    bad.write_text("\n".join(rows) + "\n")
    urls = [f"replay:{rec}?rate=max&limit=500", f"replay:{bad}?rate=max",
            "synthetic:imu?n=120&rate=max"]
    model = load_model(batch_dir, streams=3)
    group = model.group()
    for k in range(3):
        group.add(k)
    sink, warnings = Collect(), []
    summary = run_many(group, [open_source(u, model.manifest) for u in urls], sink,
                       warn=warnings.append)
    assert summary.one_call and summary.streams == [500, 299, 120]
    # the warning names the sensor and the line of its recording (line 1 is the header)
    assert len(warnings) == 1 and warnings[0].startswith("stream 1: line 6, step 4: ")
    assert summary.dropped == {"not_numeric": 1} and group.member(1).stats.dropped == {
        "not_numeric": 1}
    # the summary says which sensor it was
    assert summary.stream_faults == [{}, {"dropped not_numeric": 1}, {}]
    assert "  stream 1: dropped not_numeric 1" in summary.lines()
    single = load_model(batch_dir)
    for k, url in enumerate(urls):
        alone = Collect()
        run(single.stream(), open_source(url, single.manifest), alone, warn=lambda m: None)
        mine = [r[1:] for r in sink.rows if r[0] == k]
        assert [r[0] for r in mine] == [r[1] for r in alone.rows]
        _same(np.stack([r[1] for r in mine]), np.stack([r[2] for r in alone.rows]))


def test_cli_run_with_sources_on_a_batch_directory_says_one_call(batch_dir):
    from conftest import run_cli

    rec = BUNDLED / "wave_basic_motions" / "recording.csv"
    proc = run_cli("run", batch_dir, "--source", f"replay:{rec}?rate=max&limit=200",
                   "--source", "synthetic:imu?n=100&rate=max", "--sink", "null:",
                   "--group", "always")
    assert proc.returncode == 0, proc.stderr
    assert "2 streams, one call of the batch-4 step graph per tick" in proc.stderr
    assert "streams: 2, one call per tick for all (a group); samples 200, 100" in proc.stderr
    many = [a for k in range(5) for a in ("--source", f"synthetic:imu?n=5&seed={k}")]
    proc = run_cli("run", batch_dir, *many, "--sink", "null:")
    assert proc.returncode == 0 and "5 streams, stepped in turn" in proc.stderr


def test_push_chunk_runs_every_member_through_the_batch_chunk_graph(batch_dir):
    model = load_model(batch_dir, streams=3)
    assert model.chunk_graph is not None and model.chunk_graph.batch == 4
    group = model.group()
    keys = [group.add(k, policy=p).key
            for k, p in (("a", "reject"), ("b", "hold"), ("c", "reject"))]
    x = _data(100, 3, seed=4).transpose(1, 0, 2).copy()  # [streams, N, 6]: 3 chunks of 32 + 4
    single = load_model(batch_dir)
    streams = [single.stream() for _ in keys]
    out = group.push_chunk(x)
    for k, s, xs in zip(keys, streams, x):
        want = s.push_chunk(xs)
        np.testing.assert_array_equal(out[k].steps, want.steps)
        np.testing.assert_allclose(out[k].values[0], want.values[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(group.member(k).state[0], s.state[0], rtol=0, atol=1e-5)
    assert group.member("a").steps == 100
    # a bad sample: the chunk goes sample by sample, each member under its own policy
    bad = _data(40, 3, seed=5).transpose(1, 0, 2).copy()
    bad[0, 7, 2] = np.nan
    bad[1, 9, 0] = np.inf
    out = group.push_chunk(MappingProxyType({"a": bad[0], "b": bad[1], "c": bad[2]}))
    assert len(out["a"]) == 39 and len(out["b"]) == 40 and len(out["c"]) == 40
    assert list(out.errors) == ["a"] and "NaN" in str(out.errors["a"][0])
    assert out["a"].steps[0] == 100 and out["a"].steps[-1] == 138
    assert group.member("b").stats.repaired["non_finite"] == 1
    with pytest.raises(InputError, match=r"expected \[3 streams, N samples, 6\]"):
        group.push_chunk(bad[:2])
    # a sample of the wrong width had every sample of every member dropped, nothing raised
    steps = [group.member(k).steps for k in keys]
    for wrong in (bad[:, :, 0], bad[:, :, :5]):
        with pytest.raises(InputError, match=r"expected \[3 streams, N samples, 6\], got shape"):
            group.push_chunk(wrong)
    assert [group.member(k).steps for k in keys] == steps
    assert sum(group.member("c").stats.dropped.values()) == 0


def test_push_chunk_takes_bursts_of_some_members_of_unequal_counts(batch_dir):
    """Sensors that deliver bursts at their own times (BLE packets): some members' samples,
    each its own count. push_chunk had refused anything but every member's N samples, so
    such a board pushed sample by sample itself."""
    group = load_model(batch_dir, streams=3).group()
    for k in "abc":
        group.add(k)
    single = load_model(batch_dir)
    alone = {k: single.stream() for k in "abc"}
    x = _data(40, 3, seed=6).transpose(1, 0, 2).copy()
    nothing = np.empty((0, 6), np.float32)  # a sensor that delivered nothing this time
    for burst in ({"a": x[0, :5], "c": x[2, :2], "b": nothing},
                  {"c": x[2, 2:40], "b": x[1, :1]}, {"a": x[0, 5:40], "b": x[1, 1:40]}):
        out = group.push_chunk(burst)
        for k, xs in burst.items():
            want = alone[k].push_chunk(xs)
            np.testing.assert_array_equal(out[k].steps, want.steps)
            np.testing.assert_allclose(out[k].values[0], want.values[0], rtol=0, atol=1e-5)
        assert [len(out[k]) for k in "abc"] == [len(burst.get(k, ())) for k in "abc"]
    for k in "abc":
        assert group.member(k).steps == 40
        np.testing.assert_allclose(group.member(k).state[0], alone[k].state[0], atol=1e-5)
    with pytest.raises(InputError, match=r"^push_chunk: stream 'b': expected \[N samples, 6\], "
                                         r"got shape \(3, 5\)$"):
        group.push_chunk({"a": x[0, :3], "b": x[1, :3, :5]})
    with pytest.raises(InputError, match=r"no stream 'z' in this group"):
        group.push_chunk({"z": x[0, :3]})
    assert [group.member(k).steps for k in "abc"] == [40, 40, 40]  # a refused call steps none


def test_a_whole_tick_as_one_array_equals_the_same_tick_given_by_key(batch_dir):
    """The whole-tick path (one float32 array, or a mapping naming every member in key order,
    as `wavedge run` gives it) against the general one (a mapping in another order, or a
    mapping that is not a dict, such as a read-only view), including ticks whose state check
    is due, a poisoned member and samples outside the ball about 0."""
    model = load_model(batch_dir, streams=3)
    whole, in_order, by_key, view = (model.group() for _ in range(4))
    for g in (whole, in_order, by_key, view):
        for k in "abc":
            g.add(k)
    ticks = _data(70, 3, seed=3) * 3  # some samples past the ball, inside the bounds or not
    for i, tick in enumerate(ticks):
        if i == 40:  # a poisoned state, as a diverging member would have
            for g in (whole, in_order, by_key, view):
                diverge(g.member("b"))
        r1 = whole.push(tick)
        for r2 in (in_order.push(dict(zip("abc", tick))),
                   by_key.push(dict(zip("cba", tick[::-1]))),
                   view.push(MappingProxyType(dict(zip("abc", tick))))):
            assert sorted(r1.keys()) == sorted(r2.keys()) and set(r1.errors) == set(r2.errors)
            for k in r1.keys():
                np.testing.assert_array_equal(r1[k].values[0], r2[k].values[0])
                assert r1[k].step == r2[k].step
    for k in "abc":
        a = whole.member(k)
        for b in (in_order.member(k), by_key.member(k), view.member(k)):
            assert (a.steps, a.stats.dropped, a.stats.state_resets) == \
                (b.steps, b.stats.dropped, b.stats.state_resets)
            np.testing.assert_array_equal(a.state[0], b.state[0])
    assert whole.member("b").stats.state_resets["non_finite"] == 1


def test_results_keep_their_steps_when_one_member_moves_on(batch_dir):
    group = load_model(batch_dir, streams=2).group()
    a, b = group.add(), group.add()
    ticks = _data(3, 2)
    first = group.push(ticks[0])
    group.push({a.key: ticks[1][0]})  # a alone: its count moves, b's does not
    second = group.push(ticks[2])
    assert (first[a.key].step, first[b.key].step) == (0, 0)
    assert (second[a.key].step, second[b.key].step) == (2, 1)
    assert (a.steps, b.steps) == (3, 2)


def test_group_in_python_alone_equals_the_fast_path(batch_dir):
    from wavedge.runtime import accel

    ticks = _data(40, 4, seed=5)
    previous = accel.use(False)
    try:
        slow = load_model(batch_dir, streams=4).group()
        [slow.add() for _ in range(4)]
        # copies: a runner may hand out its own buffers, which the next push overwrites
        want = [[(k, r[k].values[0].copy(), r[k].step) for k in r.keys()]
                for r in (slow.push(t) for t in ticks)]
    finally:
        accel.use(previous)
    fast = load_model(batch_dir, streams=4).group()
    [fast.add() for _ in range(4)]
    for t, rows in zip(ticks, want):
        got = fast.push(t)
        assert got.keys() == [k for k, _, _ in rows]
        for k, values, step in rows:
            np.testing.assert_array_equal(got[k].values[0], values)
            assert got[k].step == step
