"""The model directory's ``manifest.json``: the one place the runtime learns what a model is.

It is versioned (``format: wavedge-model``, ``version: N``) and checked before anything else; no
fact is inferred from a file name. Pure Python + json: the board reads it without torch or onnx.
See docs/model-directory.md for every field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from wavedge.errors import InputError, ManifestError, parse_json
from wavedge.resets import ResetPolicy
from wavedge.signature import Signature, StateSpec
from wavedge.stopping import write_whole

MANIFEST_NAME = "manifest.json"
MODEL_FORMAT = "wavedge-model"
MODEL_VERSION = 2
READS_VERSIONS = (1, 2)  # version 1 is upgraded in memory (``upgrade_v1``; `wavedge upgrade`)
GRAPH_KINDS = ("step", "chunk", "identity")
FILE_FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class FileEntry:
    path: str
    format: str  # one of FILE_FORMATS
    graph: str  # one of GRAPH_KINDS
    precision: str  # one of PRECISIONS
    samples_per_call: int
    sha256: str
    size_bytes: int
    error_vs_torch: dict
    batch: int = 1  # streams per call (optional in the manifest; absent: 1)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``raw`` keeps every field as written (version 2). ``version``
    is the one its file holds (1: upgraded as it was read, ``wavedge upgrade`` writes it)."""

    directory: Path
    raw: dict
    version: int = MODEL_VERSION

    def __repr__(self) -> str:  # the raw fields run to kilobytes: ``raw`` shows them
        return (f"Manifest({str(self.directory)!r}: {self.name!r}, {self.raw['family']}, "
                f"version {self.raw['version']}, {len(self.files)} files)")

    @property
    def name(self) -> str:
        return self.raw["name"]

    @cached_property
    def signature(self) -> Signature:
        return Signature.from_json(self.raw["signature"])

    # shorthands for a sample's values as a row, which line-oriented sources (CSV replay,
    # serial, SENSOR frames) serve (``Signature.row``), and the first output, which the
    # class-score sinks serve
    @property
    def channels(self) -> tuple[str, ...]:
        return self.signature.row

    @property
    def input_size(self) -> int:
        return len(self.channels)

    @property
    def sample_rate_hz(self) -> float | None:
        return self.raw["signature"].get("sample_rate_hz")

    @property
    def mean(self) -> list[float]:
        norm = self.signature.sensor.normalise
        return list(norm.mean) if norm else [0.0] * self.input_size

    @property
    def std(self) -> list[float]:
        norm = self.signature.sensor.normalise
        return list(norm.std) if norm else [1.0] * self.input_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.signature.outputs[0].labels

    @property
    def recording(self) -> Path | None:
        """The directory's own recording (``wavedge export --recording``), or None."""
        rec = (self.raw.get("recording") or {}).get("path")
        return self.directory / rec if rec else None

    def own_recording(self, instead: str) -> Path:
        """The directory's own recording, or ``InputError`` saying why there is none here
        and what to give ``instead``: a board's pruned copy may list it without holding it."""
        path = self.recording
        if path is None:
            raise InputError(f"{self.directory} has no recording of its own (`wavedge "
                             f"export --recording` writes its test split there); {instead}")
        if not path.is_file():
            raise InputError(f"{self.directory}'s recording {path.name} is listed in its "
                             f"manifest but not here (a board's pruned copy?); {instead}")
        return path

    @property
    def output_size(self) -> int:
        return int(np.prod(self.signature.outputs[0].shape))

    @property
    def state(self) -> tuple[StateSpec, ...]:
        return self.signature.state

    @cached_property
    def reset_policy(self) -> ResetPolicy:
        """When the stream's state is reset (``wavedge.resets``); never when not stated."""
        return ResetPolicy.from_json(self.raw.get("reset"))

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return tuple(FileEntry(**{k: f[k] for k in FileEntry.__dataclass_fields__ if k in f})
                     for f in self.raw["files"])

    def find_file(self, graph: str, precision: str = "fp32", fmt: str = "onnx",
                  batch: int = 1) -> FileEntry | None:
        """The file for ``graph`` at ``precision`` in ``fmt`` and ``batch`` streams per call,
        or None when the model has none."""
        for f in self.files:
            if (f.graph, f.precision, f.format, f.batch) == (graph, precision, fmt, batch):
                return f
        return None

    def batches(self, precision: str = "fp32", fmt: str = "onnx") -> list[int]:
        """The batches (streams per call) of the step graphs at ``precision`` in ``fmt``."""
        return sorted({f.batch for f in self.files
                       if (f.graph, f.precision, f.format) == ("step", precision, fmt)})


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


