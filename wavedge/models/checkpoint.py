"""Training checkpoints: a versioned dict saved with ``torch.save`` and read back with
``weights_only=True`` (no arbitrary code runs when a checkpoint is loaded).

Fields: ``format`` ("wavedge-checkpoint"), ``version``, ``arch``, ``config`` (the model's
keyword arguments), ``state_dict``, and ``meta``: task, labels, channel names, sample rate,
normalisation (per-channel mean/std of the training inputs), recipe and metrics.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from wavedge.errors import CheckpointError, WavedgeError, reason
from wavedge.models import ARCHITECTURES, StepModel, build_model
from wavedge.stopping import part_of, replaced_whole

CHECKPOINT_FORMAT = "wavedge-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) and its metadata."""

    path: Path
    model: StepModel
    meta: dict


def save_checkpoint(path: str | Path, model: StepModel, meta: dict) -> Path:
    """Write ``model`` and ``meta`` to ``path`` (parent folders are created) whole or not at
    all: beside it first, then renamed over it, so a full disk or a stop mid-write leaves the
    checkpoint that was there, never a truncated one."""
    path = Path(path)
    meta = json.loads(json.dumps(meta))  # plain types only, so weights_only loading accepts it
    _make_folders(path)
    try:
        with replaced_whole(path) as part:
            torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                        "arch": model.arch, "config": model.config,
                        "state_dict": model.state_dict(), "meta": meta}, part)
    except (OSError, RuntimeError) as exc:  # torch's writer: RuntimeError for OS faults
        raise _unwritable(path, exc) from None
    return path


def check_writable(path: str | Path) -> None:
    """``CheckpointError`` now if a checkpoint cannot be written at ``path``, so that a
    training run finds out before it trains, not after (a missing or read-only folder)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the checkpoint's file name")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as fh:  # torch.save writes a zip archive
            if fh.read(4) != b"PK\x03\x04":
                raise CheckpointError(f"{path}: exists and is not a checkpoint (--out {path} "
                                      "names your data?); refusing to overwrite it")
    _make_folders(path)
    part = part_of(path)  # the file save_checkpoint writes before its rename
    try:
        part.touch()
    except OSError as exc:
        raise _unwritable(path, exc) from None
    part.unlink()


def _make_folders(path: Path) -> None:
    """The folders a checkpoint at ``path`` goes in, made, or ``CheckpointError``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def _unwritable(path: Path, exc: Exception) -> CheckpointError:
    """Why no checkpoint can be written at ``path``, in one line (mkdir's FileExistsError
    means a folder above it is a file)."""
    why = "a folder above it is a file" if isinstance(exc, FileExistsError) else reason(exc)
    return CheckpointError(f"{path}: cannot write the checkpoint ({why})")


def load_weights_file(path: Path, hint: str):
    """``torch.load`` of a file of weights (no code runs), or ``CheckpointError`` in one line:
    why it cannot be read, or, for a pickle naming classes (a whole module saved with
    ``torch.save(model)``, which loads only by running its code), which class and ``hint``."""
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle's protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises assorted types on foreign bytes
        text = str(exc).strip()
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise CheckpointError(f"{path}: holds a {found.group(1)}, which loads only by "
                                  f"running code; {hint}") from None
        # torch's own text on an unpickling failure is advice on weights_only, and an index
        # error's is no reason: the type says more
        why = reason(exc) if isinstance(exc, (RuntimeError, OSError, ValueError)) \
            else type(exc).__name__
        raise CheckpointError(f"{path}: cannot be read (truncated, or not a file torch.save "
                              f"wrote): {why}") from None


def load_checkpoint(path: str | Path, expect_arch: str | None = None) -> Checkpoint:
    """Load a checkpoint and rebuild its model.

    Raises ``CheckpointError`` naming the file when it is missing, truncated or not a wavedge
    checkpoint, of an unknown version, of another architecture than ``expect_arch``, or when its
    weights do not fit the architecture it declares.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    blob = load_weights_file(path, "a checkpoint holds weights only (`wavedge train` writes "
                             "one; your own model exports with FILE.py:CLASS --weights)")
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a wavedge checkpoint (no format "
                              f"{CHECKPOINT_FORMAT!r}); train one with `wavedge train`, or export "
                              "your own model's state_dict with FILE.py:CLASS --weights")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {blob.get('version')!r} is not "
                              f"supported (this wavedge reads version {CHECKPOINT_VERSION})")
    arch = blob.get("arch")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; "
                              f"known: {', '.join(sorted(ARCHITECTURES))}")
    if expect_arch is not None and arch != expect_arch:
        raise CheckpointError(f"{path}: architecture is {arch!r}, expected {expect_arch!r}")
    try:
        model = build_model(arch, **blob["config"])
    except (TypeError, KeyError, WavedgeError) as exc:
        raise CheckpointError(f"{path}: bad config for architecture {arch!r}: {exc}") from None
    _load_weights(path, model, blob.get("state_dict"))
    model.eval()
    meta = dict(blob.get("meta") or {})
    annotate_from_meta(model, meta)
    return Checkpoint(path=path, model=model, meta=meta)


def annotate_from_meta(model: StepModel, meta: dict) -> StepModel:
    """Give ``model``'s default signature the channel names, labels, normalisation and sample
    rate that training recorded in ``meta``."""
    norm = meta.get("normalisation") or {}
    return model.annotate(channels=meta.get("channels"), labels=meta.get("labels"),
                          mean=norm.get("mean"), std=norm.get("std"),
                          sample_rate_hz=meta.get("sample_rate_hz"))


def _load_weights(path: Path, model: StepModel, state_dict: object) -> None:
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: has no state_dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match architecture {model.arch!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in expected.items():
        got = state_dict[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: weight {name!r} has shape {tuple(got.shape)}, "
                                  f"architecture {model.arch!r} expects {tuple(tensor.shape)}")
    model.load_state_dict(state_dict)
