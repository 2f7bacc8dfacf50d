"""Checkpoint -> model directory: the artefact that travels to the board.

``export_model_dir`` writes the step and chunk graphs, checks both against torch over long
held-out streams, and only then writes ``manifest.json`` and moves the directory into place. A
model whose graphs miss the tolerance is never written.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import wavedge
from wavedge.errors import ExportError, InputError
from wavedge.export.check import check_stream, compare, run_graph, torch_reference
from wavedge.export.micro import is_installed as micro_installed
from wavedge.export.micro import micro_check
from wavedge.export.onnx_export import DEFAULT_OPSET, export_graph, scan_chunk
from wavedge.export.quantize import (QuantOptions, StreamCalibrationReader, load_recordings,
                                     quantize_onnx)
from wavedge.export.tflite_export import export_tflite_graph, quantize_tflite
from wavedge.manifest import MANIFEST_NAME, MODEL_FORMAT, MODEL_VERSION, sha256_of, write_manifest
from wavedge.models.checkpoint import Checkpoint
from wavedge.models.data import load_dataset

RECORDING_NAME = "recording.csv"
FORMATS = {"onnx": "onnxruntime", "tflite": "litert"}  # file format -> runtime backend


@dataclass(frozen=True)
class ExportOptions:
    """How to export and how strictly to check."""

    chunk_samples: int = 32  # K, samples per call of the chunk graph
    tolerance: float = 1e-5  # largest allowed error of either graph (see wavedge.export.check)
    check_steps: int = 2048  # length of the held-out check stream, state carried throughout
    opset: int = DEFAULT_OPSET
    recording: bool = False  # also write the test split as recording.csv
    formats: tuple[str, ...] = ("onnx",)  # and "tflite" (needs the tflite extra)
    precisions: tuple[str, ...] = ("fp32",)  # and "int8" (see QuantOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)
    # sensor recordings to calibrate int8 on (CSV or .npy, see quantize.load_recordings);
    # None: the checkpoint task's training split
    calibration: Path | None = None

    def validate(self) -> None:
        self.quant.validate()
        if self.calibration is not None and not Path(self.calibration).is_file():
            raise InputError(f"calibration recordings: no such file {self.calibration}")
        bad = sorted(set(self.precisions) - {"fp32", "int8"})
        if bad or "fp32" not in self.precisions:
            raise InputError(f"precisions {list(self.precisions)}: fp32 is required and int8 "
                             "is the other one supported")

        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise InputError(f"format(s) {unknown or '(none)'} not supported; choose from "
                             f"{', '.join(FORMATS)}")
        if self.chunk_samples < 2:
            raise InputError(f"chunk_samples must be at least 2, got {self.chunk_samples}")
        if self.check_steps < 1000:
            raise InputError(f"check_steps must be at least 1000, got {self.check_steps}")
        if not self.tolerance > 0:
            raise InputError(f"tolerance must be positive, got {self.tolerance}")


def held_out_sequences(ckpt: Checkpoint) -> tuple[np.ndarray, object]:
    """The checkpoint's test split in raw sensor units: (x [N, T, D], dataset)."""
    task = ckpt.meta.get("task")
    if not task:
        raise ExportError(f"{ckpt.path}: checkpoint names no task, so there is no held-out data "
                          "to check the export against")
    data = load_dataset(task)
    return data.x_test, data


def normalisation(ckpt: Checkpoint) -> tuple[np.ndarray, np.ndarray]:
    norm = ckpt.meta.get("normalisation") or {}
    d = ckpt.model.input_size
    mean = np.asarray(norm.get("mean", [0.0] * d), dtype=np.float32)
    std = np.asarray(norm.get("std", [1.0] * d), dtype=np.float32)
    return mean, std


