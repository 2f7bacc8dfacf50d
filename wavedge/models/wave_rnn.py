"""The wave-encoder: Wave-RNN of Keller, Muller, Sejnowski & Welling (ICLR 2024).

The hidden state is ``c`` rings ("channels") of ``n`` neurons. Each step

    h_{t+1} = ReLU(u * h_t + V x_t + b)

where ``u * h`` is a kernel-3 circular convolution around each ring that mixes channels (as the
authors' ``Conv1d(c, c, 3, padding_mode='circular')``, bias included). The wrap-around is written
as slice + concat (one wrap-mode Pad in ONNX) so the exported graph is a plain Conv (2-D in
the ONNX graphs of several streams, see ``_ring``): torch's ONNX export of
``padding_mode='circular'`` has been wrong before (pytorch/pytorch#86690).

Initialisation follows the paper's code: the u-shift init makes the kernel a pure shift (activity
moves one neuron per step toward lower indices), and the V-init feeds every input dimension into
neuron 0 of each ring only, so a sample enters the ring at one place and travels as a wave.
"""

from __future__ import annotations

import torch
from torch import nn

import numpy as np

from wavedge.models.base import QuantPolicy, StateSpec, StepModel


def ring_pad(h: torch.Tensor) -> torch.Tensor:
    """Wrap-pad the last axis by one on each side: ``[..., n] -> [..., n + 2]``.

    In an ONNX export, one ``Pad`` in wrap mode (opset 19): the two slices and the concat it
    replaces were 45 % of ONNX Runtime's time in the unrolled chunk graph (per-node profile of
    the bundled model), and the chunk is 25 % faster without them. Everywhere else (training,
    the TFLite converter, which turns a circular pad into three PADs and SELECTs and made
    LiteRT's chunk 1.9x slower) slices and a concat. Both measured 2026-12-02."""
    if torch.onnx.is_in_onnx_export():
        return nn.functional.pad(h, (1, 1), mode="circular")
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
        self.check_sizes(channels=channels, ring_size=ring_size)
        self.check_sizes(0, mlp_hidden=mlp_hidden)
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

    def quant_policy(self) -> QuantPolicy:
        # the ring convolution per output channel, the fully-connected layers per tensor: the
        # grid wavedge.models.quant_aware trains on. An int8 TFLite chunk graph measured 1.04x
        # the fp32 size and 0.97 agreement (its 32 unrolled steps each carry their own
        # quantisation parameters), so int8 TFLite runs step by step, as on a microcontroller.
        return QuantPolicy(per_channel_ops=("Conv",), tie_states=True, tflite_chunk=False,
                           description="int8 (ring conv per output channel, fully-connected "
                                       "per tensor)")

    def int8_hint(self) -> str:
        from wavedge.models.quant_aware import grid_error

        if grid_error(self) < 0.01:
            return ""
        return ("; its weights are off their int8 grid: train with quant_aware_epochs "
                "(docs/quantisation.md)")

    def numpy_step(self):
        """A plain numpy Wave-RNN step (the hand-written alternative to a runtime): one GEMV
        for the input drive, the ring convolution as one [c, 3c] @ [3c, n] matmul over the
        wrapped neighbours, one GEMV for the readout; normalisation included. Checked against
        torch in the tests. None for the MLP readout."""
        sd = {k: v.detach().numpy().astype(np.float32) for k, v in self.state_dict().items()}
        if "readout.weight" not in sd:
            return None
        sig = self.signature
        norm = sig.inputs[0].normalise
        mean = np.asarray(norm.mean if norm else 0.0, np.float32)
        inv_std = (1.0 / np.asarray(norm.std if norm else 1.0)).astype(np.float32)
        c, n = self.channels, self.ring_size
        w_in = sd["encoder.weight"]
        b_in = sd.get("encoder.bias", np.zeros(w_in.shape[0], np.float32))  # encoder_bias=False
        u = np.concatenate([sd["ring.weight"][:, :, k] for k in range(3)], axis=1)  # [c, 3c]
        b_u = sd["ring.bias"][:, None]
        w_out, b_out = sd["readout.weight"], sd["readout.bias"]
        h = np.zeros((c, n), np.float32)
        left, right = np.roll(np.arange(n), 1), np.roll(np.arange(n), -1)
        stacked = np.empty((3 * c, n), np.float32)

        def step(x: np.ndarray) -> np.ndarray:
            nonlocal h
            xn = (x - mean) * inv_std
            np.take(h, left, axis=1, out=stacked[:c])
            stacked[c:2 * c] = h
            np.take(h, right, axis=1, out=stacked[2 * c:])
            h = np.maximum((w_in @ xn + b_in).reshape(c, n) + u @ stacked + b_u, 0.0)
            return w_out @ h.reshape(-1) + b_out

        return step

    def _update(self, drive: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(drive + self._ring(ring_pad(h)))

    def _ring(self, padded: torch.Tensor) -> torch.Tensor:
        """The ring convolution; in an ONNX graph of several streams, a 2-D ``Conv`` of height
        1, which ONNX Runtime runs in its blocked (NCHWc) layout: the bundled model's 8-stream
        step 4-8 % and its 8-stream chunk 14-16 % faster (interleaved, 2026-12-02). The
        one-stream graphs keep the 1-D ``Conv``: there the reshapes around it cost more than
        it saves (11.6 -> 12.3 us a step)."""
        if padded.shape[0] > 1 and torch.onnx.is_in_onnx_export():
            w = self.ring.weight.unsqueeze(2)
            return nn.functional.conv2d(padded.unsqueeze(2), w, self.ring.bias).squeeze(2)
        return self.ring(padded)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drive = self.encoder(x_t).view(-1, self.channels, self.ring_size)
        h = self._update(drive, h)
        return self.readout(h.flatten(1)), h

    def sequence(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        # the input drive of every step in one matmul, the readout of every step in another
        drive = self.encoder(x).view(b, t * self.channels, self.ring_size)
        hs = []
        # split, not drive[:, i]: indexing keeps the whole drive alive per step in autograd,
        # which made training quadratic in the length (measured 9x slower at 110 steps)
        for d in drive.split(self.channels, dim=1):
            h = self._update(d, h)
            hs.append(h)
        y = self.readout(torch.cat(hs, dim=1).view(b, t, -1))
        return y, h
