"""Parity of exported graphs with torch over long streams, state carried throughout.

The reference is the model's whole-sequence path (``sequence``) in torch float32; the graphs are
run in ONNX Runtime exactly as a stream would run them: one sample (or one chunk) per call, the
state fed back from the previous call's outputs.

The error of a graph is ``max |onnx - torch| / max(1, max |torch|)`` over every step's output and
the final state: an absolute error for values up to 1, relative above that (the ReLU state of a
Wave-RNN is unbounded, and float32 rounding grows with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wavedge.errors import ExportError
from wavedge.models import StepModel


@dataclass(frozen=True)
class GraphError:
    """How far one exported graph is from torch on the check streams."""

    max_abs_y: float
    max_abs_state: float
    error: float  # max abs error over max(1, |reference|), the number compared to the tolerance
    argmax_agreement: float
    steps: int

    def to_json(self) -> dict:
        return {"max_abs_y": self.max_abs_y, "max_abs_state": self.max_abs_state,
                "error": self.error, "argmax_agreement": self.argmax_agreement,
                "steps": self.steps}


def check_stream(sequences: np.ndarray, steps: int, multiple_of: int, seed: int = 0) -> np.ndarray:
    """Concatenate held-out sequences ``[N, T, D]`` into one stream of ``steps`` samples.

    Sequences follow each other in a seeded random order without a reset (the state is carried
    across their borders, as on a board), each pass reshuffled, repeated as needed. ``steps`` is
    rounded up to a multiple of ``multiple_of`` so the chunk graph sees whole chunks.
    """
    steps = -(-steps // multiple_of) * multiple_of
    n, t, _ = sequences.shape
    rng = np.random.default_rng(seed)
    passes = -(-steps // (n * t))
    order = np.concatenate([rng.permutation(n) for _ in range(passes)])
    flat = sequences[order].reshape(-1, sequences.shape[-1])
    return np.ascontiguousarray(flat[:steps], dtype=np.float32)


@torch.inference_mode()
def torch_reference(model: StepModel, stream: np.ndarray, mean=0.0,
                    std=1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outputs ``[T, O]`` and final state of the torch model over one raw stream from reset
    (normalised with ``mean``/``std`` as in training).

    Raises ``ExportError`` when the model itself diverges (an output or the state becomes
    inf/NaN): such a model cannot stream, whatever the export does.
    """
    x = (torch.from_numpy(stream) - torch.as_tensor(mean)) / torch.as_tensor(std)
    y, *state = model.sequence(x.float()[None], *model.init_state(1))
    y, state = y[0].numpy(), [s.numpy() for s in state]
    bad = ~np.isfinite(y).all(axis=-1)
    if bad.any() or not all(np.isfinite(s).all() for s in state):
        first = int(np.argmax(bad)) if bad.any() else len(y)
        raise ExportError(f"the torch model diverges on the check stream: outputs are inf/NaN "
                          f"from step {first} of {len(y)} (its recurrent state grows without "
                          "bound; train it on streams, see Recipe.stream_segments)")
    return y, state


def run_graph(path: Path, backend: str, model: StepModel, stream: np.ndarray,
              samples: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run an exported graph over ``stream`` through wavedge's own runtime backend, as a
    stream does: one sample (or chunk) per call, the state fed back from the previous call."""
    from wavedge.runtime.model import load_checked_graph

    d, o = model.input_size, model.output_size
    x_shape, y_shape = ((1, d), (1, o)) if samples == 1 else ((1, samples, d), (1, samples, o))
    want_in = [("x", x_shape)] + [(f"state_in.{s.name}", (1, *s.shape)) for s in model.state_spec]
    want_out = [("y", y_shape)] + [(f"state_out.{s.name}", (1, *s.shape))
                                   for s in model.state_spec]
    runner = load_checked_graph(path, backend, want_in, want_out).runner()
    for buf, spec in zip(runner.state, model.state_spec):
        buf.fill(spec.reset_value)
    ys = []
    for i in range(0, len(stream), samples):
        runner.x[...] = stream[i:i + samples].reshape(x_shape)
        ys.append(runner.run().reshape(-1, o))
    return np.concatenate(ys), [s.copy() for s in runner.state]


def compare(y: np.ndarray, state: list[np.ndarray], ref_y: np.ndarray,
            ref_state: list[np.ndarray]) -> GraphError:
    """Error of one graph's run against the reference; non-finite values count as infinite."""
    if not (np.isfinite(y).all() and all(np.isfinite(s).all() for s in state)):
        return GraphError(max_abs_y=float("inf"), max_abs_state=float("inf"), error=float("inf"),
                          argmax_agreement=0.0, steps=len(y))
    err_y = float(np.max(np.abs(y - ref_y)))
    err_s = max(float(np.max(np.abs(a - b))) for a, b in zip(state, ref_state))
    scale_y = max(1.0, float(np.max(np.abs(ref_y))))
    scale_s = max(1.0, max(float(np.max(np.abs(b))) for b in ref_state))
    return GraphError(max_abs_y=err_y, max_abs_state=err_s,
                      error=max(err_y / scale_y, err_s / scale_s),
                      argmax_agreement=float(np.mean(y.argmax(-1) == ref_y.argmax(-1))),
                      steps=len(y))
