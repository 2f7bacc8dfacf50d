"""One exception tree for the whole package: every exception wavedge raises on purpose derives
from ``WavedgeError`` and is defined here (the modules that raise them re-export them).

Every message names the thing at fault (a file, an input) and says what was expected, so the CLI
can print it as a single line and exit non-zero.
"""

import json
import operator
import os


def reason(exc: BaseException) -> str:
    """An exception another library (or a user's code) raised, as the end of one line: the
    system's words for its errno when it carries one (pyserial's message repeats the port
    and nests a second errno), else its message's first line, or its type's name."""
    # pyserial's socket:// and rfc2217:// wrap the OSError in a message of their own
    for cause in (exc, exc.__cause__, exc.__context__):
        errno = getattr(cause, "errno", None)
        if isinstance(errno, int) and errno > 0:
            return os.strerror(errno)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_json(text: str, **kwargs):
    """``json.loads``, whose every failure is a ``json.JSONDecodeError``: a document nested
    deeper than the interpreter's recursion limit raises ``RecursionError``, and one MQTT
    message of 100,000 brackets must not end a board's run (it did: the sample topic ended
    the run with a traceback, the command topic killed the sink's network thread)."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def as_names(value) -> tuple[str, ...]:
    """Names given as a tuple or list, or as one comma-separated string, each once and in
    order: a bare string had been read as its letters (providers "cuda": c, u, d, a), and a
    name given twice was done twice (`--format onnx,onnx` exported every graph twice)."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(dict.fromkeys(n.strip() for n in items if n.strip()))


def query_params(query: str, where: str) -> dict:
    """``key=value&...`` as a dict; a key given twice is refused (``rate=max&rate=10`` had
    taken the last without a word)."""
    from urllib.parse import parse_qsl

    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InputError(f"{where}: {', '.join(twice)} given twice")
    return dict(pairs)


def not_a_file(path) -> str | None:
    """Why ``path`` is not a file to read, or None: a directory given for a recording had
    been called "no such file", which it plainly is."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    # a pipe (`<(...)`, /dev/stdin from a pipe) or a device had been "no such file" too
    return f"{path} is a pipe or a device, not a file" if os.path.exists(path) else \
        f"no such file {path}"


def check_count(value, what: str, low: int, high: int | None = None) -> int:
    """``value`` as an int (numpy's integers too), or ``InputError`` saying the whole numbers
    ``what`` takes."""
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or n < low or (high is not None and n > high):
        span = f"{low} or more" if high is None else f"{low} to {high}"
        raise InputError(f"{what} must be a whole number, {span}, got {value!r}")
    return n


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


class SourceError(WavedgeError):
    """A source cannot be opened, or it vanished and did not come back."""


class SinkError(WavedgeError):
    """A sink cannot be opened or written (a full disk, a missing folder)."""


class BackendError(WavedgeError):
    """A backend is not installed, or cannot load or run a model file."""


class BridgeError(WavedgeError):
    """The serial bridge to a microcontroller: the base of its errors."""


class FrameError(BridgeError, ValueError):
    """A frame cannot be built (payload too long, field out of range)."""


class MessageError(BridgeError, ValueError):
    """A payload that does not fit its message type's layout."""


class LinkError(BridgeError):
    """The port cannot be opened, the handshake failed, or the board speaks another schema."""