def export_model_dir(ckpt: Checkpoint, out_dir: str | Path,
                     options: ExportOptions = ExportOptions()) -> Path:
    """Export ``ckpt`` to ``out_dir`` (replaced if it is already a model directory).

    Raises ``ExportError`` when a graph's error exceeds ``options.tolerance``; nothing is
    written then. Returns the path of the written manifest.
    """
    options.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST_NAME).is_file() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir}: exists and is not a wavedge model directory; "
                          "refusing to overwrite it")
    x_raw, data = held_out_sequences(ckpt)
    mean, std = normalisation(ckpt)
    stream = check_stream(x_raw, options.check_steps, options.chunk_samples)
    ref_y, ref_state = torch_reference(ckpt.model, stream, mean, std)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
    calibration: dict = {}
    recordings, recordings_name = data.x_train, f"{data.name} training split"
    if options.calibration is not None and "int8" in options.precisions:
        recordings = load_recordings(options.calibration, tuple(ckpt.meta.get("channels")
                                                                or data.channels))
        recordings_name = f"{Path(options.calibration).name} (sha256 " \
                          f"{sha256_of(Path(options.calibration))[:16]})"
    try:
        files = []
        for fmt in options.formats:
            for graph, samples in (("step", 1), ("chunk", options.chunk_samples)):
                path = tmp / f"model.{graph}.{fmt}"
                if fmt == "onnx":
                    export_graph(ckpt.model, path, samples, mean, std, options.opset)
                else:
                    export_tflite_graph(ckpt.model, path, samples, mean, std)
                err = compare(*run_graph(path, FORMATS[fmt], ckpt.model, stream, samples),
                              ref_y, ref_state)
                if err.error > options.tolerance:
                    raise ExportError(
                        f"the exported {fmt} {graph} graph differs from torch by "
                        f"{err.error:.3g} (tolerance {options.tolerance:g}) over {err.steps} "
                        "steps; nothing written")
                files.append(_file_entry(path, fmt, graph, samples, err.to_json(),
                                         options.opset if fmt == "onnx" else None))
                if "int8" in options.precisions and (fmt, graph) != ("tflite", "chunk"):
                    # (an int8 TFLite chunk graph measured 1.04x the fp32 size and 0.97
                    # agreement: its 32 unrolled steps each carry their own quantisation
                    # parameters; an int8 TFLite runs step by step, as on a microcontroller)
                    files.append(_int8_entry(ckpt, path, fmt, graph, samples,
                                             (recordings_name, recordings), stream, ref_y,
                                             ref_state, options, calibration))
            # the backend's per-call floor for this signature, for `wavedge bench`
            path = tmp / f"bench.identity.{fmt}"
            if fmt == "onnx":
                export_graph(ckpt.model, path, 1, opset=options.opset, graph_kind="identity")
            else:
                export_tflite_graph(ckpt.model, path, 1, None, None, graph_kind="identity")
            files.append(_file_entry(path, fmt, "identity", 1, {"note": "benchmark floor: "
                                     "inputs passed through, no model"},
                                     options.opset if fmt == "onnx" else None))
        raw = _manifest(ckpt, data, files, options, len(stream))
        if "int8" in options.precisions:
            raw["calibration"] = {**(calibration or {"data": None}),
                                  "options": asdict(options.quant)}
        if options.recording:
            raw["recording"] = write_recording(tmp / RECORDING_NAME, x_raw, data)
        write_manifest(tmp, raw)
        _accuracy_gate(tmp, raw, ckpt, data, options)
        write_manifest(tmp, raw)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def _int8_entry(ckpt, fp32_path: Path, fmt: str, graph: str, samples: int, recordings: tuple,
                stream, ref_y, ref_state, options: ExportOptions, calibration: dict) -> dict:
    """Quantise one fp32 graph as ``options.quant`` says, calibrated on ``recordings`` (name,
    sequences: the task's training split or the user's file) streamed with the state carried (the int8 ONNX chunk graph: the int8 step graph in a
    ``Scan``; the int8 TFLite step graph is also run in TFLite Micro when it is installed).
    Its error versus torch is measured and recorded, not gated (the accuracy gate decides)."""
    out = fp32_path.with_name(f"model.{graph}.int8.{fmt}")
    quant = options.quant
    reader = None
    if (fmt, graph) == ("onnx", "chunk") and quant.method == "static":
        scan_chunk(out.with_name("model.step.int8.onnx"), out, samples)
        description = {**quant.describe_onnx(), "graph": "the int8 step graph in an ONNX Scan "
                       f"of {samples}: the step graph's integers, its weights once"}
    else:
        if fmt == "tflite" or quant.method == "static":
            name, sequences = recordings
            reader = StreamCalibrationReader(fp32_path, sequences, samples,
                                             quant.calibration_passes, quant.calibration_stride)
            calibration.setdefault("data", f"{name} ({len(sequences)} recordings)")
            calibration.setdefault(f"{graph}_graph", reader.description)
        if fmt == "tflite":
            description = quantize_tflite(fp32_path, out, reader, quant.activation_bits)
        else:
            quantize_onnx(fp32_path, out, reader, quant)
            description = quant.describe_onnx()
    err = compare(*run_graph(out, FORMATS[fmt], ckpt.model, stream, samples), ref_y, ref_state)
    entry = _file_entry(out, fmt, graph, samples, err.to_json(),
                        _onnx_opset(out) if fmt == "onnx" else None, precision="int8")
    entry["size_vs_fp32"] = round(out.stat().st_size / fp32_path.stat().st_size, 3)
    entry["quantisation"] = description
    if fmt == "tflite" and graph == "step":
        entry["micro"] = (micro_check(out, stream) if micro_installed() else
                          {"skipped": "tflite-micro is not installed"})
    return entry


