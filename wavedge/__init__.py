"""wavedge: brain-inspired streaming sequence models on edge boards.

Importing the package is cheap: no torch, no inference runtime. The heavy parts live in
``wavedge.models`` and ``wavedge.export`` (torch, export time) and ``wavedge.runtime`` (numpy plus
one inference runtime, on the board).
"""

from wavedge.errors import (
    CheckpointError,
    ExportError,
    InputError,
    ManifestError,
    WavedgeError,
)

# declared here and read by the build (pyproject.toml: dynamic version): importlib.metadata
# costs 35-70 ms of every start-up, measured with -X importtime
__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ExportError",
    "InputError",
    "ManifestError",
    "WavedgeError",
    "__version__",
]
