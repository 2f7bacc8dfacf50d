"""A user's own model, exported from the command line: ``wavedge export FILE.py:CLASS
--weights W.pt [--config JSON]``. ``CLASS`` is a ``StepModel`` subclass in the user's file
(its ``signature`` declared there); the weights are a ``state_dict`` saved with ``torch.save``.
The file runs as Python code: export only models you trust."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from wavedge.errors import CheckpointError, InputError
from wavedge.models.base import StepModel
from wavedge.models.checkpoint import Checkpoint, load_weights_file


def load_own_model(spec: str, weights: Path | None, config: str | None = None) -> Checkpoint:
    """Import ``FILE.py:CLASS``, build it with ``config`` (JSON keyword arguments), load
    ``weights``; raises ``InputError``/``CheckpointError`` in one line."""
    file, _, cls_name = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected FILE.py:CLASS)")
    module_name = f"wavedge_user_{path.stem}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything on import
        raise InputError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, StepModel)):
        raise InputError(f"{path}: {cls_name!r} is not a StepModel subclass defined there")
    try:
        kwargs = json.loads(config) if config else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--config is not JSON: {exc.msg}") from None
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"{cls_name}(**{kwargs}): {exc}") from None
    if weights is None:
        raise InputError("give --weights W.pt (a state_dict saved with torch.save)")
    if not Path(weights).is_file():
        raise CheckpointError(f"{weights}: no such weights file")
    state = load_weights_file(weights, "save the weights alone: "
                                       "torch.save(model.state_dict(), PATH)")
    try:
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict)
                              else state)
    except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{weights}: cannot load into {cls_name}: {first}") from None
    return Checkpoint(path=Path(weights), model=model.eval(), meta={})
