"""Inference backends chosen by name, one small module each (``backend_<name>.py``).

A backend loads one graph file into a ``Graph`` (shared, read-only, e.g. an ONNX Runtime session)
and makes ``Runner`` objects from it: one per stream, each owning preallocated input and output
buffers, so a step allocates nothing it does not have to and several streams share one model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from wavedge.errors import WavedgeError

BACKENDS = {
    "onnxruntime": "wavedge.runtime.backend_onnxruntime",
    "litert": "wavedge.runtime.backend_litert",
}


class BackendError(WavedgeError):
    """A backend is not installed, or cannot load or run a model file."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # in the file; runners always take and give float32
    scale: float | None = None  # integer tensors: real = scale * (q - zero_point)
    zero_point: int = 0


class Runner(Protocol):
    """One stream's handle on a graph. Write the sample into ``x`` in place; ``run()`` returns
    the output ``y`` as an array the caller owns; ``state`` holds the current state (read and
    replaced by ``run()``; a runner may swap the arrays behind it, so look it up each time)."""

    x: np.ndarray
    state: list[np.ndarray]

    def run(self) -> np.ndarray: ...


@dataclass
class Graph:
    """A loaded graph file; ``runner()`` makes a new per-stream runner."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend: str
    detail: dict = field(default_factory=dict)  # e.g. providers, library and version

    def runner(self) -> Runner:  # pragma: no cover - implemented by each backend
        raise NotImplementedError


@dataclass(frozen=True)
class BackendOptions:
    """Settings chosen for streaming latency on a small board."""

    threads: int = 1  # intra-op threads; 1 is fastest for models this small
    providers: tuple[str, ...] = ("cpu",)  # onnxruntime: cpu, cuda, tensorrt (in preference order)


def available() -> dict[str, bool]:
    """Which backends can be imported here (their runtime library is installed)."""
    out = {}
    for name, module in BACKENDS.items():
        try:
            out[name] = importlib.import_module(module).is_installed()
        except ImportError:
            out[name] = False
    return out


def load_graph(backend: str, path: Path, options: BackendOptions = BackendOptions()) -> Graph:
    """Load ``path`` with the backend named ``backend``; raises ``BackendError``."""
    try:
        module = importlib.import_module(BACKENDS[backend])
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
    return module.load(Path(path), options)
