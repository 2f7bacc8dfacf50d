"""The wave-encoder: Wave-RNN of Keller, Muller, Sejnowski & Welling (ICLR 2024).

The hidden state is ``c`` rings ("channels") of ``n`` neurons. Each step

    h_{t+1} = ReLU(u * h_t + V x_t + b)

where ``u * h`` is a kernel-3 circular convolution around each ring that mixes channels (as the
authors' ``Conv1d(c, c, 3, padding_mode='circular')``, bias included). The wrap-around is written
as slice + concat so the exported graph is a plain Conv: torch's ONNX export of
``padding_mode='circular'`` has been wrong before (pytorch/pytorch#86690).

Initialisation follows the paper's code: the u-shift init makes the kernel a pure shift (activity
moves one neuron per step toward lower indices), and the V-init feeds every input dimension into
neuron 0 of each ring only, so a sample enters the ring at one place and travels as a wave.
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.models.base import StateSpec, StepModel


def ring_pad(h: torch.Tensor) -> torch.Tensor:
    """Wrap-pad the last axis by one on each side: ``[..., n] -> [..., n + 2]``."""
    return torch.cat([h[..., -1:], h, h[..., :1]], dim=-1)


def make_readout(in_features: int, out_features: int, mlp_hidden: int) -> nn.Module:
    """Linear readout, or the paper's 2-layer MLP decoder when ``mlp_hidden > 0``."""
    if mlp_hidden <= 0:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, mlp_hidden), nn.ReLU(),
                         nn.Linear(mlp_hidden, out_features))


class WaveRNN(StepModel):
    """Wave-RNN with ``channels`` rings of ``ring_size`` neurons and a per-step readout."""

    arch = "wave_rnn"

    def __init__(self, input_size: int, output_size: int, channels: int = 16, ring_size: int = 64,
                 mlp_hidden: int = 0, shift_init: bool = True, solo_init: bool = True,
                 encoder_bias: bool = True) -> None:
        super().__init__(input_size, output_size)
        self.channels, self.ring_size = channels, ring_size
        self.mlp_hidden, self.shift_init, self.solo_init = mlp_hidden, shift_init, solo_init
        # b, one bias per neuron (c * n of them); without it the ring conv's per-channel bias
        # remains. An int8 model stores b as 32- or 64-bit integers: a third of its bytes.
        self.encoder_bias = encoder_bias
        self.encoder = nn.Linear(input_size, channels * ring_size, bias=encoder_bias)  # V, b
        self.ring = nn.Conv1d(channels, channels, kernel_size=3, padding=0)  # u, bias b_u
        self.readout = make_readout(channels * ring_size, output_size, mlp_hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.shift_init:
                # dirac kernel rolled one tap: (u * h)[:, j] = h[:, j + 1], a wave moving to lower j
                self.ring.weight.zero_()
                for i in range(self.channels):
                    self.ring.weight[i, i, 2] = 1.0
                self.ring.bias.zero_()
            if self.solo_init:
                # every input dimension drives neuron 0 of every ring with weight 1, nothing else
                self.encoder.weight.zero_()
                if self.encoder.bias is not None:
                    self.encoder.bias.zero_()
                w = self.encoder.weight.view(self.channels, self.ring_size, self.input_size)
                w[:, 0, :] = 1.0
            else:
                nn.init.normal_(self.encoder.weight, 0.0, 1e-3)

    @property
    def config(self) -> dict:
        return {"input_size": self.input_size, "output_size": self.output_size,
                "channels": self.channels, "ring_size": self.ring_size,
                "mlp_hidden": self.mlp_hidden, "shift_init": self.shift_init,
                "solo_init": self.solo_init, "encoder_bias": self.encoder_bias}

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        return (StateSpec("h", (self.channels, self.ring_size)),)

    def _update(self, drive: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(drive + self.ring(ring_pad(h)))

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drive = self.encoder(x_t).view(-1, self.channels, self.ring_size)
        h = self._update(drive, h)
        return self.readout(h.flatten(1)), h

    def sequence(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        # the input drive of every step in one matmul, the readout of every step in another
        drive = self.encoder(x).view(b, t, self.channels, self.ring_size)
        hs = []
        for i in range(t):
            h = self._update(drive[:, i], h)
            hs.append(h)
        y = self.readout(torch.stack(hs, dim=1).flatten(2))
        return y, h
