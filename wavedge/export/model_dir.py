"""A model -> model directory: the artefact that travels to the board.

``export_model_dir`` writes the step and chunk graphs, checks both against torch over long
held-out streams, and only then writes ``manifest.json`` and moves the directory into place. A
model whose graphs miss the tolerance is never written.

What the model is comes from its signature (``StepModel.signature``); what it is checked
against comes from a task (``wavedge.models.tasks``): held-out recordings for parity,
calibration recordings for int8, and a quality metric whose gate every int8 artefact must pass.
A checkpoint trained on a bundled dataset brings its task; any other model without a task is
still checked for parity, on streams generated from its signature, and the manifest says that
no quality gate ran.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import wavedge
from wavedge.errors import ExportError, InputError, as_names, not_a_file, reason
from wavedge.export.check import (batch_reference, batch_streams, check_stream, compare,
                                  probe_step, run_graph, torch_outputs, torch_reference)
from wavedge.export.micro import is_installed as micro_installed
from wavedge.export.micro import micro_check
from wavedge.export.onnx_export import DEFAULT_OPSET, export_graph, scan_chunk
from wavedge.export.quantize import (QuantOptions, StreamCalibrationReader, load_recordings,
                                     quantize_onnx)
from wavedge.export.tflite_export import export_tflite_graph, quantize_tflite
from wavedge.manifest import MANIFEST_NAME, MODEL_FORMAT, MODEL_VERSION, sha256_of, write_manifest
from wavedge.models import StepModel
from wavedge.models.checkpoint import Checkpoint
from wavedge.models.tasks import (Task, classification_task, data_task, generated_task,
                                  generator)
from wavedge.recordings import split_spec, table_digest
from wavedge.resets import ResetPolicy
from wavedge.signature import Signature
from wavedge.stopping import new_folder_removed_if_stopped, put_in_place

RECORDING_NAME = "recording.csv"
# export time grows with the chunk (bundled model, fp32 ONNX, this 2-core VM: 13 s at 32, 35 s
# at 512) and a chunk's call holds that many samples' latency: 1024 is 20 s of a 50 Hz sensor
MAX_CHUNK = 1024
MAX_CHECK_STEPS = 1_000_000  # the check runs torch and every graph step by step, in memory
FORMATS = {"onnx": "onnxruntime", "tflite": "litert"}  # file format -> runtime backend


@dataclass(frozen=True)
class ExportOptions:
    """How to export and how strictly to check."""

    chunk_samples: int = 32  # K, samples per call of the chunk graph
    # largest allowed error of either graph (see wavedge.export.check); None: the model's
    # ``StepModel.export_tolerance`` (1e-5 unless its family says why not)
    tolerance: float | None = None
    check_steps: int = 2048  # length of the held-out check stream, state carried throughout
    opset: int = DEFAULT_OPSET
    recording: bool = False  # also write the test split as recording.csv
    formats: tuple[str, ...] = ("onnx",)  # and "tflite" (needs the tflite extra)
    precisions: tuple[str, ...] = ("fp32",)  # and "int8" (see QuantOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)
    # sensor recordings to calibrate int8 on (CSV or .npy, see quantize.load_recordings);
    # None: the checkpoint task's training split
    calibration: Path | str | None = None
    # the reset policy to check under and write into the manifest (wavedge.resets); None: how
    # the checkpoint was trained (its meta, else its recipe), else never
    reset: str | None = None
    # the raw input range the runtime accepts, per channel: the task's recordings' range
    # widened by input_margin times its span on each side, unless the model declares bounds or
    # input_bounds says otherwise ("LOW:HIGH" for every channel, "ch=LOW:HIGH,...", "none")
    input_margin: float = 1.0
    input_bounds: str | None = None
    # streams per call of a second set of step and chunk graphs, for a StreamGroup (1: none)
    batch: int = 1

    def __post_init__(self) -> None:
        for name in ("formats", "precisions"):  # each once (a manifest listed files twice)
            object.__setattr__(self, name, as_names(getattr(self, name)))

    def validate(self) -> None:
        self.quant.validate()
        if self.reset is not None:
            ResetPolicy.parse(self.reset, "--reset")
        if not 0 <= self.input_margin < 1e6:
            raise InputError(f"input margin must be 0 or more, got {self.input_margin}")
        if self.calibration is not None and "int8" not in self.precisions:
            raise InputError("calibration recordings calibrate int8 graphs, and none is asked "
                             "for: add int8 to the precisions (--precision fp32,int8)")
        where = self.calibration and split_spec(self.calibration)[0]
        why = where and not where.is_dir() and not_a_file(where)  # a file, or a folder of them
        if why:
            raise InputError(f"calibration recordings: {why}")
        bad = sorted(set(self.precisions) - {"fp32", "int8"})
        if bad or "fp32" not in self.precisions:
            raise InputError(f"precisions {list(self.precisions)}: fp32 is required and int8 "
                             "is the other one supported")

        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise InputError(f"format(s) {unknown or '(none)'} not supported; choose from "
                             f"{', '.join(FORMATS)}")
        if not 1 <= self.batch <= 1024:
            raise InputError(f"batch must be 1 to 1024 streams per call, got {self.batch}")
        if not 1000 <= self.check_steps <= MAX_CHECK_STEPS:
            raise InputError(f"check_steps must be 1000 to {MAX_CHECK_STEPS}, got "
                             f"{self.check_steps}")
        top = min(MAX_CHUNK, self.check_steps // 2)
        if not 2 <= self.chunk_samples <= top:
            raise InputError(f"chunk_samples must be 2 to {top}, got {self.chunk_samples} (at "
                             f"most {MAX_CHUNK}, and half the check stream, so that the check "
                             "carries the state from one call to the next)")
        if not 0 < self.tolerance < math.inf:
            raise InputError(f"tolerance must be positive and finite, got {self.tolerance}")


def guarded(sig, task: Task, options: ExportOptions, maxima: dict):
    """``sig`` with what the runtime guards a stream by: each float input's accepted range
    (``ExportOptions.input_margin``/``input_bounds``; the model's own when it declares one)
    and each float state's limit, 10x the largest magnitude it reached on the check stream
    (at least 1), past which the stream's state is reset."""
    inputs = []
    for spec in sig.inputs:
        bounds = spec.bounds
        if spec.dtype == "float32" and bounds is None and spec.role != "noise":
            rows = [r[spec.name].reshape(-1, spec.shape[-1]) for r in
                    (*task.calibration, *task.held_out)]
            bounds = _parse_bounds(options.input_bounds, spec, np.concatenate(rows),
                                   options.input_margin)
        inputs.append(replace(spec, bounds=bounds))
    state = [replace(s, limit=s.limit or float(f"{10 * max(1.0, maxima[s.name]):.4g}"))
             if s.name in maxima else s for s in sig.state]
    return replace(sig, inputs=tuple(inputs), state=tuple(state))


def _parse_bounds(text: str | None, spec, data: np.ndarray, margin: float):
    lo, hi = data.min(axis=0).astype(np.float64), data.max(axis=0).astype(np.float64)
    span = np.maximum(hi - lo, 1e-3 * np.maximum(1.0, np.abs(hi)))
    lows, highs = (lo - margin * span).tolist(), (hi + margin * span).tolist()
    if text is not None and text.strip() == "none":
        return None
    names = spec.channels or tuple(str(i) for i in range(spec.shape[-1]))
    given: dict[str, str] = {}  # channel -> the part that bounds it
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        name, _, rng = part.rpartition("=")
        try:
            low, high = (float(v) for v in rng.split(":"))
        except ValueError:
            raise InputError(f"--input-bounds: {part!r}: expected LOW:HIGH or CHANNEL=LOW:HIGH") \
                from None
        if name and name not in names:
            raise InputError(f"--input-bounds: {name!r} is not a channel of input "
                             f"{spec.name!r} ({', '.join(names)})")
        if not (math.isfinite(low) and math.isfinite(high)):  # a manifest holds no inf
            raise InputError(f"--input-bounds: {part!r}: LOW and HIGH must be finite ('none': "
                             "no bounds)")
        if not low < high:
            raise InputError(f"--input-bounds: {part!r}: LOW must be below HIGH")
        if name in given:
            raise InputError(f"--input-bounds: {name!r} is given twice")
        given[name] = part
        for i, c in enumerate(names):
            if not name or c == name:
                lows[i], highs[i] = low, high
    _cover(data, names, lows, highs, given)
    rnd = lambda v: float(f"{v:.6g}")  # noqa: E731 - six digits are plenty for a guard
    return tuple(map(rnd, lows)), tuple(map(rnd, highs))


MAX_LEFT_OUT = 0.01  # of the check recordings' values a bound the user gives may refuse


def _cover(data: np.ndarray, names, lows: list, highs: list, given: dict) -> None:
    """Bounds the user gave must hold nearly all of the recordings the export checks on:
    the runtime refuses a sample outside them. A few glitches left out is a guard; more is
    a mistake (units, a channel), and a recording left out whole gave the quality gate
    nothing to score (an IndexError traceback)."""
    for i, c in enumerate(names):
        part = given.get(c, given.get(""))
        out = np.mean((data[:, i] < lows[i]) | (data[:, i] > highs[i])) if part else 0.0
        if out > MAX_LEFT_OUT:
            raise InputError(f"--input-bounds: {part!r} leaves out {out:.1%} of the "
                             f"recordings' {c} values (they span {data[:, i].min():.4g} to "
                             f"{data[:, i].max():.4g}), samples the runtime would refuse; "
                             f"at most {MAX_LEFT_OUT:.0%} may be")


def reset_policy(ckpt: Checkpoint, options: ExportOptions) -> ResetPolicy:
    """The policy the model was trained for: ``options.reset``, else the checkpoint's meta,
    else its recipe (random recordings back to back: never; single recordings: at each)."""
    if options.reset is not None:
        return ResetPolicy.parse(options.reset, "--reset")
    if ckpt.meta.get("reset") is not None:
        return ResetPolicy.from_json(ckpt.meta["reset"], f"{ckpt.path}: reset")
    segments = (ckpt.meta.get("recipe") or {}).get("stream_segments")
    return ResetPolicy(recording=segments == 1)


def default_task(ckpt: Checkpoint, steps: int) -> Task:
    """The checkpoint's data as a task: the user's recordings or walks it was trained on (its
    validation recordings held out, the rest to calibrate), its bundled dataset, or
    generated streams when it names neither."""
    from wavedge.models.data import DATASETS, load_dataset

    source, name = ckpt.meta.get("data"), ckpt.meta.get("task")
    if source:
        path, _ = split_spec(source["spec"])
        try:
            digest = table_digest(path)
        except (InputError, OSError):  # no such file, or a glob that matches none
            digest = None
        if digest != source.get("sha256"):
            state = "is gone" if digest is None else "has changed since"
            raise InputError(f"{ckpt.path}: was trained on {path}, which {state}; give "
                             "--data FILE to check the export against recordings")
        return data_task(source["spec"], ckpt.model.signature, name, source.get("validation"))
    maker = generator(name)
    if maker is not None:
        return maker.task(ckpt.meta)
    if name in DATASETS:
        sig = ckpt.model.signature
        return classification_task(load_dataset(name), sig.inputs[0].name, sig.outputs[0].name)
    return generated_task(ckpt.model.signature, steps)


def checked_signature(model: StepModel) -> Signature:
    """``model``'s signature with every field checked as a manifest's is, and its step run
    once against it (``probe_step``): a mistake in a user's own model is one line naming it
    here, not a traceback, or the reload of a temporary directory's manifest after export."""
    who = type(model).__name__
    try:
        sig = model.signature
    except Exception as exc:  # a user's property may raise anything
        raise ExportError(f"{who}.signature: {type(exc).__name__}: {reason(exc)}") from None
    if not isinstance(sig, Signature):
        raise ExportError(f"{who}.signature: is a {type(sig).__name__}, not a "
                          "wavedge.signature.Signature")
    Signature.from_json(sig.to_json(), f"{who}.signature")
    probe_step(model, who)
    return sig


def export_model_dir(ckpt: Checkpoint | StepModel, out_dir: str | Path,
                     options: ExportOptions = ExportOptions(), task: Task | None = None) -> Path:
    """Export ``ckpt`` (a checkpoint, or any ``StepModel`` with its signature) to ``out_dir``
    (replaced if it is already a model directory), checked against ``task`` (default: the
    checkpoint's bundled dataset, else streams generated from the signature, no gate).

    Raises ``ExportError`` when a graph's error exceeds ``options.tolerance`` or an int8
    artefact misses the task's quality gate; nothing is written then. Returns the path of the
    written manifest.
    """
    if isinstance(ckpt, StepModel):
        ckpt = Checkpoint(path=Path(f"<{type(ckpt).__name__}>"), model=ckpt.eval(), meta={})
    if options.tolerance is None:
        options = replace(options, tolerance=ckpt.model.export_tolerance)
    options.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST_NAME).is_file() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir}: exists and is not a wavedge model directory; "
                          "refusing to overwrite it")
    _nothing_of_the_users(out_dir)
    sig = checked_signature(ckpt.model)
    task = task or default_task(ckpt, options.check_steps)
    resets = reset_policy(ckpt, options)
    # a stochastic model's noise inputs drawn, so that the check and the calibration cover
    # the graphs' noise paths (the quality gate runs the default stream: zero noise)
    stream = check_stream([sig.with_noise(r, k) for k, r in enumerate(task.held_out)],
                          options.check_steps, options.chunk_samples, resets)
    ref = torch_reference(ckpt.model, stream)
    maxima: dict = {}
    calibration: dict = {}
    recordings = (task.calibration_description or task.description,
                  [sig.with_noise(r, 10_000 + k) for k, r in enumerate(task.calibration)])
    if options.calibration is not None:  # validate() made sure int8 is asked for
        if sig.sensor is None or len(sig.fed) != 1:
            raise InputError("--calibration files serve models with one float input; give "
                             "a task with calibration recordings instead")
        name = sig.inputs[0].name
        files = load_recordings(options.calibration, _channels(sig), sig.sample_rate_hz)
        cal = [sig.with_noise({name: r}, 10_000 + k) for k, r in enumerate(files)]
        cal_path, _ = split_spec(options.calibration)
        recordings = (f"{cal_path.name} (sha256 {sha256_of(cal_path)[:16]})", cal)
    # made last, and the try at once, so that nothing that can fail (a calibration file
    # refused) leaves it beside the output; SIGTERM removes it (wavedge.stopping)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with new_folder_removed_if_stopped(out_dir.parent, f".{out_dir.name}.") as tmp:
        try:
            files = []
            batches = [(1, stream, ref)]
            if options.batch > 1:  # B streams, each checked against its own torch run
                rows = batch_streams(stream, options.batch, options.chunk_samples)
                batches.append((options.batch, rows, batch_reference(ckpt.model, rows)))
            for fmt in options.formats:
                for batch, check, reference in batches:
                    files += _export_graphs(ckpt, tmp, fmt, batch, check, reference, options,
                                            recordings, calibration, resets, maxima)
                # the backend's per-call floor for this signature, for `wavedge bench`
                path = tmp / f"bench.identity.{fmt}"
                if fmt == "onnx":
                    export_graph(ckpt.model, path, 1, opset=options.opset, graph_kind="identity")
                else:
                    export_tflite_graph(ckpt.model, path, 1, graph_kind="identity")
                files.append(_file_entry(path, fmt, "identity", 1, {"note": "benchmark floor: "
                                         "inputs passed through, no model"},
                                         options.opset if fmt == "onnx" else None))
            written = guarded(sig, task, options, maxima)
            raw = _manifest(ckpt, written, task, files, options, len(stream[sig.inputs[0].name]),
                            resets)
            if "int8" in options.precisions:
                raw["calibration"] = {**(calibration or {"data": None}),
                                      "options": asdict(options.quant)}
            if options.recording:
                raw["recording"] = write_recording(tmp / RECORDING_NAME, task, sig)
            write_manifest(tmp, raw)
            _quality_gate(tmp, raw, ckpt, task, options, resets)
            write_manifest(tmp, raw)
            put_in_place(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def _nothing_of_the_users(out_dir: Path) -> None:
    """A model folder exported over is replaced whole (``put_in_place``): what export did not
    write in it (a bench's report, notes, a calibration file kept beside the model) had gone
    with the old model, without a word. Hidden files (a desktop's ``.DS_Store``) go."""
    if not (out_dir / MANIFEST_NAME).is_file():
        return
    try:
        listed = {f["path"] for f in json.loads((out_dir / MANIFEST_NAME).read_text())["files"]}
    except (OSError, ValueError, TypeError, KeyError):  # a manifest of another version, or none
        listed = set()
    theirs = sorted(p.name + "/" * p.is_dir() for p in out_dir.iterdir()
                    if p.name not in {*listed, MANIFEST_NAME, RECORDING_NAME}
                    and not p.name.startswith(("model.", "bench.identity.", ".")))
    if theirs:
        shown = ", ".join(theirs[:4]) + (f" and {len(theirs) - 4} more" if len(theirs) > 4 else "")
        raise ExportError(f"{out_dir}: holds {shown}, which export did not write and would "
                          "remove with the old model (the folder is replaced whole); move them "
                          "out, or export to another folder")


def _export_graphs(ckpt, tmp: Path, fmt: str, batch: int, stream, ref, options: ExportOptions,
                   recordings: tuple, calibration: dict, resets: ResetPolicy,
                   maxima: dict) -> list[dict]:
    """Write, check and record the step and chunk graphs of ``batch`` streams per call in
    ``fmt`` (and their int8 versions where asked): the list of manifest file entries. A
    graph of batch B is checked on B different streams (``check.batch_streams``)."""
    sig, policy = ckpt.model.signature, ckpt.model.quant_policy()
    files = []
    suffix = f".b{batch}" if batch > 1 else ""
    for graph, samples in (("step", 1), ("chunk", options.chunk_samples)):
        path = tmp / f"model.{graph}{suffix}.{fmt}"
        if fmt == "onnx":
            export_graph(ckpt.model, path, samples, options.opset, batch=batch)
        else:
            export_tflite_graph(ckpt.model, path, samples, batch=batch)
        err = compare(sig, *run_graph(path, FORMATS[fmt], sig, stream, samples, maxima), *ref)
        if err.error > options.tolerance:
            worst = max(err.tensors, key=err.tensors.get)
            raise ExportError(
                f"the exported {fmt} {graph} graph{f' of batch {batch}' if batch > 1 else ''} "
                f"differs from torch by {err.error:.3g} in {worst!r} (tolerance "
                f"{options.tolerance:g}) over {err.steps} steps; nothing written")
        files.append(_file_entry(path, fmt, graph, samples, err.to_json(),
                                 options.opset if fmt == "onnx" else None, batch=batch))
        if "int8" in options.precisions and (fmt == "onnx" or graph == "step"
                                             or policy.tflite_chunk):
            files.append(_int8_entry(ckpt, path, fmt, graph, samples, recordings, stream, ref,
                                     options, calibration, resets, batch))
    return files


def _cell(v) -> str:
    return str(int(v)) if np.issubdtype(type(v), np.integer) else f"{v:.6g}"


def _channels(sig) -> tuple[str, ...]:
    sensor = sig.inputs[0]
    return sensor.channels or tuple(f"{sensor.name}_{i}" for i in range(sensor.size))


def _int8_entry(ckpt, fp32_path: Path, fmt: str, graph: str, samples: int, recordings: tuple,
                stream, ref, options: ExportOptions, calibration: dict,
                resets: ResetPolicy, batch: int = 1) -> dict:
    """Quantise one fp32 graph as ``options.quant`` and the family's policy say, calibrated on
    ``recordings`` (name, recordings: the task's or the user's file) streamed with the state
    carried (the int8 ONNX chunk graph: the int8 step graph in a ``Scan``; the int8 TFLite
    step graph is also run in TFLite Micro when it is installed). Its error versus torch is
    measured and recorded, not gated (the quality gate decides)."""
    suffix = f".b{batch}" if batch > 1 else ""
    out = fp32_path.with_name(f"model.{graph}{suffix}.int8.{fmt}")
    quant, sig = options.quant, ckpt.model.signature
    policy = ckpt.model.quant_policy()
    if (fmt, graph) == ("onnx", "chunk") and quant.method == "static":
        scan_chunk(out.with_name(f"model.step{suffix}.int8.onnx"), out, samples, len(sig.inputs),
                   len(sig.outputs))
        description = {**quant.describe_onnx(policy), "graph": "the int8 step graph in an "
                       f"ONNX Scan of {samples}: the step graph's integers, its weights once"}
    else:
        reader = None
        if fmt == "tflite" or quant.method == "static":
            name, recs = recordings
            # a batch graph is calibrated on the batch-1 graph's feeds, repeated on the batch axis
            reader = StreamCalibrationReader(fp32_path.with_name(f"model.{graph}.{fmt}"), sig,
                                             recs, samples, quant.calibration_passes,
                                             quant.calibration_stride, policy=resets,
                                             batch=batch)
            calibration.setdefault("data", f"{name} ({len(recs)} recordings)")
            calibration.setdefault(f"{graph}_graph", reader.description)
        if fmt == "tflite":
            description = quantize_tflite(fp32_path, out, reader, sig, policy,
                                          quant.activation_bits)
        else:
            quantize_onnx(fp32_path, out, reader, quant, policy)
            description = quant.describe_onnx(policy)
    err = compare(sig, *run_graph(out, FORMATS[fmt], sig, stream, samples), *ref)
    if not np.isfinite(err.error):
        bad = [name for name, e in err.tensors.items() if not np.isfinite(e)]
        raise ExportError(f"{out.name}: the int8 graph's {', '.join(bad)} are not finite on "
                          f"the check stream ({err.steps} steps); nothing written")
    entry = _file_entry(out, fmt, graph, samples, err.to_json(),
                        _onnx_opset(out) if fmt == "onnx" else None, precision="int8",
                        batch=batch)
    entry["size_vs_fp32"] = round(out.stat().st_size / fp32_path.stat().st_size, 3)
    entry["quantisation"] = description
    if fmt == "tflite" and graph == "step" and batch == 1:
        entry["micro"] = _micro_record(out, sig, stream)
    return entry


def _micro_record(path: Path, sig, stream) -> dict:
    """The TFLite Micro check's record, or why the model does not run there (a kernel TFLM
    lacks, say): that is a fact about the artefact to record, not a failed export."""
    if not micro_installed():
        return {"skipped": "tflite-micro is not installed"}
    try:
        return micro_check(path, sig, stream)
    except ExportError as exc:
        return {"runs": False, "reason": str(exc)}


def _onnx_opset(path: Path) -> int:
    """The default-domain opset a file needs (the quantiser moves 16-bit graphs to 21)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _quality_gate(directory: Path, raw: dict, ckpt: Checkpoint, task: Task,
                  options: ExportOptions, resets: ResetPolicy) -> None:
    """Measure every artefact's quality on the task through the runtime beside the torch fp32
    model's, the held-out recordings streamed back to back under the reset policy (as
    ``wavedge run`` replays them); refuse an int8 artefact that loses more than
    ``max_accuracy_drop`` points (accuracy points, or per cent of an error), unless forced.
    Without a task metric, record that no gate ran."""
    from wavedge.runtime.model import load_model

    if task.metric is None:
        raw["quality"] = {"gate": None, "note": "no task with a quality metric: parity with "
                          "torch was checked on generated streams, no quality gate ran"}
        return
    torch_value = task.score(_torch_under(ckpt.model, resets, task.held_out))
    metric = f"{task.metric}, {resets.describe()}"
    raw["quality"] = {"metric": metric, "task": task.description, "torch_fp32": torch_value,
                      "reset": resets.text(), "max_loss_points": options.quant.max_accuracy_drop}
    for entry in raw["files"]:
        if entry["graph"] == "identity" or entry.get("batch", 1) > 1:
            continue  # a batch graph's rows are checked against torch, like the batch-1 graph
        fmt, precision, use_chunk = entry["format"], entry["precision"], entry["graph"] == "chunk"
        stream = load_model(directory, FORMATS[fmt], precision, use_chunk=use_chunk).stream()
        outputs = under_policy(resets, task.held_out, stream.reset,
                               lambda piece: stream.push_chunk(piece).outputs)
        if any(not len(next(iter(o.values()))) for o in outputs):
            raise ExportError(f"{entry['path']}: every sample of a held-out recording was "
                              "refused by the runtime (out of the input bounds?), so the "
                              "quality gate has nothing to score")
        value = task.score(outputs)
        drop = task.loss_points(torch_value, value)
        entry["accuracy" if task.higher_is_better else "quality"] = {
            "test": value, "torch_fp32": torch_value, "drop_points": round(drop, 3),
            "n_test": len(task.held_out), "metric": metric,
            "graphs": "step only" if not use_chunk else
                      f"chunk of {options.chunk_samples}, then step"}
        if precision != "fp32" and drop > options.quant.max_accuracy_drop \
                and not options.quant.force:
            raise ExportError(
                f"{entry['path']}: {task.metric.split(' of ')[0]} {value:.4g} vs "
                f"{torch_value:.4g} for the fp32 torch model, a loss of {drop:.1f} points where "
                f"{options.quant.max_accuracy_drop:g} is allowed (missed by "
                f"{drop - options.quant.max_accuracy_drop:.1f}); nothing written "
                f"(--force writes it anyway){ckpt.model.int8_hint()}")


def under_policy(policy: ResetPolicy, recordings: list[dict], reset, run) -> list[dict]:
    """Each recording's outputs when the recordings are streamed back to back, from reset,
    the state reset where ``policy`` says: ``run(piece) -> {output: [T, ...]}`` carries the
    state, ``reset()`` resets it."""
    names = list(recordings[0])
    out: list[list[dict]] = [[] for _ in recordings]
    reset()
    for i, a, b, again in policy.pieces([len(r[names[0]]) for r in recordings]):
        if again:
            reset()
        out[i].append(run({n: recordings[i][n][a:b] for n in names}))
    return [{k: np.concatenate([p[k] for p in parts]) for k in parts[0]} for parts in out]


def _torch_under(model: StepModel, policy: ResetPolicy, recordings: list[dict]) -> list[dict]:
    import torch

    names = [o.name for o in model.signature.outputs]
    state: list = [None]

    def reset():
        state[0] = None

    def run(piece):
        ys, st = torch_outputs(model, piece, state[0])
        state[0] = [torch.from_numpy(s) for s in st]
        return dict(zip(names, ys))

    return under_policy(policy, recordings, reset, run)


def _file_entry(path: Path, fmt: str, graph: str, samples: int, error: dict,
                opset: int | None, precision: str = "fp32", batch: int = 1) -> dict:
    entry = {"path": path.name, "format": fmt, "graph": graph, "precision": precision,
             "samples_per_call": samples, "sha256": sha256_of(path),
             "size_bytes": path.stat().st_size, "error_vs_torch": error}
    if batch > 1:
        entry["batch"] = batch
    if opset is not None:
        entry["opset"] = opset
    return entry


def _manifest(ckpt: Checkpoint, sig, task: Task, files: list[dict], options: ExportOptions,
              check_steps: int, resets: ResetPolicy) -> dict:
    meta, model = ckpt.meta, ckpt.model
    metrics = meta.get("metrics", {})
    family = model.arch or type(model).__name__
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": f"{family}-{meta.get('task') or task.name}",
        "family": family,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wavedge_version": wavedge.__version__,
        "model": {"arch": family, "config": model.config, "n_parameters": model.n_parameters()},
        "signature": sig.to_json(),
        "files": files,
        "check": {"tolerance": options.tolerance, "steps": check_steps,
                  "error": "per output and state: max |graph - torch| / max(1, max |torch|) "
                           "for floats (every step's outputs, the final state), the fraction "
                           "of differing elements for integers and booleans; the largest",
                  "data": f"{task.description}, {len(task.held_out)} recording(s) concatenated "
                          "in seeded random order (reshuffled per pass), from reset, "
                          f"{resets.describe()}"
                          + (" (runs cut to whole chunks)" if resets.text() != "never" else "")},
        "reset": resets.to_json(),
        "calibration": None,
        "training": {"task": meta.get("task"), "dataset": meta.get("dataset"),
                     "test_accuracy": metrics.get("test_accuracy"),
                     "test_stream_accuracy": metrics.get("test_stream_accuracy"),
                     "train_accuracy": metrics.get("train_accuracy"),
                     "metric": metrics.get("metric") or (
                         "accuracy of the prediction at the final step of each sequence "
                         "(from reset; stream: 5 shuffled passes, never reset)"
                         if metrics else None),
                     "n_train": metrics.get("n_train"), "n_test": metrics.get("n_test"),
                     "recipe": meta.get("recipe"), "torch_version": meta.get("torch_version")},
    }


def write_recording(path: Path, task: Task, sig) -> dict:
    """Write the task's held-out recordings, raw, as CSV: ``sequence,label,<row...>``, one
    row per sample (``Signature.row``: every fed input's values), recordings back to back,
    each sample's true class in ``label`` (a task with a class per sample, ``Task.labels``).
    Returns the manifest's ``recording`` entry."""
    if task.labels(0) is None or sig.output(task.output).kind != "class_scores":
        raise InputError("--recording writes a class-score task's recordings; this model or "
                         "task has none")
    names = sig.output(task.output).labels
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sequence", "label", *sig.row])
        for i, rec in enumerate(task.held_out):
            columns = [np.asarray(rec[f.name]).reshape(len(rec[f.name]), -1) for f in sig.fed]
            for label, *values in zip(task.labels(i), *columns):
                w.writerow([i, names[label] if names else label,
                            *(_cell(v) for part in values for v in part)])
    samples = sum(len(r[sig.fed[0].name]) for r in task.held_out)
    return {"path": path.name, "sha256": sha256_of(path), "size_bytes": path.stat().st_size,
            "sequences": len(task.held_out), "samples": int(samples),
            "description": f"{task.description}, raw sensor units, one row per sample"}
