"""The two exported graphs, as torch modules over a model's ``step``.

Both take the state as separate named tensors and return the new state, so ONNX Runtime (which
is stateless by design) never holds state: the host loop does.

- ``StepGraph``: ``(x[1, D], *state) -> (y[1, O], *state')``, one sample per call.
- ``ChunkGraph``: ``(x[1, K, D], *state) -> (y[1, K, O], *state')``, ``K`` samples per call: the
  model's ``sequence`` (recurrence unrolled ``K`` times, input and readout batched), or ``step``
  unrolled ``K`` times for models whose ``sequence`` uses a fused op (no ONNX Loop/Scan/GRU:
  every runtime and converter handles the result).

``x`` is in raw sensor units: the per-channel normalisation of training, ``(x - mean) / std``,
is the graph's first operation, so no runtime (nor a microcontroller) can forget or misapply it,
and the host spends no time on it.
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.models import StepModel


class _Normalised(nn.Module):
    def __init__(self, model: StepModel, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))


class StepGraph(_Normalised):
    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.step((x - self.mean) / self.std, *state)


class ChunkGraph(_Normalised):
    def __init__(self, model: StepModel, samples: int, mean, std) -> None:
        super().__init__(model, mean, std)
        self.samples = samples

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (x - self.mean) / self.std
        if self.model.chunk_via_sequence:
            # the whole-sequence path: input drive and readout of all K samples in one matmul
            # each, only the recurrence unrolled (measured 0.8x the time of K unrolled steps)
            return self.model.sequence(x, *state)
        ys = []
        for i in range(self.samples):
            y, *state = self.model.step(x[:, i], *state)
            ys.append(y)
        return (torch.stack(ys, dim=1), *state)


class IdentityGraph(nn.Module):
    """The step graph's inputs and outputs with (almost) nothing between them: the state passes
    through and ``y`` is the first input value broadcast. Benchmarks time it as the backend's
    per-call floor for this signature."""

    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.register_buffer("zeros", torch.zeros(1, model.output_size))

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # a data-dependent no-op, so that no converter folds the state output into the input
        touch = 0.0 * x[:, :1]
        return (self.zeros + x[:, :1], *(s + touch.reshape([1] * s.dim()) for s in state))


def build_graph(model: StepModel, graph: str, samples: int, mean, std) -> nn.Module:
    """The module to export for ``graph`` ("step", "chunk" or "identity")."""
    if graph == "identity":
        return IdentityGraph(model)
    if graph == "step":
        return StepGraph(model, mean, std)
    return ChunkGraph(model, samples, mean, std)


def io_names(model: StepModel) -> tuple[list[str], list[str]]:
    """ONNX input and output names: ``x, state_in.<s>...`` and ``y, state_out.<s>...``."""
    names = [s.name for s in model.state_spec]
    return ["x", *(f"state_in.{n}" for n in names)], ["y", *(f"state_out.{n}" for n in names)]
