"""The grid world task of TEM and TEM-t: random walks on 2-D grids whose places show random
observations, a fresh assignment per environment (``jbakermans/torch_tem``'s ``world.py``:
4-connected, not periodic, 5 actions, 45 observations, a random policy that repeats its last
action twice as often).

At step ``t`` the agent stands at place ``p_t``, sees ``x_t``, takes action ``a_t`` and
arrives at ``p_{t+1}``: a model is given ``(x_t, a_t)`` and predicts ``x_{t+1}``. A step is

- *visited* when ``p_{t+1}`` was seen before in the walk (only then can it be known), and
- *zero-shot* when it is visited and reached by a move (not "stay") never taken from ``p_t``
  before in the walk: knowing it needs the structure of space (N + E + S + W = 0), not a
  remembered transition. The "node agent" (remembers each place) is right on every such
  step; the "edge agent" (remembers each transition) is at chance, 1/45.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from wavedge.errors import InputError, query_params
from wavedge.models import build_model
from wavedge.models.checkpoint import save_checkpoint
from wavedge.models.tasks import Task
from wavedge.models.train import _fit, device_name, seed_everything
from wavedge.resets import ResetPolicy

ACTIONS = ("stay", "north", "east", "south", "west")
MOVES = ((0, 0), (0, -1), (1, 0), (0, 1), (-1, 0))  # (dx, dy) per action, y down
HELD_OUT_SEED = 10_000  # the test walks' seed; training draws from the recipe's (below it)


@dataclass(frozen=True)
class Grid:
    width: int = 5
    height: int = 5
    observations: int = 45
    repeat_bias: float = 2.0  # the last action's weight in the random policy (others 1)

    def __post_init__(self) -> None:
        if min(self.width, self.height) < 1 or self.places < 2 or self.observations < 2 \
                or not self.repeat_bias > 0:
            raise InputError(f"a grid needs a width and height of 1 or more, 2 places or more, 2 "
                             f"observations or more and a repeat_bias above 0; got "
                             f"{self.width}x{self.height}, {self.observations} observations, "
                             f"repeat_bias {self.repeat_bias}")

    @classmethod
    def named(cls, task: str) -> "Grid":
        """The grid ``task`` names: ``grid_walks``, the 5x5 default, or with options
        ``grid_walks?width=W&height=H&observations=N&repeat_bias=B`` (any of them)."""
        given = query_params(task.partition("?")[2], f"task {task!r}")
        kinds = {"width": int, "height": int, "observations": int, "repeat_bias": float}
        unknown = sorted(set(given) - set(kinds))
        if unknown:
            raise InputError(f"task {task!r}: no option {', '.join(unknown)}; a grid takes "
                             f"{', '.join(kinds)}")
        try:
            values = {k: kinds[k](v) for k, v in given.items()}
        except ValueError:
            raise InputError(f"task {task!r}: width, height and observations are whole "
                             "numbers, repeat_bias a number") from None
        try:
            return cls(**values)
        except InputError as exc:
            raise InputError(f"task {task!r}: {exc}") from None

    @property
    def places(self) -> int:
        return self.width * self.height

    def neighbours(self) -> np.ndarray:
        """``[places, actions]``: the place each action leads to, -1 where a wall is."""
        out = np.full((self.places, len(ACTIONS)), -1, np.int64)
        for p in range(self.places):
            x, y = p % self.width, p // self.width
            for a, (dx, dy) in enumerate(MOVES):
                if 0 <= x + dx < self.width and 0 <= y + dy < self.height:
                    out[p, a] = (y + dy) * self.width + x + dx
        return out


@dataclass
class Walks:
    """``B`` walks of ``T`` steps: inputs ``observation`` and ``action`` ``[B, T]``, the
    ``target`` ``[B, T]`` (the next observation), the ``visited`` and ``zero_shot`` masks
    ``[B, T]``, and the ``place`` of each step and the last ``[B, T + 1]``."""

    observation: np.ndarray
    action: np.ndarray
    target: np.ndarray
    visited: np.ndarray
    zero_shot: np.ndarray
    place: np.ndarray

    def inputs(self, where="cpu", lo: int = 0, hi: int | None = None) -> tuple:
        """The model's inputs over steps ``lo:hi``: ``(observation, action)`` as tensors
        ``[B, T, 1]`` on ``where``."""
        return tuple(torch.from_numpy(a[:, lo:hi, None]).to(where)
                     for a in (self.observation, self.action))

    def recording(self, i: int) -> dict:
        """Walk ``i`` as a recording, ``{input name: [T, 1]}``."""
        return {"observation": self.observation[i, :, None],
                "action": self.action[i, :, None]}


def walks(grid: Grid, batch: int, steps: int, rng: np.random.Generator) -> Walks:
    """``batch`` walks of ``steps`` steps, each in a fresh environment (its own random
    observation per place) from a random start."""
    world = rng.integers(0, grid.observations, (batch, grid.places))
    place, action = moves(grid, batch, steps, rng)
    seen = _seen_before(place, grid.places)
    taken = _seen_before(place[:, :-1] * len(ACTIONS) + action, grid.places * len(ACTIONS))
    obs = world[np.arange(batch)[:, None], place]
    visited = seen[:, 1:]
    return Walks(obs[:, :-1], action, obs[:, 1:], visited,
                 visited & ~taken & (action != ACTIONS.index("stay")), place)


def moves(grid: Grid, batch: int, steps: int, rng: np.random.Generator) -> tuple:
    """The random policy's ``batch`` walks from random starts: each step's place and the
    last's ``[B, T + 1]``, the actions ``[B, T]``."""
    nb = grid.neighbours()
    place = np.empty((batch, steps + 1), np.int64)
    action = np.empty((batch, steps), np.int64)
    place[:, 0] = rng.integers(0, grid.places, batch)
    last = rng.integers(0, len(ACTIONS), batch)
    for t in range(steps):
        ok = nb[place[:, t]] >= 0
        weight = ok * (1.0 + (grid.repeat_bias - 1.0) * (np.arange(len(ACTIONS)) == last[:, None]))
        cum = np.cumsum(weight, axis=1)
        a = (cum < rng.random(batch)[:, None] * cum[:, -1:]).sum(axis=1)
        action[:, t], last = a, a
        place[:, t + 1] = nb[place[:, t], a]
    return place, action


