"""A model directory loaded for one backend and precision; the manifest is checked first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavedge.errors import InputError, ManifestError, check_count
from wavedge.manifest import FileEntry, Manifest, load_manifest, verify_file
from wavedge.runtime.backends import (BACKENDS, BackendError, BackendOptions, Graph, available,
                                      load_graph)
from wavedge.signature import Signature

FILE_FORMAT = {"onnxruntime": "onnx", "litert": "tflite"}


@dataclass
class Model:
    """The loaded graphs of one model. Create streams with ``stream()``; they share the graphs
    and each holds its own state."""

    manifest: Manifest
    backend: str
    precision: str
    step_graph: Graph
    chunk_graph: Graph | None
    chunk_samples: int

    def __repr__(self) -> str:  # not the manifest's every field, nor each graph's tensors
        graphs = [f"step {self.step_graph.path.name}"] + \
            ([f"chunk {self.chunk_graph.path.name} ({self.chunk_samples} samples per call)"]
             if self.chunk_graph is not None else [])
        per_call = f", {self.batch} streams per call" if self.batch > 1 else ""
        return (f"Model({self.manifest.name!r} from {str(self.manifest.directory)!r}, "
                f"{self.backend} {self.precision}{per_call}: {', '.join(graphs)})")

    @property
    def batch(self) -> int:
        """Streams per call of its graphs: 1, or a ``StreamGroup``'s capacity."""
        return self.step_graph.batch

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def stream(self, policy: str = "reject", guards: bool = True, noise: str = "zero",
               seed: int | None = None):
        """A new stream from the reset state; ``policy`` for bad samples: reject, hold, zero;
        ``guards`` False skips the input bounds and state health checks (for measuring them);
        ``noise``, ``seed``: how a stochastic model's noise inputs are filled (``Stream``)."""
        from wavedge.runtime.stream import Stream

        if self.batch != 1:
            raise InputError(f"this model was loaded with graphs of {self.batch} streams per "
                             "call: make a group (model.group()), or load it with streams=1")
        return Stream(self, policy, guards, noise, seed)

    def group(self, guards: bool = True):
        """A ``StreamGroup`` of up to ``batch`` streams stepped in one call (add members with
        ``group.add()``); needs a model loaded with a batch (``load_model(..., streams=N)``)."""
        from wavedge.runtime.group import StreamGroup

        return StreamGroup(self, guards)


