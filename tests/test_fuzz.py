"""Property-based tests (hypothesis) of what reads untrusted input: the CSV/stdin/serial line
parser, source URLs and the manifest reader (whatever they are given, they answer with data or
with a WavedgeError, never another exception), and the C push against the Python push on any
sample (the same answer or the same error)."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BUNDLED_MODEL
from wavedge.errors import WavedgeError
from wavedge.manifest import load_manifest
from wavedge.recordings import SEPARATORS, Columns, csv_samples

CHANNELS = ("acc_x", "acc_y", "acc_z")
FIELD = st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
                  st.integers().map(str), st.text(max_size=8), st.sampled_from(CHANNELS))
LINE = st.lists(FIELD, max_size=6).map(",".join)
# subnormals off: a backend library loaded earlier in the process (built with fast-math) sets
# flush-to-zero, and hypothesis then refuses to draw them
SETTINGS = settings(max_examples=int(os.environ.get("WAVEDGE_FUZZ_EXAMPLES", 300)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(LINE, max_size=12), st.booleans())
def test_the_line_parser_yields_samples_or_one_error(lines, strict):
    try:
        samples = list(csv_samples([ln + "\n" for ln in lines], CHANNELS, strict=strict))
    except WavedgeError:
        return
    for s in samples:
        assert s.values.shape == (3,) and s.values.dtype == np.float32
        assert s.problem in (None, "not_numeric", "wrong_shape", "bad_line", "line_too_long")


def test_a_line_too_long_is_one_bad_sample_and_never_held_whole():
    import io

    from wavedge.recordings import MAX_LINE, bounded_lines

    text = ",".join(CHANNELS) + "\n1,2,3\n" + "9" * (MAX_LINE * 40) + "\n4,5,6\n"
    lines = list(bounded_lines(io.StringIO(text)))
    assert max(len(ln) for ln in lines) <= MAX_LINE
    got = list(csv_samples(lines, CHANNELS))
    assert [s.problem for s in got] == [None, "line_too_long", None]
    assert got[2].values.tolist() == [4.0, 5.0, 6.0]


@SETTINGS
@given(st.lists(st.lists(st.floats(-1e30, 1e30, allow_subnormal=False), min_size=3, max_size=3), min_size=1,
                max_size=20))
def test_numbers_written_are_numbers_read(rows):
    text = [",".join(CHANNELS) + "\n"] + [",".join(repr(v) for v in r) + "\n" for r in rows]
    got = [s.values for s in csv_samples(text, CHANNELS)]
    assert np.array_equal(np.array(got), np.array(rows, np.float32))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["columns", "sequence", "time", "time_unit", "label"]),
                       st.text(max_size=20), max_size=5), st.lists(LINE, max_size=6),
       st.sampled_from([",", ";", "tab", "space", "|"]))
def test_column_keys_give_samples_or_one_error(params, lines, sep):
    try:
        cols = Columns.from_params({**params, "sep": sep}, "fuzz")
        list(csv_samples([ln + "\n" for ln in lines], CHANNELS, cols))
    except WavedgeError:
        pass


@pytest.fixture(scope="module")
def manifest_model():
    return load_manifest(BUNDLED_MODEL)


@SETTINGS
@given(st.text(max_size=60))
def test_source_urls_open_or_fail_in_one_error(manifest_model, text):
    from wavedge.runtime import open_source

    try:
        source = open_source(text, manifest_model)
    except WavedgeError:
        return
    source.close()


@SETTINGS
@given(st.sampled_from(["replay", "synthetic", "stdin"]),
       st.dictionaries(st.sampled_from(["rate", "loop", "limit", "n", "seed", "columns",
                                        "sample_rate", "resample", "time_unit"]),
                       st.one_of(st.text(max_size=10), st.floats(allow_subnormal=False).map(repr),
                                 st.integers().map(str)), max_size=4))
def test_source_parameters_are_validated_where_parsed(manifest_model, scheme, params):
    from urllib.parse import urlencode

    from wavedge.runtime import open_source

    path = {"replay": str(BUNDLED_MODEL / "recording.csv"), "synthetic": "imu", "stdin": ""}
    try:
        open_source(f"{scheme}:{path[scheme]}?{urlencode(params)}", manifest_model).close()
    except WavedgeError:
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_subnormal=False)
                    | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


OBJECT = st.dictionaries(st.sampled_from([*CHANNELS, "time", "label", "sequence"])
                         | st.text(max_size=6), JSON, max_size=6)


@SETTINGS
@given(st.lists(OBJECT.map(json.dumps) | JSON.map(json.dumps) | LINE, max_size=10),
       st.booleans(), st.booleans(), st.sampled_from([",", ";", "tab"]))
def test_json_lines_yield_samples_or_one_error(lines, strict, mixed, sep):
    """JSON objects (nested, of any values), lists and CSV lines, in any order, on a live
    source or in a file: samples, or one line of error (recordings.Messages)."""
    cols = Columns(sep=SEPARATORS[sep])
    try:
        samples = list(csv_samples([ln + "\n" for ln in lines], CHANNELS, cols, strict=strict,
                                   mixed=mixed))
    except WavedgeError:
        return
    for s in samples:
        assert s.values.shape == (3,) and s.values.dtype == np.float32
        assert s.problem in (None, "not_numeric", "wrong_shape", "bad_line", "line_too_long")
        assert s.time is None or isinstance(s.time, float)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def manifest_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "m"
    shutil.copytree(BUNDLED_MODEL, out)
    return out, json.loads((out / "manifest.json").read_text())


@SETTINGS
@given(st.data())
def test_the_manifest_reader_loads_or_refuses_in_one_error(manifest_copy, data):
    directory, original = manifest_copy
    raw = copy.deepcopy(original)
    paths = [p for p in _paths(raw) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = raw
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()):
                parent[path[-1]] = data.draw(JSON)
            elif isinstance(parent, dict):
                parent.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            continue
    (directory / "manifest.json").write_text(json.dumps(raw))
    try:
        m = load_manifest(directory)
        m.signature, m.reset_policy, m.files  # noqa: B018 - what the runtime reads
    except WavedgeError:
        pass


def _edges(bounds) -> list[float]:
    """The values where a bounds test can go wrong: each bound, the float32 beside it, the
    radius of the ball inside them, zeros of both signs."""
    low, high = (np.asarray(b, np.float32) for b in bounds)
    radius = float(min(np.minimum(-low, high)))
    out = [0.0, -0.0, radius, -radius, float(np.nextafter(np.float32(radius), np.float32(np.inf)))]
    for v in (*low, *high):
        out += [float(v), float(np.nextafter(v, np.float32(np.inf))),
                float(np.nextafter(v, np.float32(-np.inf)))]
    return out


@pytest.fixture(scope="module")
def stream_pairs():
    from wavedge.runtime import accel, available, load_model

    if not accel.available():
        pytest.skip("the C fast path was not built here")
    pairs = []
    for backend in [b for b, ok in available().items() if ok]:
        model = load_model(BUNDLED_MODEL, backend)
        for policy in ("hold", "reject"):
            fast = model.stream(policy=policy)
            accel.use(False)
            slow = model.stream(policy=policy)
            accel.use(True)
            pairs.append((fast, slow))
    return pairs, _edges(pairs[0][0].signature.inputs[0].bounds)


VALUE = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=False)


@SETTINGS
@given(st.data())
def test_the_c_push_answers_as_the_python_push(stream_pairs, data):
    pairs, edges = stream_pairs
    values = data.draw(st.lists(st.one_of(VALUE, st.sampled_from(edges)), min_size=5,
                                max_size=7))
    form = data.draw(st.sampled_from(["float32", "float64", "list", "row", "strided"]))
    x = np.asarray(values, np.float32)
    sample = {"float32": x, "float64": x.astype(np.float64), "list": values,
              "row": x[None], "strided": np.repeat(x, 2)[::2]}[form]
    for fast, slow in pairs:
        outcomes = []
        for stream in (fast, slow):
            try:
                r = stream.push(sample)
                outcomes.append((r.step, r.values[0].tobytes()))
            except WavedgeError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]
        assert fast.stats == slow.stats
