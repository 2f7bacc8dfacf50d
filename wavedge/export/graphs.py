"""The two exported graphs, as torch modules over a model's ``step``.

Both take the state as separate named tensors and return the new state, so ONNX Runtime (which
is stateless by design) never holds state: the host loop does.

- ``StepGraph``: ``(x[1, D], *state) -> (y[1, O], *state')``, one sample per call.
- ``ChunkGraph``: ``(x[1, K, D], *state) -> (y[1, K, O], *state')``, ``K`` samples per call, the
  step unrolled ``K`` times (no ONNX Loop/Scan: every runtime and converter handles it).

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
        ys = []
        for i in range(self.samples):
            y, *state = self.model.step(x[:, i], *state)
            ys.append(y)
        return (torch.stack(ys, dim=1), *state)


def io_names(model: StepModel) -> tuple[list[str], list[str]]:
    """ONNX input and output names: ``x, state_in.<s>...`` and ``y, state_out.<s>...``."""
    names = [s.name for s in model.state_spec]
    return ["x", *(f"state_in.{n}" for n in names)], ["y", *(f"state_out.{n}" for n in names)]
