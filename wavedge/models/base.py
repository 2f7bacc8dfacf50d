"""The step contract every wavedge model follows (see docs/wave-encoder.md and
docs/own-model.md), in the order of the model's ``signature`` (``wavedge.signature``):

- ``step(*inputs_t, *state) -> (*outputs_t, *new_state)``: the unit that is exported; each input
  ``[B, *shape]``, each output ``[B, *shape]``.
- ``sequence(*inputs, *state) -> (*outputs, *state_T)``: the same over ``[B, T, *shape]``
  inputs from a given state (the default runs ``step`` T times).
- ``init_state(batch)``: the reset state, built from the signature's state specs (their
  dtypes and reset values honoured).
- ``forward(*inputs)``: ``sequence`` from the reset state, the outputs only (one tensor when
  the model has one output); a stochastic model's ``noise`` inputs may be left out (drawn in
  training mode, zero in eval mode).

Invariant, tested for every model: T calls of ``step`` equal ``sequence`` over the T samples.

A classifier over one float input need only set ``input_size``/``output_size`` and
``state_spec``: the default ``signature`` declares ``x`` -> class scores ``y``. Any other model
overrides ``signature``. Families hook into export and bench through ``quant_policy`` and
``numpy_step`` (both optional).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wavedge.errors import InputError, check_count
from wavedge.signature import InputSpec, Normalise, OutputSpec, Signature, StateSpec

TORCH_DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64,
                "bool": torch.bool}


@dataclass(frozen=True)
class QuantPolicy:
    """How a family's graphs become int8 (export reads it; see docs/quantisation.md).

    ``per_channel_ops``: ONNX op types whose weights get one scale per output channel (the
    rest per tensor); ``op_types``: ops to quantise (() = Conv, Gemm, MatMul); ``tie_states``:
    each float state's recurrence shares one range in TFLite (carry the integers as they
    are); ``tflite_chunk``: write an int8 TFLite chunk graph too; ``description``: the weights'
    granularity in words, for the manifest; ``float_variance``: the matmuls of squared
    activations (a mean-field network's variance path) stay float in int8 ONNX."""

    per_channel_ops: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    float_variance: bool = False
    tie_states: bool = True
    tflite_chunk: bool = False
    description: str = "int8, per tensor"


class StepModel(nn.Module):
    """Base class: subclasses set ``arch`` and implement ``step`` (and ``sequence`` where a
    batched whole-sequence path is faster), and either ``state_spec`` (classifiers) or
    ``signature``."""

    arch: str = ""
    # export the chunk graph from ``sequence`` (plain ops); False where ``sequence`` uses a
    # fused op that exporters get wrong or converters lack (the GRU)
    chunk_via_sequence: bool = True
    # the export check's largest allowed error of a graph against torch, unless the user gives
    # one (wavedge.export.check: relative to the output's magnitude, at least 1)
    export_tolerance: float = 1e-5

    def __init__(self, input_size: int = 0, output_size: int = 0) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.annotations: dict = {}  # channels, labels, mean/std, sample rate (from training)

    @staticmethod
    def check_sizes(low: int = 1, **sizes) -> None:
        """``InputError`` naming the first of ``sizes`` that is not a whole number of at least
        ``low`` (a ``--config`` of channels 0 had failed mid-training, or in torch's words)."""
        for name, value in sizes.items():
            check_count(value, name, low)

    @property
    def config(self) -> dict:
        """The keyword arguments that rebuild this model (stored in checkpoints)."""
        return {}

    @property
    def state_spec(self) -> tuple[StateSpec, ...]:
        return self.signature.state

    @property
    def signature(self) -> Signature:
        """The default: one float input ``x`` of ``input_size`` channels, class scores ``y``
        over ``output_size`` classes, the ``state_spec``; annotated with what training
        learnt (``annotate``)."""
        sig = Signature((InputSpec("x", (self.input_size,)),),
                        (OutputSpec("y", (self.output_size,), "class_scores"),),
                        tuple(self.state_spec))
        return sig.with_annotations(**self.annotations)

    def annotate(self, channels=None, labels=None, mean=None, std=None,
                 sample_rate_hz=None) -> "StepModel":
        """Record the data's channel names, class labels, normalisation and sample rate for
        the default signature (a checkpoint's meta carries them)."""
        self.annotations = {k: v for k, v in dict(channels=channels, labels=labels, mean=mean,
                                                  std=std, sample_rate_hz=sample_rate_hz).items()
                            if v is not None}
        return self

    def for_export(self) -> "StepModel":
        """The module the graphs are traced from (default: this one); a family whose trained
        parameters are not what the step reads (distributions, say) returns a copy that reads
        constants."""
        return self

    def quant_policy(self) -> QuantPolicy:
        return QuantPolicy()

    def numpy_step(self):
        """Optional bench baseline: a function ``f(sample) -> outputs`` doing one step in
        plain numpy with its own state (raw samples, normalisation included), or None."""
        return None

    def int8_hint(self) -> str:
        """Advice appended to a failed int8 accuracy gate."""
        return ""

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """The reset state for ``batch`` streams, each state in its declared dtype."""
        p = next(self.parameters(), None)
        device = p.device if p is not None else None
        return tuple(torch.from_numpy(s.reset_array(batch)).to(device) for s in self.state_spec)

    def step(self, *inputs_and_state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def sequence(self, *inputs_and_state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``step`` over the time axis (axis 1) of every input."""
        n = len(self.signature.inputs)
        inputs, state = inputs_and_state[:n], inputs_and_state[n:]
        per_step = []
        for t in zip(*(x.unbind(1) for x in inputs)):
            out = self.step(*t, *state)
            k = len(out) - len(state)
            per_step.append(out[:k])
            state = out[k:]
        outputs = tuple(torch.stack(ys, dim=1) for ys in zip(*per_step))
        return (*outputs, *state)

    def forward(self, *inputs: torch.Tensor, state: tuple | None = None):
        """``sequence`` from ``state`` (default: reset) over the inputs a sample carries
        (``Signature.fed``), or over every input. Noise inputs not given are drawn standard
        normal in training mode (a stochastic network trains through its noisy pass) and zero
        in eval mode (the mean network, as a stream runs it by default)."""
        sig = self.signature
        if len(inputs) == len(sig.fed) < len(sig.inputs):
            given = iter(inputs)
            lead = inputs[0].shape[:2]
            inputs = tuple(next(given) if i.role != "noise" else self._noise(
                (*lead, *i.shape), inputs[0].device) for i in sig.inputs)
        if state is None:
            state = self.init_state(inputs[0].shape[0])
        outs = self.sequence(*inputs, *state)
        n = len(self.signature.outputs)
        return outs[0] if n == 1 else outs[:n]

    def _noise(self, shape: tuple, device: torch.device) -> torch.Tensor:
        # drawn by torch's CPU generator and moved: on a GPU, its own generator would give a
        # run other noise than the CPU run of the same seed (wavedge.models.train._fit)
        return torch.randn(shape).to(device) if self.training else \
            torch.zeros(shape, device=device)

    def scores(self, *inputs: torch.Tensor, state: tuple | None = None) -> torch.Tensor:
        """The first output over the sequence from ``state`` (default: reset; a classifier's
        logits)."""
        out = self(*inputs, state=state)
        return out if isinstance(out, torch.Tensor) else out[0]

    # -- training hooks (wavedge.models.train; a family overrides what its learning needs) ---
    def training_loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                      learning: str = "backprop", gen: torch.Generator | None = None,
                      state: tuple | None = None):
        """The loss of one batch (inputs ``[B, T, D]``, or a tuple of each input's, per-step
        targets ``[B, T]``, the steps that count ``[B, T]``, the state the batch starts from,
        default reset), whose gradient the recipe's optimiser follows: cross-entropy through
        the whole sequence (``backprop``) unless the family learns otherwise."""
        if learning != "backprop":
            raise InputError(f"{self.arch or type(self).__name__}: learns by backprop only, "
                             f"not {learning!r}")
        logits = self.scores(*(x if isinstance(x, tuple) else (x,)), state=state)
        return nn.functional.cross_entropy(logits[mask], y[mask])

    def param_groups(self, lr: float) -> list[dict]:
        """The optimiser's parameter groups at learning rate ``lr``."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def after_update(self) -> None:
        """Called after every optimiser step (a family's constraints, clamped)."""

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["Normalise", "QuantPolicy", "StateSpec", "StepModel", "TORCH_DTYPES"]
