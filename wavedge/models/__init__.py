"""PyTorch definitions of the seed models (the only part of wavedge, with ``export``, that
imports torch). Each model follows the step contract in ``wavedge.models.base``."""

from __future__ import annotations

from wavedge.errors import CheckpointError, InputError, reason
from wavedge.models.base import StateSpec, StepModel
from wavedge.models.baselines import GRU, IRNN
from wavedge.models.mpl import MetaPredictive
from wavedge.models.wave_rnn import WaveRNN

ARCHITECTURES: dict[str, type[StepModel]] = {cls.arch: cls for cls in (WaveRNN, IRNN, GRU,
                                                                      MetaPredictive)}


def build_model(arch: str, **config) -> StepModel:
    """Build a model by architecture name (``wave_rnn``, ``irnn``, ``gru``, ``mpl``)."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise CheckpointError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    try:
        return cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:  # a keyword or a size it cannot take
        raise InputError(f"{arch}(**{config}): {reason(exc)}") from None


__all__ = ["ARCHITECTURES", "GRU", "IRNN", "MetaPredictive", "StateSpec", "StepModel", "WaveRNN",
           "build_model"]
