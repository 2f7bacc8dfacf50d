"""Datasets: those that ship inside installed packages (no downloads), as ``[N, T, D]`` arrays,
and the user's own recordings (``recordings_dataset``), of any lengths, as lists of ``[T, D]``.

- ``basic_motions``: sktime's BasicMotions, 3-axis accelerometer + 3-axis gyroscope from a smart
  watch, 6 channels x 100 samples at 10 Hz, 4 activities, 40 train / 40 test recordings.
- ``digits``: scikit-learn's 8x8 digits read as a sequence, one pixel per step (64 steps, one
  channel), the small cousin of sequential MNIST; a stratified 75/25 split with a fixed seed.
- ``digit_rows``: the same digits a row at a time (8 steps of 8 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wavedge.errors import InputError


@dataclass(frozen=True)
class Dataset:
    """A labelled sequence-classification dataset, ``x`` as ``[N, T, D]`` float32, or a list
    of ``[T_i, D]`` when the recordings differ in length. ``source``: where the user's
    recordings came from (path, sha256, the validation recordings), for export to find them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    channels: tuple[str, ...]
    sample_rate_hz: float | None
    description: str
    source: dict | None = None


def basic_motions() -> Dataset:
    from sktime.datasets import load_basic_motions

    parts = {}
    for split in ("train", "test"):
        x, y = load_basic_motions(split=split, return_type="numpy3D")
        parts[split] = (np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32), y)
    labels = tuple(sorted(str(v) for v in set(parts["train"][1])))
    index = {name: i for i, name in enumerate(labels)}
    enc = {s: np.array([index[v] for v in parts[s][1]], dtype=np.int64) for s in parts}
    return Dataset(
        name="basic_motions",
        x_train=parts["train"][0], y_train=enc["train"],
        x_test=parts["test"][0], y_test=enc["test"],
        labels=labels,
        channels=("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"),
        sample_rate_hz=10.0,
        description="sktime BasicMotions (UEA archive): smart-watch accelerometer + gyroscope, "
                    "10 s at 10 Hz, activities badminton/running/standing/walking",
    )


def digits(seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.data.astype(np.float32)[:, :, None]  # [N, 64, 1], row-major pixel order
    x_tr, x_te, y_tr, y_te = train_test_split(x, data.target.astype(np.int64), test_size=0.25,
                                              random_state=seed, stratify=data.target)
    return Dataset(
        name="digits", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        labels=tuple(str(i) for i in range(10)), channels=("pixel",), sample_rate_hz=None,
        description="scikit-learn 8x8 digits, one pixel (0-16) per step, row-major, 64 steps; "
                    f"stratified 75/25 split, seed {seed}",
    )


def digit_rows(seed: int = 0) -> Dataset:
    """``digits`` read a row at a time: 8 steps of 8 pixels (0-16), the small cousin of the
    28-row MNIST sequences of the meta-predictive-learning paper; the same split."""
    d = digits(seed)
    return Dataset(
        name="digit_rows", x_train=np.ascontiguousarray(d.x_train.reshape(-1, 8, 8)),
        y_train=d.y_train, x_test=np.ascontiguousarray(d.x_test.reshape(-1, 8, 8)),
        y_test=d.y_test, labels=d.labels, channels=tuple(f"col{i}" for i in range(8)),
        sample_rate_hz=None,
        description="scikit-learn 8x8 digits, one row of 8 pixels (0-16) per step, 8 steps; "
                    f"stratified 75/25 split, seed {seed}")


def recordings_dataset(spec: str, validation: float = 0.25, seed: int = 0) -> Dataset:
    """The user's labelled recordings (a table, ``wavedge.recordings``: ``FILE?column keys``)
    as a dataset: every column but the sequence, time and label columns is a channel (or
    those a ``columns=`` map names), one recording per sequence value, of any length, labelled
    by its last sample's ``label``. A stratified ``validation`` fraction of the recordings
    (seeded) is held out, at least one per class that has two or more."""
    from wavedge.recordings import clock_channel, load_table, one_label_each, table_digest

    if not 0 < validation < 1:
        raise InputError(f"validation fraction must be in (0, 1), got {validation}")
    table = load_table(spec, None, "training data")
    recs = table.recordings
    clock = clock_channel(table) if table.columns.mapping is None else None
    if clock is not None:  # a column map names its channels: a counter there is meant
        raise InputError(f"training data: {table.path}: column {clock!r} rises at every step "
                         "of every recording, as a clock does, and a model fed it would learn "
                         f"the time, not the sensor: name it as the time with ?time={clock}, "
                         "or list the channels with ?columns=NAME,...")
    if any(t is None for r in recs for t in r.truth):
        how = ("give one per recording with ?labels=LABELS.npy" if table.path.suffix == ".npy"
               else f"no label column '{table.columns.label}' (name it with ?label=COLUMN)")
        raise InputError(f"training data: {table.path}: no labels; {how}")
    one_label_each(table, "training data")
    blank = [r.key for r in recs if not str(r.truth[-1]).strip()]
    if blank:  # else trained as a class named "", which the board then predicts
        shown = ", ".join(map(str, blank[:5])) + (", ..." if len(blank) > 5 else "")
        raise InputError(f"training data: {table.path}: {len(blank)} of {len(recs)} recordings "
                         f"have an empty label at their last sample ({table.columns.label} "
                         f"of recording {shown}); label them or leave them out")
    labels = tuple(sorted({r.truth[-1] for r in recs}))
    if len(labels) < 2:
        raise InputError(f"training data: {table.path}: one class only ({labels}); a "
                         "classifier needs two or more")
    rng = np.random.default_rng(seed)
    held = set()
    for label in labels:
        members = [i for i, r in enumerate(recs) if r.truth[-1] == label]
        if len(members) >= 2:
            k = min(len(members) - 1, max(1, round(validation * len(members))))
            held |= set(rng.permutation(members)[:k].tolist())
    if not held:
        raise InputError(f"training data: {table.path}: too few recordings to hold any out "
                         "for validation (each class needs two)")
    y = np.array([labels.index(r.truth[-1]) for r in recs], np.int64)
    train = [i for i in range(len(recs)) if i not in held]
    test = sorted(held)

    def pack(idx):
        xs = [recs[i].x for i in idx]
        same = len({len(x) for x in xs}) == 1
        return (np.stack(xs) if same else xs), y[idx]

    (x_tr, y_tr), (x_te, y_te) = pack(train), pack(test)
    lengths = sorted(len(r.x) for r in recs)
    rate = f"{table.rate_hz:.4g} Hz" if table.rate_hz else "no stated rate"
    return Dataset(
        name=table.path.stem, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        labels=labels, channels=table.channels, sample_rate_hz=table.rate_hz,
        description=f"{table.path.name}: {len(recs)} recordings of {lengths[0]}-{lengths[-1]} "
                    f"samples at {rate}, {len(labels)} classes; {len(test)} held out "
                    f"(stratified, seed {seed})",
        source={"spec": str(spec).replace(str(table.path), str(table.path.resolve()), 1),
                "sha256": table_digest(table.path),
                "validation": [str(recs[i].key) for i in test]})


DATASETS = {"basic_motions": basic_motions, "digits": digits, "digit_rows": digit_rows}


def load_dataset(name: str) -> Dataset:
    """Load a bundled dataset by name; raises ``InputError`` for an unknown name."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return loader()
