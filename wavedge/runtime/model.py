"""A model directory loaded for one backend and precision; the manifest is checked first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavedge.errors import ManifestError
from wavedge.manifest import FileEntry, Manifest, load_manifest
from wavedge.runtime.backends import BACKENDS, BackendError, BackendOptions, Graph, load_graph

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

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def input_size(self) -> int:
        return self.manifest.input_size

    def stream(self, policy: str = "reject"):
        """A new stream from the reset state; ``policy`` for bad samples: reject, hold, zero."""
        from wavedge.runtime.stream import Stream

        return Stream(self, policy)


def load_model(model_dir: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
               options: BackendOptions = BackendOptions(), use_chunk: bool = True) -> Model:
    """Check ``model_dir``'s manifest (format, version, checksums), then load its step graph
    (and chunk graph, when present and ``use_chunk``) with ``backend`` at ``precision``.

    Raises ``ManifestError`` when the directory is invalid, has no file for that backend and
    precision, or a graph's inputs and outputs do not match the manifest; ``BackendError`` when
    the backend is missing or cannot load the file.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    manifest = load_manifest(model_dir)
    fmt = FILE_FORMAT[backend]
    step = manifest.find_file("step", precision, fmt)
    if step is None:
        have = ", ".join(sorted({f"{f.format}/{f.precision}" for f in manifest.files}))
        raise ManifestError(f"{manifest.directory}: no {fmt} step graph at precision "
                            f"{precision!r} for backend {backend!r}; it has: {have}")
    step_graph = _load_checked(manifest, step, backend, options)
    chunk = manifest.find_file("chunk", precision, fmt) if use_chunk else None
    chunk_graph = _load_checked(manifest, chunk, backend, options) if chunk else None
    return Model(manifest, backend, precision, step_graph, chunk_graph,
                 chunk.samples_per_call if chunk else 1)


def expected_io(manifest: Manifest, samples: int) -> tuple[list, list]:
    """(name, shape) of the inputs and outputs a graph of ``samples`` per call must have."""
    d, o = manifest.input_size, manifest.output_size
    x, y = ((1, d), (1, o)) if samples == 1 else ((1, samples, d), (1, samples, o))
    ins = [("x", x)] + [(s.input_name, (1, *s.shape)) for s in manifest.state]
    outs = [("y", y)] + [(s.output_name, (1, *s.shape)) for s in manifest.state]
    return ins, outs


def _load_checked(manifest: Manifest, entry: FileEntry, backend: str,
                  options: BackendOptions) -> Graph:
    want_in, want_out = expected_io(manifest, entry.samples_per_call)
    return load_checked_graph(manifest.directory / entry.path, backend, want_in, want_out,
                              options)


def load_checked_graph(path: Path, backend: str, want_in: list, want_out: list,
                       options: BackendOptions = BackendOptions()) -> Graph:
    """Load ``path`` and check its tensors against ``want_in``/``want_out`` ((name, shape)
    lists, ``x`` and ``y`` first); the graph's tensors come back in that order."""
    graph = load_graph(backend, path, options)
    for kind, want, got in (("input", want_in, graph.inputs), ("output", want_out, graph.outputs)):
        got_map = {t.name: t.shape for t in got}
        if set(got_map) != {n for n, _ in want}:
            raise ManifestError(f"{path}: {kind}s are {sorted(got_map)}, the manifest expects "
                                f"{sorted(n for n, _ in want)}")
        for name, shape in want:
            if tuple(got_map[name]) != tuple(shape):
                raise ManifestError(f"{path}: {kind} {name!r}: expected shape {tuple(shape)} "
                                    f"from the manifest, the graph has {tuple(got_map[name])}")
    # order the graph's tensors as the manifest does, so runners index them positionally
    order_in = [n for n, _ in want_in]
    order_out = [n for n, _ in want_out]
    graph.inputs.sort(key=lambda t: order_in.index(t.name))
    graph.outputs.sort(key=lambda t: order_out.index(t.name))
    return graph


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