# (dotted field, type or tuple of types) that every version-2 manifest must have
_REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("name", str), ("family", str), ("signature", dict), ("files", list),
)
_FILE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str, "format": str, "graph": str, "precision": str, "samples_per_call": int,
    "sha256": str, "size_bytes": int, "error_vs_torch": dict}


def _get(raw: dict, dotted: str) -> object:
    node: object = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def validate(raw: object, where: str) -> dict:
    """Check ``raw`` against the version-2 schema (a version-1 manifest is upgraded first);
    return the version-2 dict; raise ``ManifestError`` naming ``where``."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != MODEL_FORMAT:
        raise ManifestError(f"{where}: format is {raw.get('format')!r}, expected {MODEL_FORMAT!r}")
    version = raw.get("version")
    if version not in READS_VERSIONS or isinstance(version, bool):
        raise ManifestError(f"{where}: manifest version {version!r} is not supported "
                            f"(this wavedge reads versions "
                            f"{', '.join(map(str, READS_VERSIONS))})")
    if version == 1:
        raw = upgrade_v1(raw, where)
    for dotted, kind in _REQUIRED:
        try:
            value = _get(raw, dotted)
        except KeyError:
            raise ManifestError(f"{where}: missing field {dotted!r}") from None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ManifestError(f"{where}: field {dotted!r} should be {_kind_name(kind)}, "
                                f"got {type(value).__name__}")
    Signature.from_json(raw["signature"], f"{where}: signature")
    _check_entries(raw["files"], _FILE_FIELDS, "files", where)
    if not raw["files"]:
        raise ManifestError(f"{where}: files is empty: the model directory has no model")
    for i, f in enumerate(raw["files"]):
        batch = f.get("batch", 1)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ManifestError(f"{where}: files[{i}].batch should be a whole number of at "
                                f"least 1, got {batch!r}")
        for key, allowed in (("format", FILE_FORMATS), ("graph", GRAPH_KINDS),
                             ("precision", PRECISIONS)):
            if f[key] not in allowed:
                raise ManifestError(f"{where}: files[{i}].{key} {f[key]!r} is not one of "
                                    f"{', '.join(allowed)}")
    return raw


def upgrade_v1(raw: dict, where: str = "manifest") -> dict:
    """A version-1 manifest (one float input ``x`` with channels and normalisation, one
    output ``y``, float state) as version 2: the same model, its signature written out. The
    graph files are unchanged (their tensor names are version 2's)."""
    try:
        inp, out = raw["input"], raw["output"]
        norm = inp["normalisation"]
        signature = {
            "inputs": [{"name": inp.get("name", "x"), "shape": [len(inp["channels"])],
                        "dtype": inp.get("dtype", "float32"), "role": "sensor",
                        "channels": list(inp["channels"]),
                        "preprocessing": {"kind": "normalise", "mean": norm["mean"],
                                          "std": norm["std"], "in_graph": norm["in_graph"]}}],
            "outputs": [{"name": out.get("name", "y"), "shape": [out["size"]],
                         "dtype": "float32", "kind": out["kind"],
                         **({"labels": out["labels"]} if out.get("labels") else {})}],
            "state": [{k: s[k] for k in ("name", "shape", "dtype", "reset_value")}
                      for s in raw["state"]],
            "sample_rate_hz": inp.get("sample_rate_hz"),
        }
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{where}: version-1 manifest lacks {exc} (cannot upgrade it)") \
            from None
    new = {k: v for k, v in raw.items() if k not in ("input", "output", "state")}
    new.update(version=MODEL_VERSION, signature=signature,
               upgraded_from={"version": 1, "by": "wavedge.manifest.upgrade_v1"})
    return new


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "list": "a list", "dict": "an object", "int": "an integer",
             "float": "a number"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _check_entries(entries: list, fields: dict, label: str, where: str) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: {label}[{i}] should be an object")
        for key, kind in fields.items():
            if key not in entry:
                raise ManifestError(f"{where}: missing field '{label}[{i}].{key}'")
            if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
                raise ManifestError(f"{where}: field '{label}[{i}].{key}' should be "
                                    f"{_kind_name(kind)}, got {type(entry[key]).__name__}")


def load_manifest(directory: str | Path, verify_files: bool = True) -> Manifest:
    """Read and validate ``directory/manifest.json``.

    With ``verify_files`` every listed file must exist with the recorded size and sha256.
    Raises ``ManifestError`` with the file and the problem in one line.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        if directory.name == MANIFEST_NAME and directory.is_file():
            raise ManifestError(f"{directory}: is the manifest; give its model directory "
                                f"({directory.parent})")
        raise ManifestError(f"{directory}: no such model directory")
    if not path.is_file():
        raise ManifestError(f"{path}: missing; is {directory} a wavedge model directory?")
    try:
        raw = parse_json(path.read_text(encoding="utf-8"), parse_constant=_not_finite,
                         parse_float=_finite_float)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno})") from None
    manifest = Manifest(directory, validate(raw, str(path)), raw["version"])
    manifest.signature  # parsed once here so that a bad one fails at load
    try:
        manifest.reset_policy
    except InputError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    if verify_files:
        absent = verify_present(manifest)
        if len(absent) > 1:  # a board's pruned copy, say: every one named, not the first
            raise ManifestError(f"{path}: {len(absent)} of its {len(manifest.files)} files are "
                                f"missing: {', '.join(f.path for f in absent)} (a run reads "
                                "only the graphs it loads; `wavedge inspect --ignore-missing` "
                                "checks those here)")
        for f in absent:
            verify_file(manifest, f)  # raises, naming it
    return manifest


def verify_present(manifest: Manifest) -> list[FileEntry]:
    """Check every listed file that is in the directory (size, sha256); return the entries
    that are not, for the caller to refuse or (a board's pruned copy) to name."""
    absent = [f for f in manifest.files if not (manifest.directory / f.path).is_file()]
    for f in manifest.files:
        if f not in absent:
            verify_file(manifest, f)
    return absent


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_finite(text)
    return value


def _not_finite(name: str):
    raise ManifestError(f"a non-finite number {name} (every number in a manifest must be "
                        "finite)")


def verify_file(manifest: Manifest, entry: FileEntry) -> Path:
    """Check one listed file's presence, size and sha256; return its path."""
    target = manifest.directory / entry.path
    inside = manifest.directory.resolve()
    if inside not in target.resolve().parents:
        raise ManifestError(f"{manifest.directory / MANIFEST_NAME}: file {entry.path!r} is "
                            "outside the model directory")
    if not target.is_file():
        raise ManifestError(f"{target}: listed in the manifest but missing")
    size = target.stat().st_size
    if size != entry.size_bytes:
        raise ManifestError(f"{target}: size {size} bytes, manifest says {entry.size_bytes} "
                            "(truncated or replaced?)")
    digest = sha256_of(target)
    if digest != entry.sha256:
        raise ManifestError(f"{target}: sha256 {digest[:12]}... does not match the manifest's "
                            f"{entry.sha256[:12]}... (corrupted or replaced?)")
    return target


def write_manifest(directory: Path, raw: dict) -> Path:
    """Validate ``raw`` and write it as ``directory/manifest.json``, whole or not at all."""
    path = directory / MANIFEST_NAME
    validate(raw, str(path))
    return write_whole(path, json.dumps(raw, indent=2) + "\n")