def _seen_before(ids: np.ndarray, n: int) -> np.ndarray:
    """``[B, T]``: whether ``ids[b, t]`` occurred at an earlier ``t`` of row ``b``."""
    out = np.zeros(ids.shape, bool)
    seen = np.zeros((ids.shape[0], n), bool)
    rows = np.arange(ids.shape[0])
    for t in range(ids.shape[1]):
        out[:, t] = seen[rows, ids[:, t]]
        seen[rows, ids[:, t]] = True
    return out


@dataclass
class WalksTask(Task):
    """Walks in fresh environments as an export task: the metric is the accuracy of the
    next observation on the visited steps, each walk from reset (a new environment)."""

    output: str = "next_observation"
    masks: list = field(default_factory=list)  # per walk, the steps that count

    def labels(self, i: int) -> list:
        """Each step's next observation (a recording's ``label``: the truth to score by),
        None where unknown (a logged walk's last step)."""
        return [int(t) if t >= 0 else None for t in self.targets[i]]

    def score(self, outputs) -> float:
        hits = [np.argmax(o[self.output], axis=-1)[m] == t[m]
                for o, t, m in zip(outputs, self.targets, self.masks)]
        return float(np.concatenate(hits).mean())


def task(meta: dict, walks_held: int = 8, steps: int = 400) -> WalksTask:
    """The task a checkpoint trained on walks names (its grid from ``meta``): held-out walks
    in environments training never drew (another seed's), more to calibrate."""
    grid = Grid(**meta.get("grid", {}))
    held = walks(grid, walks_held, steps, np.random.default_rng(HELD_OUT_SEED))
    calib = walks(grid, walks_held, steps, np.random.default_rng(HELD_OUT_SEED + 1))
    return WalksTask(
        name="grid_walks", description=f"{walks_held} walks of {steps} steps on a "
        f"{grid.width}x{grid.height} grid, each in a fresh environment (seed {HELD_OUT_SEED})",
        held_out=[held.recording(i) for i in range(walks_held)],
        calibration=[calib.recording(i) for i in range(walks_held)],
        calibration_description=f"{walks_held} more walks (seed {HELD_OUT_SEED + 1})",
        metric="accuracy of the next observation on steps into places visited before, "
               "each walk from reset", targets=list(held.target), masks=list(held.visited))


