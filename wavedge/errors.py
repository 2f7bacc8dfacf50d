"""One exception tree for the whole package.

Every message names the thing at fault (a file, an input) and says what was expected, so the CLI
can print it as a single line and exit non-zero.
"""


class WavedgeError(Exception):
    """Base of every error wavedge raises on purpose."""


class CheckpointError(WavedgeError):
    """A training checkpoint is missing, unreadable, or not what was asked for."""


class ManifestError(WavedgeError):
    """A model directory's manifest is missing, malformed, of an unknown version, or does not
    match the files beside it."""


class ExportError(WavedgeError):
    """Export failed, or the exported graphs disagree with torch beyond the tolerance."""


class InputError(WavedgeError):
    """A sample, recording or argument has the wrong shape, type or value."""
