"""The model directory's ``manifest.json``: the one place the runtime learns what a model is.

It is versioned (``format: wavedge-model``, ``version: N``) and checked before anything else; no
fact is inferred from a file name. Pure Python + json: the board reads it without torch or onnx.
See docs/model-directory.md for every field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from wavedge.errors import ManifestError

MANIFEST_NAME = "manifest.json"
MODEL_FORMAT = "wavedge-model"
MODEL_VERSION = 1
OUTPUT_KINDS = ("class_scores", "regression", "embedding")


@dataclass(frozen=True)
class StateEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str
    reset_value: float

    @property
    def input_name(self) -> str:
        return f"state_in.{self.name}"

    @property
    def output_name(self) -> str:
        return f"state_out.{self.name}"


@dataclass(frozen=True)
class FileEntry:
    path: str
    format: str  # "onnx", later "tflite"
    graph: str  # "step" or "chunk"
    precision: str  # "fp32", later "int8"
    samples_per_call: int
    sha256: str
    size_bytes: int
    error_vs_torch: dict


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``raw`` keeps every field as written."""

    directory: Path
    raw: dict

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.raw["input"]["channels"])

    @property
    def input_size(self) -> int:
        return len(self.raw["input"]["channels"])

    @property
    def sample_rate_hz(self) -> float | None:
        return self.raw["input"].get("sample_rate_hz")

    @property
    def mean(self) -> list[float]:
        return self.raw["input"]["normalisation"]["mean"]

    @property
    def std(self) -> list[float]:
        return self.raw["input"]["normalisation"]["std"]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.raw["output"].get("labels") or ())

    @property
    def output_size(self) -> int:
        return int(self.raw["output"]["size"])

    @property
    def state(self) -> tuple[StateEntry, ...]:
        return tuple(StateEntry(s["name"], tuple(s["shape"]), s["dtype"], float(s["reset_value"]))
                     for s in self.raw["state"])

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return tuple(FileEntry(**{k: f[k] for k in FileEntry.__dataclass_fields__})
                     for f in self.raw["files"])

    def find_file(self, graph: str, precision: str = "fp32", fmt: str = "onnx") -> FileEntry | None:
        """The file for ``graph`` at ``precision`` in ``fmt``, or None when the model has none."""
        for f in self.files:
            if (f.graph, f.precision, f.format) == (graph, precision, fmt):
                return f
        return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


# (dotted field, type or tuple of types) that every version-1 manifest must have
_REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("name", str), ("family", str),
    ("input", dict), ("input.channels", list), ("input.dtype", str),
    ("input.normalisation", dict), ("input.normalisation.mean", list),
    ("input.normalisation.std", list), ("input.normalisation.in_graph", bool),
    ("output", dict), ("output.kind", str), ("output.size", int),
    ("state", list), ("files", list),
)
_FILE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str, "format": str, "graph": str, "precision": str, "samples_per_call": int,
    "sha256": str, "size_bytes": int, "error_vs_torch": dict}
_STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "shape": list, "dtype": str, "reset_value": (int, float)}


def _get(raw: dict, dotted: str) -> object:
    node: object = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def validate(raw: object, where: str) -> dict:
    """Check ``raw`` against the version-1 schema; raise ``ManifestError`` naming ``where``."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != MODEL_FORMAT:
        raise ManifestError(f"{where}: format is {raw.get('format')!r}, expected {MODEL_FORMAT!r}")
    version = raw.get("version")
    if version != MODEL_VERSION:
        raise ManifestError(f"{where}: manifest version {version!r} is not supported "
                            f"(this wavedge reads version {MODEL_VERSION})")
    for dotted, kind in _REQUIRED:
        try:
            value = _get(raw, dotted)
        except KeyError:
            raise ManifestError(f"{where}: missing field {dotted!r}") from None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ManifestError(f"{where}: field {dotted!r} should be {_kind_name(kind)}, "
                                f"got {type(value).__name__}")
    inp, out = raw["input"], raw["output"]
    n = len(inp["channels"])
    if n == 0:
        raise ManifestError(f"{where}: input.channels is empty")
    for key in ("mean", "std"):
        vals = inp["normalisation"][key]
        if len(vals) != n or not all(isinstance(v, (int, float)) for v in vals):
            raise ManifestError(f"{where}: input.normalisation.{key} should hold {n} numbers, "
                                f"got {vals!r}")
    if inp["normalisation"]["in_graph"] is not True:
        raise ManifestError(f"{where}: input.normalisation.in_graph must be true (version-1 "
                            "graphs take raw sensor values and normalise them themselves)")
    if any(v <= 0 for v in inp["normalisation"]["std"]):
        raise ManifestError(f"{where}: input.normalisation.std must be positive")
    rate = inp.get("sample_rate_hz")
    if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
        raise ManifestError(f"{where}: input.sample_rate_hz should be a positive number or null, "
                            f"got {rate!r}")
    if out["kind"] not in OUTPUT_KINDS:
        raise ManifestError(f"{where}: output.kind {out['kind']!r} is not one of {OUTPUT_KINDS}")
    labels = out.get("labels")
    if out["kind"] == "class_scores" and (not isinstance(labels, list)
                                          or len(labels) != out["size"]):
        raise ManifestError(f"{where}: output.labels should list {out['size']} class names")
    _check_entries(raw["state"], _STATE_FIELDS, "state", where)
    _check_entries(raw["files"], _FILE_FIELDS, "files", where)
    if not raw["files"]:
        raise ManifestError(f"{where}: files is empty: the model directory has no model")
    return raw


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
        raise ManifestError(f"{directory}: no such model directory")
    if not path.is_file():
        raise ManifestError(f"{path}: missing; is {directory} a wavedge model directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno})") from None
    manifest = Manifest(directory, validate(raw, str(path)))
    if verify_files:
        for f in manifest.files:
            verify_file(manifest, f)
    return manifest


def verify_file(manifest: Manifest, entry: FileEntry) -> Path:
    """Check one listed file's presence, size and sha256; return its path."""
    target = manifest.directory / entry.path
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
    """Validate ``raw`` and write it as ``directory/manifest.json``."""
    path = directory / MANIFEST_NAME
    validate(raw, str(path))
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return path