def data_task(spec: str, signature, held_out_keys: list | None = None) -> Task:
    """A user's logged walks to check a grid-trained model against
    (``wavedge.models.walk_logs``)."""
    from wavedge.models.walk_logs import data_task as logged

    return logged(spec, signature, held_out_keys)


BATCHES_PER_EPOCH = 50  # an "epoch" of generated walks: 50 batches, each of fresh ones
TEST_WALKS = 64  # the metrics at the end of training: this many walks of ``TEST_STEPS``
TEST_STEPS = 400
WANDER = 2000  # the most moves a batch's start may have wandered (train's draw)


def train(recipe, out, progress: bool, where, data=None, on_epoch=None) -> tuple:
    """``wavedge train --task grid_walks``: ``recipe.epochs`` of ``BATCHES_PER_EPOCH`` batches
    of ``recipe.batch_size`` fresh walks of ``recipe.window`` steps (drawn from the recipe's
    seed), every other batch from a position code a long walk has moved (``wander``), the loss
    on the visited steps; then the metrics on walks in environments training never drew.
    ``on_epoch(model, epochs done)``: called after each epoch. Returns (model, meta) as
    ``wavedge.models.train.train`` does."""
    grid = Grid.named(recipe.task)
    if data is not None:  # the user's walks train by wavedge.models.walk_logs
        raise InputError("grid_walks generates its walks; it takes no data")
    _check(recipe, grid)
    seed_everything(recipe.seed)
    model = build_model(recipe.arch, observations=grid.observations, actions=len(ACTIONS),
                        **recipe.model).to(where)
    rng = np.random.default_rng(recipe.seed)
    steps = recipe.window or 200

    def draw(_gen):
        start = wander(model, rng, lambda n: moves(grid, recipe.batch_size, n, rng)[1], where)
        w = walks(grid, recipe.batch_size, steps, rng)
        return (w.inputs(where), torch.from_numpy(w.target).to(where),
                torch.from_numpy(w.visited).to(where), start)

    seconds = fit_walks(model, recipe, draw, f"grid_walks/{recipe.arch}", progress, on_epoch)
    model.eval().cpu()
    scores = evaluate(model, grid, TEST_WALKS, TEST_STEPS)
    return trained_on_walks(
        model, recipe, where, out, task="grid_walks", grid=asdict(grid),
        dataset=f"random walks on a {grid.width}x{grid.height} grid, a fresh random "
                f"observation (of {grid.observations}) per place per environment",
        sample_rate_hz=None, sequence_length=steps, data=None,
        metrics={"test_accuracy": scores["visited"], "zero_shot_accuracy":
                 scores["zero_shot"], "zero_shot_steps": scores["zero_shot_steps"],
                 "metric": f"accuracy of the next observation on steps into places visited "
                           f"before, {TEST_WALKS} walks of {TEST_STEPS} steps in fresh "
                           "environments, each from reset",
                 "n_test": TEST_WALKS, "train_seconds": seconds},
        summary=f"{scores['visited']:.3f} of next observations right on visited steps, "
                f"{scores['zero_shot']:.3f} on zero-shot steps (chance "
                f"{1 / grid.observations:.3f}; {TEST_WALKS} walks in fresh environments)")


def wander(model, rng: np.random.Generator, actions, where):
    """A training batch's start: on every other batch (at random) the reset state with its
    code moved by ``actions(n)`` ``[B, n]``, ``n`` up to ``WANDER`` (memory empty, no
    gradient), else None (reset). Trained from reset alone, the code drifts on a long stream
    until places alias (docs/tem.md: 0.93 falls to 0.79 over 20,000 steps)."""
    n = int(rng.integers(1, WANDER + 1)) if rng.random() < 0.5 else 0
    return model.wandered(torch.from_numpy(actions(n)[..., None]).to(where)) if n else None


