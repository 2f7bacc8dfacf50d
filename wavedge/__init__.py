"""wavedge: brain-inspired streaming sequence models on edge boards.

Importing the package is cheap: no torch, no inference runtime. The heavy parts live in
``wavedge.models`` and ``wavedge.export`` (torch, export time) and ``wavedge.runtime`` (numpy plus
one inference runtime, on the board).
"""

from importlib.metadata import PackageNotFoundError, version

from wavedge.errors import (
    CheckpointError,
    ExportError,
    InputError,
    ManifestError,
    WavedgeError,
)

try:
    __version__ = version("wavedge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CheckpointError",
    "ExportError",
    "InputError",
    "ManifestError",
    "WavedgeError",
    "__version__",
]
