"""PyTorch definitions of the seed models (the only part of wavedge, with ``export``, that
imports torch). Each model follows the step contract in ``wavedge.models.base``."""

from __future__ import annotations

import inspect

from wavedge.errors import CheckpointError, InputError, reason
from wavedge.models.attention import ResidualAttention
from wavedge.models.base import StateSpec, StepModel
from wavedge.models.baselines import GRU, IRNN
from wavedge.models.mpl import MetaPredictive
from wavedge.models.tem import TEMTransformer
from wavedge.models.wave_rnn import WaveRNN

ARCHITECTURES: dict[str, type[StepModel]] = {
    cls.arch: cls for cls in (WaveRNN, IRNN, GRU, MetaPredictive, ResidualAttention,
                              TEMTransformer)}


def build_model(arch: str, **config) -> StepModel:
    """Build a model by architecture name (``wave_rnn``, ``irnn``, ``gru``, ``mpl``,
    ``residual_attention``, ``tem_t``)."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise CheckpointError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    params = inspect.signature(cls).parameters.values()
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in config if k not in takes]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):  # a misspelt --config key
        raise InputError(f"{arch} has no setting {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(takes)}")
    try:
        model = cls(**config)
    except InputError as exc:  # the model's own check of a setting, named
        raise InputError(f"{arch}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:  # a size it cannot take
        raise InputError(f"{arch}(**{config}): {reason(exc)}") from None
    return model


__all__ = ["ARCHITECTURES", "GRU", "IRNN", "MetaPredictive", "ResidualAttention", "StateSpec",
           "StepModel", "TEMTransformer", "WaveRNN", "build_model"]
