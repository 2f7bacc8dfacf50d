"""The step contract every wavedge model follows (see docs/wave-encoder.md).

- ``forward(x[B, T, D]) -> y[B, T, O]``: whole-sequence evaluation from the reset state.
- ``sequence(x[B, T, D], *state) -> (y[B, T, O], *state_T)``: the same, from a given state.
- ``init_state(batch) -> tuple of tensors`` and ``state_spec`` (names, per-sample shapes, dtypes).
- ``step(x_t[B, D], *state) -> (y_t[B, O], *new_state)``: the unit that is exported.

Invariant, tested for every model: T calls of ``step`` equal ``forward`` over the T samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: its name, shape for one stream (no batch axis) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    reset_value: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "reset_value": self.reset_value}


class StepModel(nn.Module):
    """Base class: subclasses set ``arch`` and implement ``state_spec``, ``step`` and ``sequence``."""

    arch: str = ""
    # export the chunk graph from ``sequence`` (plain ops); False where ``sequence`` uses a
    # fused op that exporters get wrong or converters lack (the GRU)
    chunk_via_sequence: bool = True

    def __init__(self, input_size: int, output_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size

    @property
    def config(self) -> dict:
        """The keyword arguments that rebuild this model (stored in checkpoints)."""
        raise NotImplementedError

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        raise NotImplementedError

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """The reset state for ``batch`` streams."""
        p = next(self.parameters())
        return tuple(torch.full((batch, *s.shape), s.reset_value, dtype=p.dtype, device=p.device)
                     for s in self.state_spec)

    def step(self, x_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def sequence(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(x, *self.init_state(x.shape[0]))[0]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
