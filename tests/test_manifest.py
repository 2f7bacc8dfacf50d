"""The manifest is checked before anything else; every fault is one line naming file and problem."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import BUNDLED_MODEL, assert_one_line_error, run_cli
from wavedge.errors import ManifestError
from wavedge.manifest import load_manifest


@pytest.fixture
def model_dir(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, dst)
    return dst


def _edit(model_dir, fn):
    path = model_dir / "manifest.json"
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))


def test_bundled_manifest_loads_and_describes_the_model(model_dir):
    m = load_manifest(model_dir)
    assert m.input_size == 6 and m.output_size == 4 and m.sample_rate_hz == 10.0
    assert m.find_file("step").samples_per_call == 1
    assert m.find_file("chunk").samples_per_call == 32
    assert m.find_file("step", precision="int4") is None


CASES = {
    "not json": (lambda d: (d / "manifest.json").write_text("{ not json"), "not valid JSON"),
    "unknown version": (lambda d: _edit(d, lambda r: r.update(version=7)),
                        "manifest version 7 is not supported"),
    "wrong format": (lambda d: _edit(d, lambda r: r.update(format="tflite-thing")),
                     "format is 'tflite-thing'"),
    "missing field": (lambda d: _edit(d, lambda r: r["input"].pop("channels")),
                      "missing field 'input.channels'"),
    "wrong type": (lambda d: _edit(d, lambda r: r["output"].update(size="4")),
                   "field 'output.size' should be an integer"),
    "bad normalisation": (lambda d: _edit(d, lambda r: r["input"]["normalisation"].update(
        std=[1.0, 1.0])), "input.normalisation.std should hold 6 numbers"),
    "missing manifest": (lambda d: (d / "manifest.json").unlink(), "missing"),
    "missing model file": (lambda d: (d / "model.step.onnx").unlink(),
                           "listed in the manifest but missing"),
    "truncated model": (lambda d: (d / "model.chunk.onnx").write_bytes(
        (d / "model.chunk.onnx").read_bytes()[:100]), "truncated or replaced"),
    "corrupted model": (lambda d: (d / "model.step.onnx").write_bytes(
        bytes(b ^ (i == 500) for i, b in enumerate((d / "model.step.onnx").read_bytes()))),
        "sha256"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_model_directory_is_a_clear_error(model_dir, case):
    damage, message = CASES[case]
    damage(model_dir)
    with pytest.raises(ManifestError, match=message):
        load_manifest(model_dir)


@pytest.mark.parametrize("case", ["not json", "unknown version", "truncated model"])
def test_cli_inspect_reports_a_bad_manifest_in_one_line(model_dir, case):
    CASES[case][0](model_dir)
    assert_one_line_error(run_cli("inspect", model_dir), CASES[case][1], str(model_dir))


def test_cli_inspect_prints_a_summary(model_dir):
    proc = run_cli("inspect", model_dir)
    assert proc.returncode == 0, proc.stderr
    assert "6 channels acc_x" in proc.stdout and "files verified" in proc.stdout
    assert "state:  h [16, 64]" in proc.stdout
