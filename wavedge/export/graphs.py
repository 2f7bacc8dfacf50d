"""The exported graphs, as torch modules over a model's ``step``, built from its signature.

Every graph takes the model's inputs and its state as separate named tensors and returns its
outputs and the new state (names and order: ``Signature.graph_inputs``/``graph_outputs``), so
ONNX Runtime (stateless by design) never holds state: the host loop does.

- ``StepGraph``: one sample per call.
- ``ChunkGraph``: ``K`` samples per call (a time axis on every input and output): the model's
  ``sequence`` (recurrence unrolled ``K`` times, input and readout batched), or ``step``
  unrolled ``K`` times for models whose ``sequence`` uses a fused op (no ONNX Loop/Scan/GRU:
  every runtime and converter handles the result).
- ``IdentityGraph``: the step graph's tensors with nothing between them, the backend's
  per-call floor for `wavedge bench`.

Inputs are in raw units: an input's declared normalisation, ``(x - mean) / std``, is the
graph's first operation on it, so no runtime (nor a microcontroller) can forget or misapply
it, and the host spends no time on it.
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.errors import ExportError
from wavedge.models import StepModel
from wavedge.models.base import TORCH_DTYPES

GRAPHS = ("step", "chunk", "identity")


class _Graph(nn.Module):
    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.model = model.for_export()
        sig = model.signature
        self.n_inputs = len(sig.inputs)
        self.norm = [i.normalise is not None for i in sig.inputs]
        for k, spec in enumerate(sig.inputs):
            if spec.normalise is not None:
                self.register_buffer(f"mean{k}", torch.tensor(spec.normalise.mean))
                self.register_buffer(f"std{k}", torch.tensor(spec.normalise.std))

    def split(self, args) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
        inputs = list(args[:self.n_inputs])
        for k, normalised in enumerate(self.norm):
            if normalised:
                inputs[k] = (inputs[k] - getattr(self, f"mean{k}")) / getattr(self, f"std{k}")
        return inputs, tuple(args[self.n_inputs:])


class StepGraph(_Graph):
    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs, state = self.split(args)
        return tuple(self.model.step(*inputs, *state))


class ChunkGraph(_Graph):
    def __init__(self, model: StepModel, samples: int) -> None:
        super().__init__(model)
        self.samples = samples

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs, state = self.split(args)
        if self.model.chunk_via_sequence:
            # the whole-sequence path: input drive and readout of all K samples in one matmul
            # each, only the recurrence unrolled (measured 0.8x the time of K unrolled steps)
            return tuple(self.model.sequence(*inputs, *state))
        per_step = []
        for i in range(self.samples):
            out = self.model.step(*(x[:, i] for x in inputs), *state)
            k = len(out) - len(state)
            per_step.append(out[:k])
            state = tuple(out[k:])
        return (*(torch.stack(ys, dim=1) for ys in zip(*per_step)), *state)


class IdentityGraph(nn.Module):
    """The step graph's inputs and outputs with (almost) nothing between them: the state
    passes through and each output is zeros plus a data-dependent no-op. Benchmarks time it as
    the backend's per-call floor for this signature."""

    def __init__(self, model: StepModel) -> None:
        super().__init__()
        sig = model.signature
        self.n_inputs = len(sig.inputs)
        self.shapes = [(o.shape, TORCH_DTYPES[o.dtype]) for o in sig.outputs]

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # a data-dependent zero, so that no converter folds an output into an input
        first = args[0].reshape(1, -1)[:, :1].to(torch.float32)
        touch = 0.0 * first
        outs = [touch.reshape([1] * (len(shape) + 1)).expand(1, *shape).to(dtype)
                for shape, dtype in self.shapes]
        state = [_touched(s, touch) for s in args[self.n_inputs:]]
        return (*outs, *state)


def _touched(s: torch.Tensor, touch: torch.Tensor) -> torch.Tensor:
    t = touch.reshape([1] * s.dim())
    if s.dtype == torch.bool:
        return torch.logical_or(s, t != 0)
    return s + t.to(s.dtype)


def build_graph(model: StepModel, graph: str, samples: int) -> nn.Module:
    """The module to export for ``graph`` (one of ``GRAPHS``)."""
    if graph == "identity":
        return IdentityGraph(model)
    if graph == "step":
        return StepGraph(model)
    if graph == "chunk":
        return ChunkGraph(model, samples)
    raise ExportError(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")


def dummy_inputs(model: StepModel, samples: int, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Typed example tensors of the graph's inputs (``batch`` streams), then the reset
    state."""
    sig = model.signature
    t = () if samples == 1 else (samples,)
    xs = tuple(torch.zeros((batch, *t, *i.shape), dtype=TORCH_DTYPES[i.dtype])
               for i in sig.inputs)
    return (*xs, *model.init_state(batch))


def io_names(model: StepModel) -> tuple[list[str], list[str]]:
    """Graph input and output names, in the step contract's order."""
    sig = model.signature
    return sig.graph_inputs(), sig.graph_outputs()
