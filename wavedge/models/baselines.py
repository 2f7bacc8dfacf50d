"""Baselines with the same step contract as the wave-encoder, for comparison.

- ``IRNN``: the identity-initialised ReLU RNN of Le et al. (2015), as the Wave-RNN paper's iRNN.
- ``GRU``: a gated recurrent unit. ``sequence`` runs torch's fused ``nn.GRU``; ``step`` writes the
  gate equations out, so the exported graph never contains an ONNX ``GRU`` node (whose
  ``linear_before_reset`` has been exported wrongly before) and the two paths check each other.
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.models.base import StateSpec, StepModel
from wavedge.models.wave_rnn import make_readout


class _HiddenVector(StepModel):
    """A model whose state is one vector ``h`` of ``hidden_size``."""

    hidden_size: int
    mlp_hidden: int

    @property
    def config(self) -> dict:
        return {"input_size": self.input_size, "output_size": self.output_size,
                "hidden_size": self.hidden_size, "mlp_hidden": self.mlp_hidden}

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        return (StateSpec("h", (self.hidden_size,)),)


class IRNN(_HiddenVector):
    """``h' = ReLU(W h + V x + b)`` with ``W`` initialised to the identity."""

    arch = "irnn"

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 128,
                 mlp_hidden: int = 0) -> None:
        super().__init__(input_size, output_size)
        self.check_sizes(hidden_size=hidden_size)
        self.check_sizes(0, mlp_hidden=mlp_hidden)
        self.hidden_size, self.mlp_hidden = hidden_size, mlp_hidden
        self.encoder = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)
        self.readout = make_readout(hidden_size, output_size, mlp_hidden)
        with torch.no_grad():
            self.recurrent.weight.copy_(torch.eye(hidden_size))
            nn.init.normal_(self.encoder.weight, 0.0, 1e-3)
            self.encoder.bias.zero_()

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.encoder(x_t) + self.recurrent(h))
        return self.readout(h), h

    def sequence(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drive = self.encoder(x)
        hs = []
        for d in drive.unbind(1):  # not drive[:, i]: see WaveRNN.sequence
            h = torch.relu(d + self.recurrent(h))
            hs.append(h)
        return self.readout(torch.stack(hs, dim=1)), h


class GRU(_HiddenVector):
    """Single-layer GRU with a per-step linear (or MLP) readout."""

    arch = "gru"
    chunk_via_sequence = False  # nn.GRU would export as an ONNX GRU node

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 128,
                 mlp_hidden: int = 0) -> None:
        super().__init__(input_size, output_size)
        self.check_sizes(hidden_size=hidden_size)
        self.check_sizes(0, mlp_hidden=mlp_hidden)
        self.hidden_size, self.mlp_hidden = hidden_size, mlp_hidden
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.readout = make_readout(hidden_size, output_size, mlp_hidden)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        gi = x_t @ g.weight_ih_l0.t() + g.bias_ih_l0
        gh = h @ g.weight_hh_l0.t() + g.bias_hh_l0
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)  # torch's convention: reset gate applied after the matmul
        h = (1.0 - z) * n + z * h
        return self.readout(h), h

    def sequence(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hs, h_last = self.gru(x, h.unsqueeze(0))
        return self.readout(hs), h_last.squeeze(0)
