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

from wavedge.errors import BackendError, as_names, check_count

BACKENDS = {
    "onnxruntime": "wavedge.runtime.backend_onnxruntime",
    "litert": "wavedge.runtime.backend_litert",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # in the file (a signature dtype, or int8/int16 with a scale)
    scale: float | None = None  # quantised tensors: real = scale * (q - zero_point)
    zero_point: int = 0

    @property
    def host_dtype(self) -> np.dtype:
        """What the runner takes and gives: float32 for a quantised tensor (it converts),
        the file's dtype otherwise (integer and boolean tensors pass through as they are)."""
        return np.dtype(np.float32 if self.scale is not None else self.dtype)


class Runner(Protocol):
    """One stream's handle on a graph. Write each sample into the ``inputs`` buffers in place
    (signature order; ``x`` is ``inputs[0]``); ``run()`` returns the outputs in signature
    order, as arrays the caller owns; ``state`` holds the current state (read and replaced by
    ``run()``; a runner may swap the arrays behind it, so look it up each time)."""

    inputs: list[np.ndarray]
    x: np.ndarray
    state: list[np.ndarray]

    def run(self) -> list[np.ndarray]: ...

    def run_row(self) -> list[np.ndarray]:
        """``run()`` of a batch-1 graph with the batch axis dropped."""
        ...


@dataclass
class Graph:
    """A loaded graph file; ``runner()`` makes a new per-stream runner. ``inputs`` and
    ``outputs`` are in signature order once checked (``wavedge.runtime.model``): the first
    ``n_inputs`` inputs are the model's, the rest its state; likewise ``n_outputs``."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend: str
    detail: dict = field(default_factory=dict)  # e.g. providers, library and version
    n_inputs: int = 1
    n_outputs: int = 1
    batch: int = 1  # streams per call (a StreamGroup's graphs have more)

    def runner(self) -> Runner:  # pragma: no cover - implemented by each backend
        raise NotImplementedError

    def bare_call(self, feeds: list[np.ndarray]):
        """A function doing one call with the backend alone, as a careful hand-written loop
        would (for bench): ``feeds`` are the step graph's inputs, one row per call, in the
        file's dtypes; the state fed back."""
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class BackendOptions:
    """Settings chosen for streaming latency on a small board."""

    threads: int = 1  # intra-op threads; 1 is fastest for models this small
    providers: tuple[str, ...] = ("cpu",)  # onnxruntime: cpu, cuda, tensorrt (in preference order)
    # onnxruntime's TensorRT engine cache (default: backend_onnxruntime.trt_cache_dir)
    trt_cache: str | None = None
    # onnxruntime: each session's per-node trace written under this folder (bench --profile)
    profile: str | None = None

    def __post_init__(self) -> None:
        check_threads(self.threads)
        object.__setattr__(self, "providers", as_names(self.providers))


MAX_THREADS = 256  # a typo of 100000 would start that many threads and exhaust the process table


def check_threads(n: int, flag: str = "threads") -> None:
    """``InputError`` unless ``n`` is a thread count to start (0 or less means the library's
    own default to one backend and nothing to another: refused rather than guessed)."""
    check_count(n, flag, 1, MAX_THREADS)


def available() -> dict[str, bool]:
    """Which backends can be imported here (their runtime library is installed)."""
    return {name: library is not None for name, library in libraries().items()}


def libraries() -> dict[str, str | None]:
    """Each backend's runtime library and its version (``onnxruntime 1.22.0``), None where it
    cannot be imported here."""
    out = {}
    for name, module in BACKENDS.items():
        try:
            out[name] = importlib.import_module(module).library()
        except ImportError:
            out[name] = None
    return out


def load_graph(backend: str, path: Path, options: BackendOptions = BackendOptions()) -> Graph:
    """Load ``path`` with the backend named ``backend``; raises ``BackendError``, also for a
    provider the backend does not have (``--backend litert --provider cuda`` had run on the
    CPU without a word)."""
    check_providers(backend, options.providers)
    return _module(backend).load(Path(path), options)


def check_providers(backend: str, providers: tuple[str, ...]) -> None:
    lacking = [p for p in providers if p not in providers_of(backend)]
    if lacking:
        raise BackendError(f"backend {backend} has no provider {', '.join(lacking)}; its "
                           f"providers: {', '.join(providers_of(backend))}")


def providers_of(backend: str) -> tuple[str, ...]:
    """The providers ``backend`` can run on, by short name (its module's ``PROVIDERS``)."""
    return tuple(_module(backend).PROVIDERS)


def providers_here(backend: str) -> list[str]:
    """The providers of ``backend`` that its installed library has (installed: ``available``)."""
    return _module(backend).providers_here()


def _module(backend: str):
    try:
        return importlib.import_module(BACKENDS[backend])
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