def load_model(model_dir: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
               options: BackendOptions = BackendOptions(), use_chunk: bool = True,
               streams: int = 1, in_turn: bool = False) -> Model:
    """Check ``model_dir``'s manifest (format, version, fields), then load its step graph
    (and chunk graph, when present and ``use_chunk``) with ``backend`` at ``precision``, each
    checked against its size and sha256 first. The files it does not load are not read: a
    board may carry only the graphs it runs (``wavedge inspect`` checks them all).
    ``streams`` > 1 loads the graphs of the smallest batch of at least that many streams per
    call (``wavedge export --batch N``), for ``Model.group()``; with ``in_turn``, a directory
    without one loads its batch-1 graphs instead (``model.batch`` says which: the caller steps
    the streams in turn).

    Raises ``ManifestError`` when the directory is invalid, has no file for that backend and
    precision, or a graph's inputs and outputs do not match the manifest; ``BackendError`` when
    the backend is missing or cannot load the file.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    manifest = load_manifest(model_dir, verify_files=False)
    step = step_entry(manifest, backend, precision, streams, in_turn)
    step_graph = _load_checked(manifest, step, backend, options)
    fmt, batch = FILE_FORMAT[backend], step.batch
    chunk = manifest.find_file("chunk", precision, fmt, batch) if use_chunk else None
    chunk_graph = _load_checked(manifest, chunk, backend, options) if chunk else None
    return Model(manifest, backend, precision, step_graph, chunk_graph,
                 chunk.samples_per_call if chunk else 1)


def step_entry(manifest: Manifest, backend: str, precision: str, streams: int = 1,
               in_turn: bool = False) -> FileEntry:
    """The step graph ``load_model`` would load, found in the manifest alone (no backend
    needed); ``ManifestError`` saying what the directory has when there is none."""
    fmt = FILE_FORMAT[backend]
    step = manifest.find_file("step", precision, fmt,
                              pick_batch(manifest, streams, precision, fmt, in_turn))
    if step is None:
        have = ", ".join(sorted({f"{f.format}/{f.precision}" for f in manifest.files}))
        raise ManifestError(f"{manifest.directory}: no {fmt} step graph at precision "
                            f"{precision!r} for backend {backend!r}; it has: {have}")
    return step


def pick_batch(manifest: Manifest, streams: int, precision: str, fmt: str,
               in_turn: bool = False) -> int:
    """The smallest batch of step graph at ``precision`` in ``fmt`` that holds ``streams``
    streams (1 for one stream); raises ``ManifestError`` saying what the directory has, or,
    with ``in_turn``, gives 1."""
    streams = check_count(streams, "streams", 1)
    if streams == 1:
        return 1
    have = manifest.batches(precision, fmt)
    fits = [b for b in have if b >= streams]
    if not fits and in_turn:
        return 1
    if not fits:
        raise ManifestError(f"{manifest.directory}: no {fmt} {precision} graphs for "
                            f"{streams} streams per call (it has batch "
                            f"{', '.join(map(str, have)) or 'none'}); re-export with "
                            f"`wavedge export --batch {streams}`")
    return fits[0]


def _load_checked(manifest: Manifest, entry: FileEntry, backend: str,
                  options: BackendOptions) -> Graph:
    return load_checked_graph(verify_file(manifest, entry), backend, manifest.signature,
                              entry.samples_per_call, options, entry.batch)


def load_checked_graph(path: Path, backend: str, signature: Signature, samples: int = 1,
                       options: BackendOptions = BackendOptions(), batch: int = 1) -> Graph:
    """Load ``path`` and check its tensors against ``signature`` at ``samples`` per call and
    ``batch`` streams per call (names, shapes, dtypes); the graph's tensors come back in
    signature order. Raises ``ManifestError`` naming the tensor that does not match."""
    graph = load_graph(backend, path, options)
    want_in, want_out = signature.graph_io(samples, batch)
    for kind, want, got in (("input", want_in, graph.inputs), ("output", want_out, graph.outputs)):
        got_map = {t.name: t for t in got}
        if set(got_map) != {n for n, _, _ in want}:
            raise ManifestError(f"{path}: {kind}s are {sorted(got_map)}, the manifest expects "
                                f"{sorted(n for n, _, _ in want)}")
        for name, shape, dtype in want:
            t = got_map[name]
            if tuple(t.shape) != tuple(shape):
                raise ManifestError(f"{path}: {kind} {name!r}: expected shape {tuple(shape)} "
                                    f"from the manifest, the graph has {tuple(t.shape)}")
            # TFLite narrows int64 to int32: the runner carries the file's integers
            narrowed = (dtype, t.dtype) == ("int64", "int32")
            if t.host_dtype != np.dtype(dtype) and not narrowed:
                raise ManifestError(f"{path}: {kind} {name!r}: expected {dtype} from the "
                                    f"manifest, the graph has {t.dtype}")
    # order the graph's tensors as the signature does, so runners index them positionally
    order_in = [n for n, _, _ in want_in]
    order_out = [n for n, _, _ in want_out]
    graph.inputs.sort(key=lambda t: order_in.index(t.name))
    graph.outputs.sort(key=lambda t: order_out.index(t.name))
    graph.n_inputs, graph.n_outputs = len(signature.inputs), len(signature.outputs)
    graph.batch = batch
    return graph


def check_loadable(manifest: Manifest, options: BackendOptions = BackendOptions(),
                   skip: list[FileEntry] = ()) -> list[str]:
    """Load every model graph the manifest lists (but ``skip``: a board's pruned copy) with
    each installed backend that reads its format and check its tensors against the
    signature, as ``load_model`` would: what ``wavedge inspect`` verifies beyond checksums.
    Returns the backends used; raises ``ManifestError`` or ``BackendError`` naming the first
    file that fails."""
    installed = [b for b, ok in available().items() if ok]
    used = set()
    for entry in (e for e in manifest.files if e not in skip):
        for backend in installed:
            if FILE_FORMAT.get(backend) != entry.format:
                continue
            if entry.graph == "identity":
                load_graph(backend, manifest.directory / entry.path, options)
            else:
                _load_checked(manifest, entry, backend, options)
            used.add(backend)
    return sorted(used)
