"""TEM-t: a transformer whose positions are path-integrated from actions (Whittington, Warren &
Behrens, ICLR 2022, arXiv 2112.04035; no code was released), streamed one step at a time.

An agent walks a graph (``wavedge.models.gridworld``): at each step it sees an observation
``x_t`` (an id) where it stands and takes an action ``a_t``; the model predicts what it will
see next. Its position code ``e`` is a recurrence driven by the actions only:

    e_{t+1} = n(e_t W_{a_t})                      (one d x d matrix per action)
    key_t   = LN(e_t) W_e,   value_t = E[x_t]     (keys from positions, values from stimuli)
    query   = LN(e_{t+1}) W_e
    y       = softmax(beta * query K^T / sqrt(d_key)) V     over the memory
    logits  = MLP(y)                              (the next observation)

``LN`` is a LayerNorm without weights (a z-score, at the attention's input, as the paper's
final version is reported to have it). ``n`` rescales ``e`` to unit root-mean-square: the
paper's sigma is linear or ReLU, and without a normalisation the code grows without bound on
a long walk (a reimplementation reports |e| ~ 1e13 after 255 steps); with it, a walk of any
length keeps ``e`` bounded and a perfect path integrator (orthogonal W_a) stays exact.

**Streaming.** The state is the position ``e``, and the memory: the last ``memory`` keys
``[d_key, memory]`` and values ``[memory, d_value]``, oldest first, with a 0/1 ``filled``
mask. A step writes its own (key, value), drops the oldest, moves, and reads; no write
pointer, no integer state. A place not seen within ``memory`` steps is forgotten (the ring
buffer of seeds.md 3.5); a reset (a new environment) empties the memory.

``path_integration=False`` is the same model with one transition matrix for every action: its
positions count time and know nothing of the moves (the baseline of docs/tem.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wavedge.models.attention import attend
from wavedge.models.base import StepModel
from wavedge.signature import InputSpec, OutputSpec, Signature, StateSpec


def unit_rms(e: torch.Tensor) -> torch.Tensor:
    return e * torch.rsqrt(e.pow(2).mean(dim=-1, keepdim=True) + 1e-6)


class TEMTransformer(StepModel):
    """Next-observation prediction from (observation id, action id) pairs."""

    arch = "tem_t"
    BLOCK = 256  # queries per attention in ``sequence`` (memory grows with T * (memory + T))
    # the export check's: a query matches its place's keys sharply, and float32 rounding moves
    # the logits of trained 5x5 models by 7e-6 to 1.5e-5 of their size (torch float32 against
    # float64, 8 walks of 400 steps); the graphs differ from torch by as much
    export_tolerance = 1e-4

    def __init__(self, observations: int = 45, actions: int = 5, d_position: int = 64,
                 d_key: int = 64, d_value: int = 32, hidden: int = 64, memory: int = 256,
                 path_integration: bool = True) -> None:
        super().__init__(0, observations)
        self.check_sizes(observations=observations, actions=actions, d_position=d_position,
                         d_key=d_key, d_value=d_value, hidden=hidden, memory=memory)
        self.observations, self.actions, self.memory = observations, actions, memory
        self.d_position, self.d_key, self.d_value, self.hidden = d_position, d_key, d_value, \
            hidden
        self.path_integration = bool(path_integration)
        # near the identity: a step starts as "stay" and learns what each move does
        moves = actions if self.path_integration else 1
        self.transition = nn.Parameter(torch.eye(d_position).repeat(moves, 1, 1)
                                       + torch.randn(moves, d_position, d_position)
                                       / (4 * math.sqrt(d_position)))
        self.start = nn.Parameter(torch.randn(d_position))
        self.key = nn.Linear(d_position, d_key, bias=False)
        self.embed = nn.Embedding(observations, d_value)
        self.log_beta = nn.Parameter(torch.zeros(()))
        self.readout = nn.Sequential(nn.Linear(d_value, hidden), nn.ReLU(),
                                     nn.Linear(hidden, observations))

    @property
    def config(self) -> dict:
        return {"observations": self.observations, "actions": self.actions,
                "d_position": self.d_position, "d_key": self.d_key, "d_value": self.d_value,
                "hidden": self.hidden, "memory": self.memory,
                "path_integration": self.path_integration}

    @property
    def signature(self) -> Signature:
        m = self.memory
        start = unit_rms(self.start.detach().cpu()).tolist()
        return Signature(
            (InputSpec("observation", (1,), "int64", "observation",
                       range=(0, self.observations)),
             InputSpec("action", (1,), "int64", "action", range=(0, self.actions))),
            (OutputSpec("next_observation", (self.observations,), "class_scores",
                        labels=tuple(self.annotations.get("labels") or ())),),
            (StateSpec("position", (self.d_position,), reset=tuple(start)),
             StateSpec("keys", (self.d_key, m)), StateSpec("values", (m, self.d_value)),
             StateSpec("filled", (m,))))

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """The reset state, its position the learnt start (with its gradient, for training)."""
        _, *memory = super().init_state(batch)
        return (unit_rms(self.start).expand(batch, -1), *memory)

    # -- pieces ------------------------------------------------------------------------------
    def move(self, e: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``e`` ``[B, d]`` after actions ``[B, 1]``."""
        # index_select, not transition[action]: the indexing's gradient accumulates in an
        # order that varies from run to run on 2 threads (the same seed gave another model,
        # 0.979 and 0.982 zero-shot); index_select's sums in a fixed order
        w = torch.index_select(self.transition, 0, action[:, 0] if self.path_integration else
                               torch.zeros_like(action[:, 0]))
        return unit_rms((e[:, None] @ w)[:, 0])

    def address(self, e: torch.Tensor) -> torch.Tensor:
        """Key (and query) of positions ``[..., d]``."""
        return self.key(nn.functional.layer_norm(e, e.shape[-1:]))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_beta.exp() / math.sqrt(self.d_key)

    def step(self, observation, action, e, keys, values, filled):
        b = e.shape[0]
        keys = torch.cat([keys[..., 1:], self.address(e)[..., None]], dim=-1)
        values = torch.cat([values[:, 1:], self.embed(observation)], dim=1)
        filled = torch.cat([filled[:, 1:], torch.ones_like(filled[:, :1])], dim=1)
        e = self.move(e, action)
        q = self.address(e).view(b, 1, 1, self.d_key)
        y = attend(q, keys[:, None], values[:, None], self.scale, 0.0, filled[:, None, None])
        return (self.readout(y.view(b, self.d_value)), e, keys, values, filled)

    def sequence(self, observation, action, e, keys, values, filled):
        """T steps at once: the positions by the recurrence (a loop: each needs the last),
        then every query over the memory and the new keys in one masked attention per
        ``BLOCK`` queries."""
        ys = []
        for lo in range(0, observation.shape[1], self.BLOCK):
            y, e, keys, values, filled = self._block(
                observation[:, lo:lo + self.BLOCK], action[:, lo:lo + self.BLOCK], e, keys,
                values, filled)
            ys.append(y)
        return (torch.cat(ys, dim=1), e, keys, values, filled)

    @torch.no_grad()
    def wandered(self, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The reset state with its position moved by ``action`` ``[B, T, 1]`` (no gradient):
        a new environment entered with the code a long stream leaves, to train from."""
        e, *memory = self.init_state(action.shape[0])
        for i in range(action.shape[1]):
            e = self.move(e, action[:, i])
        return (e, *memory)

    def _block(self, observation, action, e, keys, values, filled):
        t, m = observation.shape[1], self.memory
        here = [e]
        for i in range(t):
            here.append(self.move(here[-1], action[:, i]))
        pos = torch.stack(here, dim=1)  # [B, T + 1, d]: where each sample is seen, then next
        keys = torch.cat([keys, self.address(pos[:, :-1]).transpose(1, 2)], dim=-1)
        values = torch.cat([values, self.embed(observation[..., 0])], dim=1)
        filled = torch.cat([filled, torch.ones_like(filled[:, :1]).expand(-1, t)], dim=1)
        # slot j of the m cached and t new ones; query i reads after writing slot m + i and
        # holds the m latest: m + i - j in [0, m)
        age = (torch.arange(t, device=e.device)[:, None] + m
               - torch.arange(m + t, device=e.device)[None, :])
        visible = ((age >= 0) & (age < m)).to(e.dtype) * filled[:, None]  # [B, T, m + t]
        q = self.address(pos[:, 1:])[:, None]  # [B, 1, T, d_key]
        y = attend(q, keys[:, None], values[:, None], self.scale, 0.0, visible[:, None])
        out = self.readout(y[:, 0])
        return (out, pos[:, -1], keys[..., t:], values[:, t:], filled[:, t:])


__all__ = ["TEMTransformer"]
