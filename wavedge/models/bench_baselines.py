"""The torch and numpy baselines of ``wavedge bench``, made from a checkpoint here (the runtime
imports no torch): the torch model step by step, and the family's plain numpy step where it
provides one (``StepModel.numpy_step``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def baselines(checkpoint: Path, threads: int = 1) -> tuple:
    """``wavedge.runtime.bench.Baseline`` objects for the model in ``checkpoint``; () when
    torch is not installed."""
    try:
        import torch
    except ImportError:
        return ()
    from wavedge.models.base import TORCH_DTYPES
    from wavedge.models.checkpoint import load_checkpoint
    from wavedge.runtime.bench import Baseline

    # the moments' constants where the family has them: what the exported graphs compute
    model = load_checkpoint(checkpoint).model.for_export()
    torch.set_num_threads(threads)
    sig = model.signature

    def make_torch():
        state = list(model.init_state(1))
        prep = []
        for spec in sig.inputs:
            norm = spec.normalise
            mean = np.asarray(norm.mean if norm else 0.0, np.float32)
            inv = (1.0 / np.asarray(norm.std if norm else 1.0)).astype(np.float32)
            prep.append((spec.name, TORCH_DTYPES[spec.dtype], norm is not None, mean, inv))

        noise = {i.name: np.zeros(i.shape, np.float32) for i in sig.noise}

        def step(sample):  # as Stream.push: the noise zero (the mean network) unless given
            values = {**noise, **(sample if isinstance(sample, dict)
                                  else {sig.fed[0].name: sample})}
            xs = [torch.from_numpy(((values[n] - m) * inv) if normed else
                                   np.asarray(values[n]))[None].to(dt)
                  for n, dt, normed, m, inv in prep]
            with torch.inference_mode():
                out = model.step(*xs, *state)
            state[:] = out[len(out) - len(state):]

        return step

    out = [Baseline("torch", f"torch {torch.__version__}", make_torch, divisor=5)]
    if model.numpy_step() is not None:
        out.append(Baseline("numpy", f"numpy {np.__version__}", model.numpy_step))
    return tuple(out)
