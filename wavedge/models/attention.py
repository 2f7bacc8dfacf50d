"""Residual attention streams: a causal transformer whose attention heads' values flow from
layer to layer (Burns, Fukai & Earls, arXiv 2412.15113; authors' code
``tfburns/amicl-and-residual-attention-streams``), streamed one sample at a time.

Per layer ``n``, with ``a = LayerNorm(h)`` and the usual residual ``h += ...`` around the
attention and the MLP:

    q, k, v = a W_q, a W_k, a W_v
    v'_n    = v_n + v_{n-1}                  (the value stream; layer 0 has no v_{-1})
    o       = softmax(q K^T / sqrt(d_h) - slope_h * age) V'

``value_residual=False`` is the same transformer without the stream (the paper's baseline).
Which earlier value is added is not settled by the sources read (raw ``v_{n-1}`` or the
augmented ``v'_{n-1}``: identical for two layers); this adds the raw one, as the paper's
figure draws it.

**Streaming.** A step attends over the last ``window`` samples, its own included. The state
is each layer's keys and values for those samples, oldest first (keys ``[heads, d_head,
window]``, values ``[heads, window, d_head]``): a step drops the oldest and appends its own.
Positions are ALiBi's linear recency bias (Press et al. 2022) on each key's age, so the state
is the same size at every sample and a stream runs for ever; the receptive field is
``layers * (window - 1) + 1`` samples. After a reset the slots hold zero keys and values,
which the model attends to as a zero-padded convolution sees its padding (trained the same
way), so a step needs no mask and no position counter: one ``Softmax`` per head, and no state
of integers for an int8 or int32 graph to hold.

``sequence`` runs T samples at once from any state (the cached keys and the new ones in one
masked attention), equal to T steps: training and the exported chunk graph both use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wavedge.errors import InputError
from wavedge.models.base import StepModel
from wavedge.signature import StateSpec


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's head slopes, the geometric series 2^(-8 i / heads), i = 1..heads."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor,
           visible: torch.Tensor) -> torch.Tensor:
    """Attention of queries ``[B, H, T, d]`` over keys ``[B, H, d, S]`` (transposed) and
    values ``[B, H, S, d]``, the scores times ``scale``, with an additive ``bias`` and a float
    0/1 ``visible`` mask, both broadcast to ``[B, H, T, S]``; masked by a product after the
    exponential, not by a large negative constant, which an int8 graph could not hold
    (seeds.md section 6). The shift before the exponential is the largest *visible* score (a
    hidden one stands in at the row's least): a hidden key may score far above every visible
    one, and with it in the maximum every visible weight underflowed to 0 (a 20,000-sample
    stream, whose later keys had negative ages and so large biases, scored at chance).
    Normalised by the sum's reciprocal, not divided by the sum: LiteRT's int16 ``DIV`` gave
    its largest value for a numerator of one step, so in int8 TFLite every faint weight
    (3e-5 beside a sharp match) became 1 and TEM-t lost 12 points (docs/tem.md)."""
    s = q @ k * scale + bias
    shown = torch.where(visible > 0, s, s.amin(dim=-1, keepdim=True))
    e = torch.exp(shown - shown.amax(dim=-1, keepdim=True)) * visible  # never inf * 0
    return (e * torch.reciprocal(e.sum(dim=-1, keepdim=True))) @ v


class Block(nn.Module):
    """One transformer layer (pre-LayerNorm attention and ReLU MLP)."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.ReLU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, d_model]`` -> ``[B, H, S, d_head]``."""
        b, s, d = x.shape
        return x.view(b, s, self.heads, d // self.heads).transpose(1, 2)

    def finish(self, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The residual adds after attention output ``o`` ``[B, H, T, d_head]``, onto ``h``
        ``[B, T, d]``, or ``[B, d]`` for one sample (2-D, so the layers export as ``Gemm``)."""
        h = h + self.proj(o.transpose(1, 2).reshape(h.shape))
        return h + self.mlp(self.ln2(h))


class ResidualAttention(StepModel):
    """A classifier over float channels: a causal transformer over the last ``window``
    samples with the residual attention (value) stream."""

    arch = "residual_attention"
    BLOCK = 256  # samples per attention in ``sequence``

    def __init__(self, input_size: int = 1, output_size: int = 2, d_model: int = 32,
                 heads: int = 2, layers: int = 2, window: int = 32, mlp_ratio: int = 2,
                 value_residual: bool = True) -> None:
        super().__init__(input_size, output_size)
        self.check_sizes(input_size=input_size, output_size=output_size, d_model=d_model,
                         heads=heads, layers=layers, window=window, mlp_ratio=mlp_ratio)
        if d_model % heads:
            raise InputError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.d_model, self.heads, self.layers = d_model, heads, layers
        self.window, self.mlp_ratio = window, mlp_ratio
        self.value_residual = bool(value_residual)
        self.embed = nn.Linear(input_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, output_size)
        self.scale = 1.0 / math.sqrt(d_model // heads)
        self.register_buffer("slopes", alibi_slopes(heads).view(1, heads, 1, 1),
                             persistent=False)
        # a step's keys are in time order, the oldest first: ages window - 1 .. 0
        self.register_buffer("step_bias", -self.slopes * torch.arange(window - 1, -1, -1.0),
                             persistent=False)

    @property
    def config(self) -> dict:
        return {"input_size": self.input_size, "output_size": self.output_size,
                "d_model": self.d_model, "heads": self.heads, "layers": self.layers,
                "window": self.window, "mlp_ratio": self.mlp_ratio,
                "value_residual": self.value_residual}

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        h, dh, w = self.heads, self.d_model // self.heads, self.window
        return tuple(spec for i in range(self.layers) for spec in (
            StateSpec(f"k{i}", (h, dh, w)), StateSpec(f"v{i}", (h, w, dh))))

    def _values(self, block: Block, h: torch.Tensor, v_prev):
        """One block's query, key and value over ``h`` ``[B, T, d]``, the value stream's
        term added; and the raw value the next block adds."""
        q, k, v_raw = block.qkv(block.ln1(h)).chunk(3, dim=-1)
        v = v_raw if v_prev is None else v_raw + v_prev
        return q, k, v, (v_raw if self.value_residual else None)

    def step(self, x_t: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, hd = x_t.shape[0], (self.heads, self.d_model // self.heads)
        h, v_prev, new = self.embed(x_t), None, []
        for i, block in enumerate(self.blocks):
            q, k, v, v_prev = self._values(block, h, v_prev)
            # the oldest slot out, this sample's in: keys [H, d_head, W] so the scores need
            # no transpose, values [H, W, d_head]
            keys = torch.cat([caches[2 * i][..., 1:], k.view(b, *hd, 1)], dim=-1)
            values = torch.cat([caches[2 * i + 1][:, :, 1:], v.view(b, hd[0], 1, hd[1])], 2)
            s = q.view(b, hd[0], 1, hd[1]) @ keys * self.scale + self.step_bias
            o = torch.softmax(s, dim=-1) @ values  # [B, H, 1, d_head]
            h = block.finish(h, o)
            new += [keys, values]
        return (self.head(self.ln_f(h)), *new)

    def sequence(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """In blocks of at most ``BLOCK`` samples, the state carried: the attention's memory
        grows with T * (window + T) in one block (a 20,000-sample stream would have held
        several GB per tensor), and the blocks equal one call as steps do."""
        if x.shape[1] <= self.BLOCK:
            return self._sequence(x, *state)
        ys = []
        for part in x.split(self.BLOCK, dim=1):
            y, *state = self._sequence(part, *state)
            ys.append(y)
        return (torch.cat(ys, dim=1), *state)

    def _sequence(self, x: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t, w = x.shape[1], self.window
        # key j of the w cached and t new ones (time order) is t + w - j samples older than
        # query t; seen when 0 <= age < w, as a step sees its window
        age = (torch.arange(t, device=x.device)[:, None] + w
               - torch.arange(w + t, device=x.device)[None, :])
        visible = ((age >= 0) & (age < w)).to(x.dtype)
        bias = -self.slopes * age.clamp(min=0).to(x.dtype)
        h, v_prev, new = self.embed(x), None, []
        for i, block in enumerate(self.blocks):
            q, k, v, v_prev = self._values(block, h, v_prev)
            keys = torch.cat([caches[2 * i], block.split(k).transpose(-1, -2)], dim=-1)
            values = torch.cat([caches[2 * i + 1], block.split(v)], dim=2)
            o = attend(block.split(q), keys, values, self.scale, bias, visible)
            h = block.finish(h, o)
            new += [keys[..., t:], values[:, :, t:]]
        return (self.head(self.ln_f(h)), *new)
