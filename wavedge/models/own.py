"""A user's own model, exported from the command line: ``wavedge export FILE.py:CLASS
--weights W.pt [--config JSON]``. ``CLASS`` is a ``StepModel`` subclass in the user's file
(its ``signature`` declared there); the weights are a ``state_dict`` saved with ``torch.save``.
The file runs as Python code: export only models you trust."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from wavedge.errors import CheckpointError, InputError, not_a_file, reason
from wavedge.models.base import StepModel
from wavedge.models.checkpoint import Checkpoint, load_weights_file


def load_own_model(spec: str, weights: Path | None, config: dict | None = None) -> Checkpoint:
    """Import ``FILE.py:CLASS``, build it with ``config`` (keyword arguments), load
    ``weights``; raises ``InputError``/``CheckpointError`` in one line."""
    file, _, cls_name = spec.rpartition(":")
    path = Path(file)
    if why := not_a_file(path):
        raise InputError(f"{why} (expected FILE.py:CLASS)")
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
        there = [n for n, c in vars(module).items() if isinstance(c, type)
                 and issubclass(c, StepModel) and c.__module__ == module_name]
        what = f"{cls_name!r} is not a StepModel subclass defined there" if cls_name else \
            "give the model's class as FILE.py:CLASS"
        raise InputError(f"{path}: {what} (it defines {', '.join(there) or 'none'})")
    kwargs = config or {}
    try:
        model = cls(**kwargs)
    except Exception as exc:  # the user's constructor may raise anything
        raise InputError(f"{cls_name}(**{kwargs}): {type(exc).__name__}: {reason(exc)}") from None
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
        raise CheckpointError(f"{weights}: cannot load into {cls_name}: {_mismatch(exc)}") \
            from None
    return Checkpoint(path=Path(weights), model=model.eval(), meta={})


def _mismatch(exc: Exception) -> str:
    """``load_state_dict``'s refusal in one line: its first fault (a missing key, a shape that
    differs) and how many more, where torch's own first line only says that there are some."""
    faults = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
    if not faults:
        return reason(exc)
    more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
    return faults[0].rstrip(".") + more
