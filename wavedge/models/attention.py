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
is each layer's key and value cache, ``[window, d_model]`` rings written at slot
``pos % window``, and ``pos`` (int64), the samples seen since the reset while fewer than
``window``, then kept below ``2 window`` (``_fold``). Positions are
ALiBi's linear recency bias (Press et al. 2022) on each key's age: no position embedding
grows with the stream, so a stream runs for ever on a fixed state. A slot not yet written is
masked by multiplying its weight by zero after the exponential, not by a large negative
constant, which an int8 graph could not hold (seeds.md section 6).

``sequence`` runs T samples at once from any state (the cached keys and the new ones in one
attention), equal to T steps: training and the exported chunk graph both use it.
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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
           visible: torch.Tensor) -> torch.Tensor:
    """Attention of queries ``[B, H, T, d]`` over keys and values ``[B, H, S, d]``, with an
    additive ``bias`` and a float 0/1 ``visible`` mask, both broadcast to ``[B, H, T, S]``.
    The shift before the exponential is the largest *visible* score (a hidden one stands in
    at the row's least): a later sample's key has a negative age, so a bias far above any
    visible one, and with it in the maximum every visible weight underflowed to 0 (a
    20,000-sample stream scored at chance)."""
    s = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1])) + bias
    shown = torch.where(visible > 0, s, s.amin(dim=-1, keepdim=True))
    e = torch.exp(shown - shown.amax(dim=-1, keepdim=True)) * visible  # never inf * 0
    return (e / e.sum(dim=-1, keepdim=True)) @ v


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
        """The residual adds after attention output ``o`` ``[B, H, T, d_head]``."""
        b, _, t, _ = o.shape
        h = h + self.proj(o.transpose(1, 2).reshape(b, t, -1))
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
        self.register_buffer("slopes", alibi_slopes(heads).view(1, heads, 1, 1),
                             persistent=False)
        self.register_buffer("slots", torch.arange(window), persistent=False)

    @property
    def config(self) -> dict:
        return {"input_size": self.input_size, "output_size": self.output_size,
                "d_model": self.d_model, "heads": self.heads, "layers": self.layers,
                "window": self.window, "mlp_ratio": self.mlp_ratio,
                "value_residual": self.value_residual}

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        caches = tuple(StateSpec(f"{kv}{i}", (self.window, self.d_model))
                       for i in range(self.layers) for kv in "kv")
        return (*caches, StateSpec("pos", (1,), "int64", 0))

    def _layers(self, h, caches, key_bias, visible, merge):
        """Every block over ``h`` ``[B, T, d]``: each attends over its cached keys and values
        and this call's (``merge(cache, new)`` gives what is attended to and the new cache).
        Returns the top layer's ``h`` and the new caches."""
        new_caches, v_prev = [], None
        for i, block in enumerate(self.blocks):
            q, k, v_raw = block.qkv(block.ln1(h)).chunk(3, dim=-1)
            v = v_raw if v_prev is None else v_raw + v_prev
            v_prev = v_raw if self.value_residual else None
            keys, k_cache = merge(caches[2 * i], k)
            values, v_cache = merge(caches[2 * i + 1], v)
            o = attend(block.split(q), block.split(keys), block.split(values), key_bias,
                       visible)
            h = block.finish(h, o)
            new_caches += [k_cache, v_cache]
        return h, new_caches

    def step(self, x_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *caches, pos = state
        age = torch.remainder(pos - self.slots, self.window)  # [B, W]: 0 for this sample
        visible = (age <= pos).to(x_t.dtype)[:, None, None, :]  # slots written so far
        bias = -self.slopes * age[:, None, None, :].to(x_t.dtype)
        write = (age == 0).to(x_t.dtype).unsqueeze(-1)  # [B, W, 1]: this sample's slot

        def merge(cache, new):
            cache = cache * (1.0 - write) + new * write
            return cache, cache

        h, new_caches = self._layers(self.embed(x_t).unsqueeze(1), caches, bias, visible, merge)
        y = self.head(self.ln_f(h[:, 0]))
        return (y, *new_caches, self._fold(pos + 1))

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

    def _sequence(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *caches, pos = state
        w, t = self.window, x.shape[1]
        steps = torch.arange(t, device=x.device)
        # the time each cached slot was written (negative: never) and each new sample's
        cached = pos - 1 - torch.remainder(pos - 1 - self.slots, w)  # [B, W]
        times = torch.cat([cached, pos + steps], dim=1)  # [B, W + T]
        age = (pos + steps)[:, :, None] - times[:, None, :]  # [B, T, W + T]
        visible = ((age >= 0) & (age < w) & (times[:, None, :] >= 0)).to(x.dtype)[:, None]
        bias = -self.slopes * age[:, None].to(x.dtype)
        # each slot's last writer among the new samples (negative: none, the cache stays)
        last = (t - 1) - torch.remainder(pos + t - 1 - self.slots, w)  # [B, W]
        taken = (last >= 0).unsqueeze(-1)
        index = last.clamp(min=0).unsqueeze(-1).expand(-1, -1, self.d_model)

        def merge(cache, new):
            return (torch.cat([cache, new], dim=1),
                    torch.where(taken, new.gather(1, index), cache))

        h, new_caches = self._layers(self.embed(x), caches, bias, visible, merge)
        return (self.head(self.ln_f(h)), *new_caches, self._fold(pos + t))

    def _fold(self, pos: torch.Tensor) -> torch.Tensor:
        """``pos`` past ``window`` kept in ``[window, 2 window)``: the slot (``pos % window``)
        and "every slot written" are all a step reads of it, and an ever-growing count would
        overflow TFLite's int32 (which holds the int64 state) after 2^31 samples, 25 days at
        1 kHz."""
        w = self.window
        return torch.where(pos < w, pos, w + torch.remainder(pos - w, w))
