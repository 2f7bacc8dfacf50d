"""A user's own walks as TEM-t's data (``wavedge train --arch tem_t --data walks.csv``): the
table ``wavedge run`` replays, one row per step, each walk a new environment.

- ``observation`` and ``action``: whole-number ids (0 or more); the model's ranges are the
  largest of each plus one, unless ``--config`` gives ``observations`` or ``actions``.
- ``sequence`` (or ``session``, ``recording``, ``?sequence=COLUMN``): one walk per value; a
  table without one is one walk.
- ``label`` (optional): the next observation, as ``wavedge export --recording`` writes it;
  without it a step's target is the next row's observation, and a walk's last step, whose
  next observation nobody saw, is not trained on. A blank label is unknown.
- ``place`` (optional): the id of the place each step stands at. With it, the loss and the
  metric count the steps into a place visited before in the walk (the grid world's
  "visited" steps: only those can be known); without it, the steps whose next observation
  the walk has shown before, which a memory of the walk can know (the same steps and a few
  first visits whose observation repeats one seen elsewhere).

The walks are split, seeded, into those trained on and those held out (``--validation``);
training draws windows of ``Recipe.window`` steps from the training walks, each from reset
with its observation ids permuted at random (``Recipe.relabel``: a new environment each, as
the grid world draws them), every other batch from a position code moved by the logged
actions (the grid world's wandered starts, ``gridworld.wander``). Export checks against the
held-out walks, each from reset, and calibrates on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wavedge.errors import InputError
from wavedge.models import build_model
from wavedge.models.gridworld import (WalksTask, check_walk_recipe, fit_walks,
                                      trained_on_walks, wander)
from wavedge.models.train import seed_everything

COLUMNS = ("observation", "action", "place")  # a walk's channels; place is optional
MAX_ID = 2 ** 24  # ids are read as float32, exact below this
DEFAULT_WINDOW = 200  # steps per training window (the grid world's walks)
TRIES = 100  # batches drawn in a row without a counted step before a window is too short


@dataclass
class Walk:
    """One logged walk: ``observation``, ``action`` and ``target`` (the next observation, -1
    where unknown) ``[T]``, and the ``place`` of each step ``[T]`` when the table has one."""

    key: object
    observation: np.ndarray
    action: np.ndarray
    target: np.ndarray
    place: np.ndarray | None

    def __len__(self) -> int:
        return len(self.observation)

    def recording(self) -> dict:
        """The walk as a recording, ``{input name: [T, 1]}``."""
        return {"observation": self.observation[:, None], "action": self.action[:, None]}

    def counted(self) -> np.ndarray:
        """``[T]``: the steps that count (``counted``) of the whole walk, from reset."""
        return walk_arrays([self], [(0, len(self))], len(self))[3][0]


@dataclass
class LoggedWalks:
    """A table's walks, those held out (indices into ``walks``), the id ranges they need, and
    where they came from (``source``: the table, its sha256, the held-out walks' keys)."""

    name: str
    walks: list[Walk]
    held: list[int]
    observations: int
    actions: int
    places: bool
    rate_hz: float | None
    description: str
    source: dict

    @property
    def training(self) -> list[Walk]:
        held = set(self.held)
        return [w for i, w in enumerate(self.walks) if i not in held]

    @property
    def held_out(self) -> list[Walk]:
        return [self.walks[i] for i in self.held]


def read_walks(spec: str, what: str = "walks") -> tuple:
    """The table ``spec`` (``FILE?column keys``) as ``(Table, [Walk])``; ``InputError`` in
    one line for a missing column, a column that is not a walk's, or an id that is not a
    whole number of 0 or more (named by its walk and step)."""
    from wavedge.recordings import load_table

    table = load_table(spec, None, what)
    names = table.channels
    missing = [c for c in COLUMNS[:2] if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    if missing or extra:
        problem = f"no column {missing[0]!r}" if missing else \
            f"column(s) {', '.join(map(repr, extra))} are not a walk's"
        raise InputError(f"{what}: {table.path}: {problem}: a walk's rows hold observation and "
                         "action ids and optionally the place's id, beside sequence, time and "
                         "label (the next observation); name them with "
                         "?columns=observation:COLUMN,action:COLUMN")
    cols = {c: names.index(c) for c in COLUMNS if c in names}
    walks = []
    for rec in table.recordings:
        ids = {c: _ids(rec.x[:, i], c, rec.key, table.path, what) for c, i in cols.items()}
        target = _targets(rec, ids["observation"], table.path, what)
        walks.append(Walk(rec.key, ids["observation"], ids["action"], target, ids.get("place")))
    return table, walks


def _ids(values: np.ndarray, column: str, key, path, what: str) -> np.ndarray:
    bad = np.flatnonzero(~((values >= 0) & (values < MAX_ID) & (values == np.round(values))))
    if len(bad):
        raise InputError(f"{what}: {path}, {_step(key, bad[0])}: {column} "
                         f"{values[bad[0]]:g} is not an id (a whole number from 0 to "
                         f"{MAX_ID - 1})")
    return values.astype(np.int64)


def _targets(rec, observation: np.ndarray, path, what: str) -> np.ndarray:
    """Each step's next observation: the label column's (blank: unknown), else the next
    row's (the last step's unknown); -1 where unknown."""
    if all(t is None for t in rec.truth):
        return np.append(observation[1:], -1)
    target = np.full(len(rec.truth), -1, np.int64)
    for i, label in enumerate((t or "").strip() for t in rec.truth):
        if label and not (label.isascii() and label.isdigit()):  # blank: unknown
            raise InputError(f"{what}: {path}, {_step(rec.key, i)}: label {label!r} is not "
                             "an observation id (a step's label is the observation it leads "
                             "to, a whole number of 0 or more)")
        if label:
            target[i] = int(label)
    return target


def counted(observation: np.ndarray, target: np.ndarray,
            place: np.ndarray | None = None) -> np.ndarray:
    """``[B, T]``: the steps a memory of the walk so far can know, of walks ``[B, T]``: the
    target known and, with places (each step's and the next, ``[B, T + 1]``, -1 unknown), the
    next place stood at before; else the target observation seen before, at this step or an
    earlier one. Places give the grid world's ``visited`` steps exactly."""
    b, t = observation.shape
    ids, look = (observation, target) if place is None else (place[:, :-1], place[:, 1:])
    # ids made dense first: a log's place ids may be large (a table of [B, largest id])
    uniq, dense = np.unique(np.concatenate([ids, look], axis=1), return_inverse=True)
    dense = dense.reshape(b, -1)
    when = np.broadcast_to(np.arange(t), (b, t))
    rows = np.broadcast_to(np.arange(b)[:, None], (b, t))
    first = np.full((b, len(uniq)), t, np.int64)  # the first step each id is stood at
    np.minimum.at(first, (rows, dense[:, :t]), when)
    return (first[rows, dense[:, t:]] <= when) & (target >= 0) & (look >= 0)


def walk_arrays(walks: list[Walk], spans: list[tuple[int, int]], width: int) -> tuple:
    """Steps ``[lo, hi)`` of each walk, padded to ``width`` (a padded step's target unknown):
    ``(observation, action, target, counted)`` ``[B, width]``."""
    b = len(walks)
    obs, act = np.zeros((b, width), np.int64), np.zeros((b, width), np.int64)
    tgt = np.full((b, width), -1, np.int64)
    place = None if walks[0].place is None else np.full((b, width + 1), -1, np.int64)
    for i, (w, (lo, hi)) in enumerate(zip(walks, spans)):
        obs[i, :hi - lo], act[i, :hi - lo] = w.observation[lo:hi], w.action[lo:hi]
        tgt[i, :hi - lo] = w.target[lo:hi]
        if place is not None:
            ahead = w.place[lo:hi + 1]  # and the place the last step leads to, if logged
            place[i, :len(ahead)] = ahead
    return obs, act, tgt, counted(obs, tgt, place)


def logged_walks(spec: str, validation: float = 0.25, seed: int = 0) -> LoggedWalks:
    """The user's walks (``read_walks``) with a seeded ``validation`` fraction of them held
    out (at least one, and one left to train on)."""
    from wavedge.recordings import table_digest

    if not 0 < validation < 1:
        raise InputError(f"validation fraction must be in (0, 1), got {validation}")
    table, walks = read_walks(spec, "training data")
    if len(walks) < 2:
        raise InputError(f"training data: {table.path}: one walk only; give two or more (a "
                         "sequence column splits them), some to train on and one or more to "
                         "hold out")
    k = min(len(walks) - 1, max(1, round(validation * len(walks))))
    held = sorted(np.random.default_rng(seed).permutation(len(walks))[:k].tolist())
    if not counted_steps([walks[i] for i in held]) or not counted_steps(
            [w for i, w in enumerate(walks) if i not in held]):
        raise InputError(f"training data: {table.path}: no step a memory of the walk could "
                         "know (into a place, or to an observation, seen before in it) in the "
                         "walks held out or in those left; log longer walks")
    lengths = sorted(len(w) for w in walks)
    places = walks[0].place is not None
    data = LoggedWalks(
        name=table.path.stem, walks=walks, held=held,
        observations=int(max(max(w.observation.max(), w.target.max()) for w in walks)) + 1,
        actions=int(max(w.action.max() for w in walks)) + 1, places=places,
        rate_hz=table.rate_hz, description="", source={
            "spec": str(spec).replace(str(table.path), str(table.path.resolve()), 1),
            "sha256": table_digest(table.path), "validation": [str(walks[i].key) for i in held]})
    data.description = (f"{table.path.name}: {len(walks)} walks of {lengths[0]}-{lengths[-1]} "
                        f"steps, {data.observations} observation ids, {data.actions} action "
                        f"ids{', with places' if places else ''}; {k} held out (seed {seed})")
    return data


def counted_steps(walks: list[Walk]) -> int:
    """How many steps of ``walks`` (each whole, from reset) count (``counted``)."""
    return sum(int(w.counted().sum()) for w in walks)


def train(recipe, out, progress: bool, where, data: LoggedWalks | None = None,
          on_epoch=None) -> tuple:
    """``wavedge train --arch tem_t --data FILE``: ``recipe.epochs`` of ``BATCHES_PER_EPOCH``
    batches of ``recipe.batch_size`` windows of the training walks (``sample``, ``relabel``),
    every other from a code the logged actions have moved (``wander``), the loss on the
    counted steps; then the accuracy on the held-out walks, each whole from reset. Returns
    (model, meta) as ``wavedge.models.train.train`` does."""
    if data is None:
        raise InputError("walks: trains on your logged walks; give --data FILE (rows of "
                         "observation and action ids, a sequence column splitting walks)")
    check_walk_recipe(recipe, "tem_t on walks")
    sizes = _sizes(recipe, data)
    seed_everything(recipe.seed)
    model = build_model(recipe.arch, **{**recipe.model, **sizes}).to(where)
    rng = np.random.default_rng(recipe.seed)
    train_walks = data.training
    width = _width(recipe, train_walks)
    pool = np.concatenate([w.action for w in train_walks])

    def actions(n):  # n of the logged actions from a random step on, for each of the batch
        at = rng.integers(0, len(pool), recipe.batch_size)[:, None] + np.arange(n)
        return np.take(pool, at, mode="wrap")

    def draw(_gen):
        start = wander(model, rng, actions, where)
        obs, act, tgt, mask = sample(train_walks, recipe.batch_size, width, rng)
        if recipe.relabel:
            obs, tgt = relabel(obs, tgt, model.observations, rng)
        x = tuple(torch.from_numpy(a[..., None]).to(where) for a in (obs, act))
        return x, torch.from_numpy(tgt).to(where), torch.from_numpy(mask).to(where), start

    seconds = fit_walks(model, recipe, draw, f"{data.name}/{recipe.arch}", progress, on_epoch)
    model.eval().cpu()
    test, trained = (accuracy(model, ws) for ws in (data.held_out, train_walks))
    steps = "steps into places visited before" if data.places else \
        "steps whose next observation the walk had shown before"
    return trained_on_walks(
        model, recipe, where, out, task="walks", dataset=data.description,
        sample_rate_hz=data.rate_hz, sequence_length=width, data=data.source,
        metrics={"test_accuracy": test["accuracy"], "train_accuracy": trained["accuracy"],
                 "counted_steps": test["steps"],
                 "metric": f"accuracy of the next observation on {steps}, "
                           f"{len(data.held)} held-out walks, each from reset",
                 "n_test": len(data.held), "n_train": len(train_walks),
                 "train_seconds": seconds},
        summary=f"{test['accuracy']:.3f} of next observations right on the {test['steps']} "
                f"counted steps of {len(data.held)} held-out walks ({steps}; chance "
                f"{1 / model.observations:.3f}), train {trained['accuracy']:.3f}")


def _width(recipe, walks: list[Walk]) -> int:
    """Steps per training window: ``--window``, else ``DEFAULT_WINDOW`` or the longest walk
    if shorter (a window past every walk's end would be padding only)."""
    longest = max(len(w) for w in walks)
    if recipe.window is not None and recipe.window > longest:
        raise InputError(f"tem_t on walks: --window {recipe.window} is longer than the longest "
                         f"training walk ({longest} steps)")
    return recipe.window or min(DEFAULT_WINDOW, longest)


def _sizes(recipe, data: LoggedWalks) -> dict:
    """The model's id ranges: the data's, or ``--config``'s when they hold every logged id."""
    sizes = {"observations": data.observations, "actions": data.actions}
    for name, need in sizes.items():
        given = recipe.model.get(name, need)
        if not isinstance(given, int) or given < need:
            raise InputError(f"tem_t on walks: --config {name} {given!r}: the walks hold ids up "
                             f"to {need - 1}, so it must be a whole number of {need} or more")
        sizes[name] = given
    return sizes


def sample(walks: list[Walk], batch: int, width: int, rng: np.random.Generator) -> tuple:
    """``batch`` windows of ``width`` steps (``walk_arrays``), each from a walk drawn in
    proportion to its length (every step equally likely) at a random step; drawn again
    until some step counts (a batch of none has no loss)."""
    p = np.array([len(w) for w in walks], np.float64)
    for _ in range(TRIES):
        picked = rng.choice(len(walks), batch, p=p / p.sum())
        lo = [int(rng.integers(0, max(1, len(walks[i]) - width + 1))) for i in picked]
        out = walk_arrays([walks[i] for i in picked],
                          [(a, min(a + width, len(walks[i]))) for a, i in zip(lo, picked)],
                          width)
        if out[3].any():
            return out
    raise InputError(f"tem_t on walks: {TRIES} batches of windows of {width} steps held no step "
                     "a memory of the window could know (a revisit within it); give a longer "
                     "--window")


def relabel(observation: np.ndarray, target: np.ndarray, n: int,
            rng: np.random.Generator) -> tuple:
    """Windows ``[B, T]`` with each row's observation ids (of ``n``) permuted at random, the
    same permutation for its targets (-1, unknown, kept): each window a new environment of
    the same structure, as the grid world draws for every walk."""
    rows = np.arange(len(observation))[:, None]
    perm = rng.permuted(np.tile(np.arange(n), (len(observation), 1)), axis=1)
    return perm[rows, observation], np.where(target >= 0, perm[rows, target], -1)


def accuracy(model, walks: list[Walk], batch: int = 32) -> dict:
    """The model's accuracy on the counted steps of ``walks``, each whole from reset, in
    batches of walks of like length (padded: a padded step comes after every real one and
    changes none)."""
    hits = steps = 0
    ordered = sorted(walks, key=len)
    for lo in range(0, len(ordered), batch):
        part = ordered[lo:lo + batch]
        obs, act, tgt, mask = walk_arrays(part, [(0, len(w)) for w in part], len(part[-1]))
        with torch.inference_mode():
            y = model.scores(*(torch.from_numpy(a[..., None]) for a in (obs, act)))
        hits += int((y.argmax(-1).numpy() == tgt)[mask].sum())
        steps += int(mask.sum())
    return {"accuracy": hits / steps if steps else float("nan"), "steps": steps}


def walks_task(name: str, held: list[Walk], calibration: list[Walk], description: str,
               calibration_description: str) -> WalksTask:
    """Walks as an export task: the held-out ones streamed each from reset, scored on their
    counted steps; the others calibrate."""
    return WalksTask(name=name, description=description,
                     held_out=[w.recording() for w in held],
                     calibration=[w.recording() for w in calibration],
                     calibration_description=calibration_description,
                     metric="accuracy of the next observation on the steps a memory of the "
                            "walk can know, each walk from reset",
                     targets=[w.target for w in held], masks=[w.counted() for w in held])


def task(meta: dict) -> WalksTask:
    """The task a checkpoint trained on logged walks names: its held-out walks, the rest to
    calibrate (``meta["data"]``; export has checked the table is unchanged)."""
    return data_task(meta["data"]["spec"], None, meta["data"]["validation"])


def data_task(spec: str, signature, held_out_keys: list | None = None) -> WalksTask:
    """The walks of table ``spec`` as an export task (``wavedge export --data``): those
    ``held_out_keys`` names held out and the rest calibrating, default all of them for both;
    ``InputError`` for an id beyond ``signature``'s ranges."""
    table, walks = read_walks(spec, "walks")
    if signature is not None:
        for w in walks:
            for spec_in in signature.inputs:
                _in_range(getattr(w, spec_in.name), spec_in, w.key, table.path)
    keys = set(held_out_keys) if held_out_keys is not None else None
    held = [w for w in walks if keys is None or str(w.key) in keys]
    rest = [w for w in walks if keys is None or str(w.key) not in keys] or held
    return walks_task(table.path.stem, held, rest,
                      f"{table.path.name}: {len(held)} walk(s)"
                      + (" held out" if keys is not None else ""),
                      f"{table.path.name}: {len(rest)} walk(s)"
                      + (" not held out" if rest is not held else ""))


def _in_range(ids: np.ndarray, spec, key, path) -> None:
    low, high = spec.range
    bad = np.flatnonzero((ids < low) | (ids >= high))
    if len(bad):
        raise InputError(f"walks: {path}, {_step(key, bad[0])}: {spec.name} {ids[bad[0]]} is "
                         f"beyond the model's range [{low}, {high})")


def _step(key, i: int) -> str:
    """Where step ``i`` (from 0) of walk ``key`` is, as a message names it."""
    return f"walk {key}, step {i + 1}" if key is not None else f"step {i + 1}"
