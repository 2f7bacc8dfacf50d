"""The runtime's C fast path, ``wavedge.runtime._fast``, where it was built.

``pip install`` compiles it where a C compiler and Python's headers are present (a board
without them installs the same package without it). It takes the per-sample Python of
``Stream.push`` out of the loop: the sample's checks, the copy into the bound input buffer,
the backend's entry points, the output's guard and the ``Result``. The Python beside each use
(``Stream.push``, ``Stream._run_step``, the runners' ``run``) is the reference: it runs
wherever the module is missing, anything the fast path does not take (a bad sample, a problem
reported by the source, several inputs) is handed to it, and the tests run both.

``WAVEDGE_PURE_PYTHON=1`` in the environment, or ``use(False)``, turns it off for streams
and runners made afterwards.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from wavedge.runtime import _fast as _module

    _module.setup(np.ndarray, np.dtype(np.float32), np.arange(3, dtype=np.float32))
except ImportError:  # not built here, or for another numpy's array layout: the Python path
    _module = None

_on = os.environ.get("WAVEDGE_PURE_PYTHON", "") in ("", "0")


def module():
    """The C module, or None (not built, or turned off)."""
    return _module if _on else None


def use(on: bool) -> bool:
    """Turn the fast path on or off for what is made next; returns the previous setting."""
    global _on
    previous, _on = _on, bool(on)
    return previous


def available() -> bool:
    """Whether the C module was built for this install."""
    return _module is not None
