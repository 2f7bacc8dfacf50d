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
    "nested too deeply": (lambda d: (d / "manifest.json").write_text("[" * 100_000),
                          r"not valid JSON \(nested too deeply"),
    "unknown version": (lambda d: _edit(d, lambda r: r.update(version=7)),
                        "manifest version 7 is not supported"),
    "wrong format": (lambda d: _edit(d, lambda r: r.update(format="tflite-thing")),
                     "format is 'tflite-thing'"),
    "missing field": (lambda d: _edit(d, lambda r: r["signature"]["inputs"][0].pop("shape")),
                      r"signature.inputs\[0\]: missing field 'shape'"),
    "wrong type": (lambda d: _edit(d, lambda r: r["signature"]["outputs"][0].update(
        shape="4")), r"signature.outputs\[0\].shape: should be list"),
    "bad normalisation": (lambda d: _edit(d, lambda r: r["signature"]["inputs"][0][
        "preprocessing"].update(std=[1.0, 1.0])),
        r"signature.inputs\[0\].preprocessing.std: should hold 6 numbers"),
    "unserved kind": (lambda d: _edit(d, lambda r: r["signature"]["outputs"][0].update(
        kind="hologram")), "output kind 'hologram' has no head in this runtime"),
    "unserved dtype": (lambda d: _edit(d, lambda r: r["signature"]["state"][0].update(
        dtype="float16")), "dtype 'float16' is not one this runtime serves"),
    "labels and classes disagree": (lambda d: _edit(d, lambda r: r["signature"]["outputs"][0]
        .update(labels=["a", "b"])), "4 classes but 2 labels"),
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
    assert "x float32 sensor acc_x" in proc.stdout and "files verified" in proc.stdout
    assert "y class_scores [4] (badminton" in proc.stdout
    assert "state:  h [16, 64]" in proc.stdout


def _as_version_1(raw: dict) -> None:
    """The bundled manifest as wavedge 0.1 wrote it (version 1: one input, one output)."""
    sig = raw.pop("signature")
    inp, out = sig["inputs"][0], sig["outputs"][0]
    raw.update(version=1, input={
        "name": "x", "channels": inp["channels"], "dtype": "float32",
        "sample_rate_hz": sig["sample_rate_hz"],
        "normalisation": {k: inp["preprocessing"][k] for k in ("mean", "std", "in_graph")}},
        output={"name": "y", "kind": "class_scores", "activation": "logits",
                "size": out["shape"][0], "labels": out["labels"]},
        state=sig["state"])


def _unguarded(sig):
    """A signature without the runtime guards (bounds, state limits), which version 1 lacks."""
    from dataclasses import replace

    return replace(sig, inputs=tuple(replace(i, bounds=None) for i in sig.inputs),
                   state=tuple(replace(s, limit=None) for s in sig.state))


def test_a_version_1_manifest_loads_upgraded_and_upgrade_rewrites_it(model_dir):
    before = _unguarded(load_manifest(model_dir).signature)
    _edit(model_dir, _as_version_1)
    m = load_manifest(model_dir)
    assert m.raw["version"] == 2 and m.signature == before
    proc = run_cli("upgrade", model_dir)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((model_dir / "manifest.json").read_text())
    assert raw["version"] == 2 and "input" not in raw and raw["upgraded_from"]["version"] == 1
    assert load_manifest(model_dir).signature == before


