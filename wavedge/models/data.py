"""Datasets that ship inside installed packages (no downloads), as ``[N, T, D]`` arrays.

- ``basic_motions``: sktime's BasicMotions, 3-axis accelerometer + 3-axis gyroscope from a smart
  watch, 6 channels x 100 samples at 10 Hz, 4 activities, 40 train / 40 test recordings.
- ``digits``: scikit-learn's 8x8 digits read as a sequence, one pixel per step (64 steps, one
  channel), the small cousin of sequential MNIST; a stratified 75/25 split with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wavedge.errors import InputError


@dataclass(frozen=True)
class Dataset:
    """A labelled sequence-classification dataset, ``x`` as ``[N, T, D]`` float32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    channels: tuple[str, ...]
    sample_rate_hz: float | None
    description: str


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


DATASETS = {"basic_motions": basic_motions, "digits": digits}


def load_dataset(name: str) -> Dataset:
    """Load a bundled dataset by name; raises ``InputError`` for an unknown name."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return loader()
