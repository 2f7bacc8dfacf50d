"""The two exported graphs, as torch modules over a model's ``step``.

Both take the state as separate named tensors and return the new state, so ONNX Runtime (which
is stateless by design) never holds state: the host loop does.

- ``StepGraph``: ``(x[1, D], *state) -> (y[1, O], *state')``, one sample per call.
- ``ChunkGraph``: ``(x[1, K, D], *state) -> (y[1, K, O], *state')``, ``K`` samples per call, the
  step unrolled ``K`` times (no ONNX Loop/Scan: every runtime and converter handles it).
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.models import StepModel


class StepGraph(nn.Module):
    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.step(x, *state)


class ChunkGraph(nn.Module):
    def __init__(self, model: StepModel, samples: int) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ys = []
        for i in range(self.samples):
            y, *state = self.model.step(x[:, i], *state)
            ys.append(y)
        return (torch.stack(ys, dim=1), *state)


def io_names(model: StepModel) -> tuple[list[str], list[str]]:
    """ONNX input and output names: ``x, state_in.<s>...`` and ``y, state_out.<s>...``."""
    names = [s.name for s in model.state_spec]
    return ["x", *(f"state_in.{n}" for n in names)], ["y", *(f"state_out.{n}" for n in names)]
