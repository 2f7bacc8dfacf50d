"""What a board's install relies on beyond the runtime tests: the ONNX Runtime provider
choice (a Jetson's CUDA and TensorRT, refused in one line where the build lacks them, TensorRT
with an engine cache so a restart does not rebuild), and the packaging markers that let a
32-bit ARM board install wavedge without onnxruntime. Torch-free."""

from __future__ import annotations

import tomllib

import pytest

from conftest import BUNDLED_MODEL, ROOT, assert_one_line_error, run_cli


def test_an_absent_provider_is_a_one_line_error_naming_the_fix():
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        return  # a GPU build: nothing to refuse here
    proc = run_cli("run", BUNDLED_MODEL, "--provider", "tensorrt", "--limit", "1")
    assert_one_line_error(proc, "provider 'tensorrt' is not available", "onnxruntime-gpu")


def test_tensorrt_gets_an_engine_cache_cuda_float32_and_cpu_stays_the_fallback(tmp_path,
                                                                              monkeypatch):
    """The provider list handed to ONNX Runtime, were the build to have TensorRT (only the
    list of available providers is stood in for: no GPU here)."""
    import onnxruntime as ort

    from wavedge.runtime.backend_onnxruntime import resolve_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    got = resolve_providers(("tensorrt", "cuda"), str(tmp_path / "trt"))
    (name, opts), cuda, cpu = got
    assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    # CUDA in float32 as the CPU: its default TF32 rounds to 10 bits, carried by the recurrence
    assert (cuda, cpu) == (("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider")


def test_a_32_bit_arm_board_installs_without_onnxruntime_and_tflite_runtime_pins_numpy():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ort,) = [d for d in project["dependencies"] if d.startswith("onnxruntime")]
    assert "platform_machine != 'armv7l'" in ort
    assert set(project["optional-dependencies"]["tflite-runtime"]) == {
        "tflite-runtime==2.14.0", "numpy<2"}


def test_the_arm64_comparison_holds_labels_exactly_and_logits_to_the_precisions_bound(tmp_path):
    """`make test-arm64`'s judge (scripts/arm64/compare.py), on runs written here: a changed
    label or an fp32 logit past 1e-4 fails; an int8 logit 0.05 off passes its 0.1 bound."""
    import json
    import subprocess
    import sys

    def write(name, labels, logits):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"label": a, "logits": [b]}) + "\n" for a, b in zip(labels, logits)))

    write("host-m-litert-fp32", "ab", [1.0, 2.0])
    write("arm64-m-litert-fp32", "ab", [1.0, 2.00005])
    write("host-m-litert-int8", "ab", [1.0, 2.0])
    write("arm64-m-litert-int8", "ab", [1.05, 2.0])
    script = str(ROOT / "scripts" / "arm64" / "compare.py")

    def judge(*names):
        return subprocess.run([sys.executable, script, str(tmp_path), "1e-4", "0.1", "qemu",
                               *names], capture_output=True, text=True)

    assert judge("m-litert-fp32", "m-litert-int8").returncode == 0
    write("arm64-m-litert-fp32", "aa", [1.0, 2.0])
    bad = judge("m-litert-fp32")
    assert bad.returncode == 1 and "1 labels differ" in bad.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["runs"][0]["ok"] is False


def test_the_pure_python_board_wheel_builds_without_a_packaging_warning(tmp_path):
    """docs/boards.md's wheel for a board without a compiler, built from a copy of the sources
    as a user's `pip wheel .` would: pure Python, the bundled model inside, the license stated
    and its text inside (MIT asks that it travel with every copy), and no warning from
    setuptools (the table form of `license` warned that builds stop working from
    2027-02-18)."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(ROOT / "wavedge", src / "wavedge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "WAVEDGE_PURE_PYTHON": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert "Warning" not in said and "deprecated" not in said, said[-2000:]
    (wheel,) = (tmp_path / "dist").glob("wavedge-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: MIT" in zf.read(meta).decode()
        assert "License-File: LICENSE" in zf.read(meta).decode()
        (text,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert b"Permission is hereby granted" in zf.read(text)  # MIT asks its text be kept
    assert "wavedge/bundled/wave_basic_motions/model.step.tflite" in names
    assert not [n for n in names if n.endswith((".so", ".pyd"))]


def test_a_provider_that_does_not_start_is_refused_and_its_banner_kept_off_stdout(
        tmp_path, monkeypatch, capsys):
    """TensorRT asked for where its libraries are missing: ONNX Runtime's Python API prints a
    banner on standard output (where `--sink jsonl:-` writes results) and retries on CUDA and
    the CPU (seen on an H200: `--provider tensorrt` alone ran on CUDA). Stood in for here by
    its banner and a session on the CPU; the run now refuses in one line, stdout clean."""
    import onnxruntime as ort

    from wavedge.runtime import BackendError, BackendOptions, load_model

    real = ort.InferenceSession

    def falls_back(path, options, providers):
        print("*************** EP Error ***************")
        print("EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void"
              " onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, "
              "const onnxruntime::ProviderOptions&) Please install TensorRT libraries as "
              "mentioned in the GPU requirements page, make sure they're in the PATH or "
              "LD_LIBRARY_PATH, and that your GPU is supported.\n when using "
              f"{providers}")
        print("Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.")
        print("****************************************")
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", falls_back)
    with pytest.raises(BackendError) as caught:
        load_model(BUNDLED_MODEL, options=BackendOptions(providers=("tensorrt",),
                                                         trt_cache=str(tmp_path)))
    assert str(caught.value).endswith(
        "model.step.onnx: onnxruntime could not start provider tensorrt: Please install TensorRT "
        "libraries as mentioned in the GPU requirements page, make sure they're in the PATH or "
        "LD_LIBRARY_PATH, and that your GPU is supported. (leave --provider tensorrt out to "
        "run without it)")
    assert capsys.readouterr().out == ""
