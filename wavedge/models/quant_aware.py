"""Quantisation-aware fine-tuning: weights that an int8 converter stores exactly.

Converters quantise a weight tensor symmetrically: ``scale = max|w| / 127`` (per tensor, or per
output channel), ``q = round(w / scale)``. For the Wave-RNN that rounding is not harmless: the
ring convolution's taps are about 1 (the shift) and about 0.01 (everything else), one channel's
scale is set by the shift, and the small taps move by up to 0.4 % of the shift - every step,
fed back, for as long as the stream runs. Measured on the bundled model: 20 points of test
accuracy lost, whatever the activations' precision.

``int8_weight_grid(model)`` trains the model through that rounding (straight-through
estimator: the forward pass sees the rounded weights, the gradient passes as if it did not) and
leaves each weight exactly on its int8 grid, so the converter's rounding changes nothing. The
grid matches the converter's choices in ``wavedge.export.tflite_export``: per output channel
for convolutions, per tensor for fully-connected layers (one scale instead of one per neuron
keeps the int8 file small).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

LEVELS = 127  # symmetric int8: [-127, 127]


def grid_scale(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """The converter's scale: ``max|w| / 127`` per output channel (axis 0) or per tensor."""
    if per_channel:
        a = w.detach().abs().flatten(1).amax(1).view(-1, *[1] * (w.dim() - 1))
    else:
        a = w.detach().abs().max()
    return a.clamp_min(1e-12) / LEVELS


def on_grid(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``w`` rounded to its int8 grid (values, not integers)."""
    scale = grid_scale(w, per_channel)
    return torch.clamp(torch.round(w / scale), -LEVELS, LEVELS) * scale


class _FakeQuant(nn.Module):
    def __init__(self, per_channel: bool) -> None:
        super().__init__()
        self.per_channel = per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (on_grid(w, self.per_channel) - w).detach()  # straight-through


def quantised_weights(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """The layers whose weights an int8 converter quantises, with their granularity
    (``True``: per output channel)."""
    layers: list[tuple[nn.Module, bool]] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            layers.append((module, False))
        elif isinstance(module, nn.Conv1d | nn.Conv2d):
            layers.append((module, True))
    return layers


@contextlib.contextmanager
def int8_weight_grid(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes with int8-grid weights (straight-through gradients);
    on exit every weight is left on its grid."""
    layers = quantised_weights(model)
    for module, per_channel in layers:
        parametrize.register_parametrization(module, "weight", _FakeQuant(per_channel))
    try:
        yield model
    finally:
        for module, _ in layers:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def grid_error(model: nn.Module) -> float:
    """Largest distance of any quantised weight from its int8 grid, relative to the grid step
    (0 when int8 conversion is lossless for the weights; up to 0.5 otherwise)."""
    worst = 0.0
    with torch.no_grad():
        for module, per_channel in quantised_weights(model):
            w = module.weight
            step = grid_scale(w, per_channel)
            worst = max(worst, float(((w - on_grid(w, per_channel)).abs() / step).max()))
    return worst