def fit_walks(model, recipe, draw, desc: str, progress: bool, on_epoch=None) -> float:
    """``recipe.epochs`` of ``BATCHES_PER_EPOCH`` batches ``draw(gen)`` returns
    (``wavedge.models.train._fit``), ``on_epoch(model, epochs done)`` after each; returns the
    seconds it took."""
    started = time.perf_counter()
    _fit(model, recipe, draw, torch.Generator().manual_seed(recipe.seed), recipe.epochs,
         recipe.lr, progress, desc, BATCHES_PER_EPOCH,
         on_epoch and (lambda n: on_epoch(model, n)))
    return round(time.perf_counter() - started, 1)


def trained_on_walks(model, recipe, where, out, **fields) -> tuple:
    """``(model, meta)`` of a model trained on walks, its checkpoint written to ``out`` when
    given: the meta's ``fields`` (the task, data and metrics) and what every such model
    shares: ids in, no channels or normalisation, a reset at each walk (a new
    environment)."""
    meta = {"labels": [], "channels": [], "normalisation": None,
            "reset": ResetPolicy(recording=True).to_json(), "recipe": asdict(recipe),
            "torch_version": torch.__version__, "device": device_name(where), **fields}
    meta["metrics"] = {**fields["metrics"], "n_parameters": model.n_parameters()}
    if out is not None:
        save_checkpoint(out, model, meta)
    return model, meta


def check_walk_recipe(recipe, what: str) -> None:
    """``InputError`` for a setting walks from reset in float would ignore, or a window too
    short to train on, before training."""
    ignored = [flag for flag, on in (("--reset never", recipe.stream_segments != 1),
                                     ("--quant-aware-epochs", recipe.quant_aware_epochs > 0),
                                     ("input noise", recipe.input_noise > 0)) if on]
    if ignored:  # each would have been ignored without a word
        raise InputError(f"{what}: trains each walk from reset (a new environment) in "
                         f"float; it takes no {', '.join(ignored)}")
    if recipe.window is not None and recipe.window < 2:
        raise InputError(f"{what}: --window (steps per training walk) must be at least 2, "
                         f"got {recipe.window}")


def _check(recipe, grid: Grid) -> None:
    """``InputError`` for a setting the walks would ignore or cannot take, before training."""
    check_walk_recipe(recipe, "grid_walks")
    fixed = sorted({"observations", "actions"} & set(recipe.model))
    if fixed:  # had been a TypeError (the keyword given twice)
        raise InputError(f"grid_walks: {', '.join(fixed)} come from the grid world "
                         f"({grid.observations} observations, {len(ACTIONS)} actions), not "
                         "--config")
    if recipe.relabel:  # every walk is drawn in a new environment already
        raise InputError("grid_walks: draws a new environment for every walk; relabel is for "
                         "logged walks")
    if recipe.seed >= HELD_OUT_SEED:  # its walks would be the test walks' environments
        raise InputError(f"grid_walks: --seed must be below {HELD_OUT_SEED} (the seeds from "
                         f"{HELD_OUT_SEED} draw the held-out walks), got {recipe.seed}")


def evaluate(model, grid: Grid, n: int, steps: int, seed: int = HELD_OUT_SEED) -> dict:
    """The model's accuracy on the visited and the zero-shot steps of ``n`` walks in fresh
    environments, each from reset."""
    w = walks(grid, n, steps, np.random.default_rng(seed))
    where = next(model.parameters()).device
    with torch.inference_mode():
        y = model.scores(*w.inputs(where))
    hit = y.argmax(-1).cpu().numpy() == w.target
    return {"visited": float(hit[w.visited].mean()), "zero_shot": float(hit[w.zero_shot].mean()),
            "zero_shot_steps": int(w.zero_shot.sum())}


__all__ = ["ACTIONS", "Grid", "HELD_OUT_SEED", "Walks", "WalksTask", "task", "walks"]