def _onnx_opset(path: Path) -> int:
    """The default-domain opset a file needs (the quantiser moves 16-bit graphs to 21)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _accuracy_gate(directory: Path, raw: dict, ckpt: Checkpoint, data,
                   options: ExportOptions) -> None:
    """Measure every artefact's test accuracy through the runtime (each test recording from
    reset, the prediction at its last sample) beside the torch fp32 model's; refuse an int8
    artefact that loses more than ``max_accuracy_drop`` points, unless forced."""
    import torch

    from wavedge.runtime.model import load_model

    mean, std = normalisation(ckpt)
    with torch.inference_mode():
        logits = ckpt.model(torch.from_numpy((data.x_test - mean) / std).float())
    torch_acc = float((logits[:, -1].argmax(-1).numpy() == data.y_test).mean())
    for entry in raw["files"]:
        if entry["graph"] == "identity":
            continue
        fmt, precision, use_chunk = entry["format"], entry["precision"], entry["graph"] == "chunk"
        model = load_model(directory, FORMATS[fmt], precision, use_chunk=use_chunk)
        correct = 0
        for seq, label in zip(data.x_test, data.y_test):
            stream = model.stream()
            correct += int(stream.push_chunk(seq).class_ids[-1] == label)
        acc = correct / len(data.x_test)
        drop = (torch_acc - acc) * 100.0
        entry["accuracy"] = {"test": acc, "torch_fp32": torch_acc,
                             "drop_points": round(drop, 3), "n_test": len(data.x_test),
                             "graphs": "step only" if not use_chunk else
                                       f"chunk of {options.chunk_samples}, then step"}
        if precision != "fp32" and drop > options.quant.max_accuracy_drop \
                and not options.quant.force:
            raise ExportError(
                f"{entry['path']}: test accuracy {acc:.1%} vs {torch_acc:.1%} for the "
                f"fp32 torch model, a drop of {drop:.1f} points where "
                f"{options.quant.max_accuracy_drop:g} is allowed (missed by "
                f"{drop - options.quant.max_accuracy_drop:.1f}); nothing written "
                f"(--force writes it anyway){_grid_hint(ckpt)}")


def _grid_hint(ckpt: Checkpoint) -> str:
    from wavedge.models.quant_aware import grid_error

    if grid_error(ckpt.model) < 0.01:
        return ""
    return ("; its weights are off their int8 grid: train with quant_aware_epochs "
            "(docs/quantisation.md)")


def _file_entry(path: Path, fmt: str, graph: str, samples: int, error: dict,
                opset: int | None, precision: str = "fp32") -> dict:
    entry = {"path": path.name, "format": fmt, "graph": graph, "precision": precision,
             "samples_per_call": samples, "sha256": sha256_of(path),
             "size_bytes": path.stat().st_size, "error_vs_torch": error}
    if opset is not None:
        entry["opset"] = opset
    return entry


def _manifest(ckpt: Checkpoint, data, files: list[dict], options: ExportOptions,
              check_steps: int) -> dict:
    meta, model = ckpt.meta, ckpt.model
    mean, std = normalisation(ckpt)
    metrics = meta.get("metrics", {})
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": f"{model.arch}-{meta.get('task', 'custom')}",
        "family": model.arch,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wavedge_version": wavedge.__version__,
        "model": {"arch": model.arch, "config": model.config,
                  "n_parameters": model.n_parameters()},
        "input": {"name": "x", "channels": list(meta.get("channels") or data.channels),
                  "dtype": "float32", "sample_rate_hz": meta.get("sample_rate_hz"),
                  "normalisation": {"mean": mean.tolist(), "std": std.tolist(),
                                    "in_graph": True}},
        "output": {"name": "y", "kind": "class_scores", "activation": "logits",
                   "size": model.output_size, "labels": list(meta.get("labels") or data.labels)},
        "state": [{**s.to_json(), "input": f"state_in.{s.name}", "output": f"state_out.{s.name}"}
                  for s in model.state_spec],
        "files": files,
        "check": {"tolerance": options.tolerance, "steps": check_steps,
                  "error": "max |graph - torch| / max(1, max |torch|), outputs and final state",
                  "data": f"{data.name} test split, {len(data.x_test)} sequences concatenated in "
                          "seeded random order (reshuffled per pass), state carried "
                          "throughout, from reset"},
        "calibration": None,
        "training": {"task": meta.get("task"), "dataset": meta.get("dataset"),
                     "test_accuracy": metrics.get("test_accuracy"),
                     "test_stream_accuracy": metrics.get("test_stream_accuracy"),
                     "train_accuracy": metrics.get("train_accuracy"),
                     "metric": "accuracy of the prediction at the final step of each sequence "
                               "(from reset; stream: 5 shuffled passes, never reset)",
                     "n_train": metrics.get("n_train"), "n_test": metrics.get("n_test"),
                     "recipe": meta.get("recipe"), "torch_version": meta.get("torch_version")},
    }


def write_recording(path: Path, x_raw: np.ndarray, data) -> dict:
    """Write raw (unnormalised) sequences as CSV: ``sequence,label,<channels...>``, one row per
    sample, sequences back to back. Returns the manifest's ``recording`` entry."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sequence", "label", *data.channels])
        for i, (seq, label) in enumerate(zip(x_raw, data.y_test)):
            for sample in seq:
                w.writerow([i, data.labels[label], *(f"{v:.6g}" for v in sample)])
    return {"path": path.name, "sha256": sha256_of(path), "size_bytes": path.stat().st_size,
            "sequences": int(len(x_raw)), "samples": int(x_raw.shape[0] * x_raw.shape[1]),
            "description": f"{data.name} test split, raw sensor units, one row per sample"}