def test_upgrade_of_a_version_2_directory_writes_nothing(model_dir):
    """It had rewritten the manifest all the same, so on a board's read-only model folder it
    failed ("Read-only file system") with nothing to upgrade. The file is left as it is (the
    same inode: not replaced by a copy)."""
    path = model_dir / "manifest.json"
    before = (path.read_bytes(), path.stat().st_ino)
    proc = run_cli("upgrade", model_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{path}: version 2 already; nothing written\n"
    assert (path.read_bytes(), path.stat().st_ino) == before


def test_upgrade_takes_a_boards_pruned_copy_and_still_refuses_a_corrupted_file(model_dir):
    _edit(model_dir, _as_version_1)
    raw = json.loads((model_dir / "manifest.json").read_text())
    onnx = [f["path"] for f in raw["files"] if f["format"] == "onnx"]
    for name in onnx:  # a Pi that runs LiteRT only
        (model_dir / name).unlink()
    proc = run_cli("upgrade", model_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and all(name in proc.stdout for name in onnx)
    upgraded = json.loads((model_dir / "manifest.json").read_text())
    assert upgraded["version"] == 2 and upgraded["files"] == raw["files"]
    kept = next(f["path"] for f in raw["files"] if f["format"] == "tflite")
    data = bytearray((model_dir / kept).read_bytes())
    data[100] ^= 0xFF
    (model_dir / kept).write_bytes(bytes(data))
    before = (model_dir / "manifest.json").read_text()
    assert_one_line_error(run_cli("upgrade", model_dir), "does not match the manifest")
    assert (model_dir / "manifest.json").read_text() == before


def test_upgrade_on_a_full_disk_keeps_the_manifest_it_found(model_dir):
    """The manifest was rewritten in place: a disk that filled mid-write left it cut short,
    and the model folder no longer loaded. It is now written beside and renamed over."""
    import resource
    import subprocess
    import sys

    from conftest import user_env

    _edit(model_dir, _as_version_1)
    before = (model_dir / "manifest.json").read_bytes()
    limit = len(before) // 2

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "upgrade", str(model_dir)],
                          capture_output=True, text=True, timeout=120, env=user_env(),
                          preexec_fn=capped)
    assert_one_line_error(proc, "File too large")
    assert (model_dir / "manifest.json").read_bytes() == before
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []


def test_inspect_checks_a_boards_pruned_copy_when_asked_to(model_dir):
    """A Pi's copy without the .onnx files: inspect refused it outright, so the files that
    were there could not be checked on the board."""
    onnx = sorted(p.name for p in model_dir.glob("*.onnx"))
    for name in onnx:
        (model_dir / name).unlink()
    assert_one_line_error(run_cli("inspect", model_dir), f"{len(onnx)} of its",
                          "`wavedge inspect --ignore-missing` checks those here")
    proc = run_cli("inspect", model_dir, "--ignore-missing")
    assert proc.returncode == 0, proc.stderr
    files = load_manifest(model_dir, verify_files=False).files
    assert f"files {len(files) - len(onnx)} of {len(files)} here" in proc.stdout
    gone = [ln for ln in proc.stdout.splitlines() if ln.endswith("(not here)")]
    assert sorted(ln.split()[1] for ln in gone) == onnx
    kept = next(model_dir.glob("*.tflite"))
    kept.write_bytes(kept.read_bytes()[:-1])
    assert_one_line_error(run_cli("inspect", model_dir, "--ignore-missing"), "truncated")
    for f in model_dir.glob("*.tflite"):
        f.unlink()
    assert_one_line_error(run_cli("inspect", model_dir, "--ignore-missing"),
                          "none of its step graphs is here")


def test_a_model_the_runtime_cannot_serve_is_refused_at_load_naming_it(model_dir):
    from wavedge.runtime import load_model

    _edit(model_dir, lambda r: r["signature"]["outputs"][0].update(kind="regression",
                                                                    shape=[5]))
    with pytest.raises(ManifestError, match=r"output 'y': expected shape \(1, 5\)"):
        load_model(model_dir)


def test_the_manifest_file_given_for_its_directory_is_named_as_such():
    assert_one_line_error(run_cli("inspect", BUNDLED_MODEL / "manifest.json"),
                          "manifest.json: is the manifest; give its model directory "
                          f"({BUNDLED_MODEL})")


def test_one_provider_given_as_a_string_is_one_provider():
    """BackendOptions(providers="cuda") was read as providers c, u, d and a."""
    from wavedge.runtime import BackendOptions

    assert BackendOptions(providers="cuda").providers == ("cuda",)
