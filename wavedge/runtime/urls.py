"""Sources and sinks selected by URL, the pyserial ``serial_for_url`` way.

``scheme:rest?key=value&...`` picks the module ``wavedge.runtime.sources.<scheme>`` (or
``sinks.<scheme>``), whose ``open(url, context)`` builds the object. Add your own scheme with
``register_source("myscheme", factory)``/``register_sink`` or by naming a module:
``register_source("myscheme", "mypackage.mysource")``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from wavedge.errors import InputError, query_params

BAUD_RANGE = (50, 12_000_000)  # serial ports, from a teletype to a USB-CDC board

_SOURCES: dict[str, object] = {s: f"wavedge.runtime.sources.{s}"
                               for s in ("replay", "stdin", "serial", "synthetic", "link",
                                         "mqtt", "udp", "http")}
_SOURCES["mqtts"] = _SOURCES["mqtt"]
_SINKS: dict[str, object] = {s: f"wavedge.runtime.sinks.{m}"
                             for s, m in (("stdout", "stdout"), ("jsonl", "jsonl"),
                                          ("csv", "csvfile"), ("null", "null"),
                                          ("link", "link"), ("mqtt", "mqtt"),
                                          ("mqtts", "mqtt"), ("udp", "udp"),
                                          ("http", "http"), ("https", "http"),
                                          ("serve", "serve"))}


NO_TOP = 2 ** 62  # a count or seed with a top this high has none a user meets


def _outside(low, high, value) -> str:
    """Why ``value`` is not in the closed range: its bound alone where the top is no real
    limit (a loop count of -1 had been told "[0, 4611686018427387904]")."""
    if high >= NO_TOP:
        return f"must be at least {low}" if value < low else f"must be at most {high}"
    if isinstance(low, int) and isinstance(high, int):
        return f"is outside the allowed range [{low}, {high}]"
    return f"is outside the allowed range [{low:g}, {high:g}]"


@dataclass(frozen=True)
class URL:
    """A parsed ``scheme:path?query`` (``scheme://path`` works too)."""

    text: str
    scheme: str
    path: str
    params: dict = field(default_factory=dict)
    shared: tuple[str, ...] = ()  # keys every URL of its kind takes (a sink's: events')

    def get(self, key: str, default=None, kind=str, within: tuple | None = None):
        """The query parameter ``key`` converted with ``kind`` and, with ``within`` (low,
        high), inside that closed range; ``InputError`` naming the range if it is not."""
        if key not in self.params:
            return default
        try:
            value = kind(self.params[key])
        except (ValueError, OverflowError):
            raise InputError(f"{self.text}: parameter {key}={self.params[key]!r} is not a "
                             f"valid {kind.__name__}") from None
        if within is not None and not within[0] <= value <= within[1]:
            raise InputError(f"{self.text}: parameter {key}={self.params[key]} "
                             f"{_outside(*within, value)}")
        return value

    def check_params(self, allowed: tuple[str, ...]) -> None:
        allowed = (*allowed, *self.shared)
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise InputError(f"{self.text}: unknown parameter(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed) or 'none'}")


def host_port(url: URL, need: str, host: str | None = None,
              error: type[Exception] = InputError) -> tuple[str, int]:
    """``HOST:PORT`` of a network URL's path (``udp:``, ``http:``; ``[::1]:5005`` too): a port
    is required, and a host unless ``host`` is the default (a source binds every address);
    ``need`` says what to give where one is missing, as ``error`` (a source's, a sink's)."""
    name, _, port = url.path.rpartition(":")
    name = name.strip("[]") or host
    if not port.isdigit() or not 0 < int(port) < 65_536 or not name:
        raise error(f"{url.text}: give {need}")
    return name, int(port)


def host_port_path(url: URL, need: str, host: str | None = None,
                   error: type[Exception] = InputError) -> tuple[str, int, str | None]:
    """``HOST:PORT/PATH`` of an HTTP server's URL (``http://:8080/imu``): ``host_port``'s,
    and the path (None where none is given)."""
    address, slash, path = url.path.partition("/")
    name, port = host_port(replace(url, path=address), need, host, error)
    return name, port, "/" + path if slash else None


def parse_url(text: str) -> URL:
    if ":" not in text:
        raise InputError(f"{text!r} is not a URL: expected scheme:..., e.g. "
                         "replay:recording.csv, stdin:, stdout:")
    scheme, rest = text.split(":", 1)
    if rest.startswith("//"):
        rest = rest[2:]
    path, _, query = rest.partition("?")
    return URL(text, scheme.lower(), path, query_params(query, text))


def register_source(scheme: str, factory) -> None:
    """Make ``scheme:`` URLs open with ``factory(url, context)`` (or a module's ``open``)."""
    _SOURCES[scheme.lower()] = factory


def register_sink(scheme: str, factory) -> None:
    _SINKS[scheme.lower()] = factory


def _target(table: dict, kind: str, text: str) -> tuple[URL, object]:
    url = parse_url(text)
    try:
        return url, table[url.scheme]
    except KeyError:
        raise InputError(f"{text}: unknown {kind} scheme {url.scheme!r}; known: "
                         f"{', '.join(sorted(table))}") from None


def _module(text: str, kind: str):
    """The parsed URL and its scheme's module (None for a registered factory)."""
    url, target = _target(_SOURCES if kind == "source" else _SINKS, kind, text)
    return url, importlib.import_module(target) if isinstance(target, str) else None


def files_of(text: str, kind: str) -> list[str]:
    """The files a ``kind`` ("source" or "sink") URL reads or writes: its path where its
    module says the path is one (``FILE_PATH``) and the values of the query keys that name one
    (``FILE_PARAMS``); ``InputError`` for an unknown scheme. Opens nothing (a device may not
    be plugged in yet)."""
    url, module = _module(text, kind)
    path = [url.path] if getattr(module, "FILE_PATH", False) and url.path not in ("", "-") \
        else []
    return path + [url.params[k] for k in getattr(module, "FILE_PARAMS", ()) if url.params.get(k)]


def kept(text: str) -> str:
    """A sink URL as a service that restarts should give it: a sink that writes a file (its
    module names the key that appends, ``APPEND_PARAM``) appends unless the URL says
    otherwise, since each restart of the unit (after a failure, at boot, after an edit) would
    otherwise start the file anew, losing what it held. Opens nothing."""
    url, module = _module(text, "sink")
    key = getattr(module, "APPEND_PARAM", None)
    if key is None or url.path in ("", "-") or key in url.params:
        return text
    sep = "" if text.endswith(("?", "&")) else "&" if "?" in text else "?"
    return f"{text}{sep}{key}=1"


def reader_of(text: str, kind: str = "source") -> tuple[str, str] | None:
    """What a ``kind`` URL reads that no other source of the run may read too, and why (its
    module's ``reader(url)``): a port, stdin, a broker session; None when it may be shared (a
    recording). A port by its one name (``wavedge.ports.port_name``: a ``usb:`` URL's
    device, a path with its links followed). Opens nothing."""
    from wavedge.ports import port_name

    url, module = _module(text, kind)
    if not hasattr(module, "reader"):
        return None
    what, why = module.reader(url)
    return port_name(what), why


def _opener(table: dict, kind: str, text: str):
    """A URL, parsed, and the function that opens it: ``f(url, context)``."""
    url, target = _target(table, kind, text)
    return url, importlib.import_module(target).open if isinstance(target, str) else target


def _open(table: dict, kind: str, text: str, context):
    url, opener = _opener(table, kind, text)
    return opener(url, context)


def open_source(text: str, context):
    """Open a source URL; ``context`` is the manifest (channels, sample rate)."""
    return _open(_SOURCES, "source", text, context)


def open_sink(text: str, context):
    """Open a sink URL; ``context`` is the manifest (labels). Any sink's URL may choose what
    it is given of a classifier's results (``events.SINK_PARAMS``): the sink's module then
    sees the URL without those keys."""
    from wavedge.runtime import events

    url, opener = _opener(_SINKS, "sink", text)
    url = replace(url, shared=events.SINK_PARAMS)
    chosen = events.from_url(url, context)
    if chosen is None:
        return opener(url, context)
    own = {k: v for k, v in url.params.items() if k not in events.SINK_PARAMS}
    return events.Selected(opener(replace(url, params=own), context), chosen, text)


def env_secrets(env_file: str | None, where: str, keys: tuple[str, ...]) -> dict:
    """A URL's secrets (``keys``) from its ``?env=FILE`` of ``KEY=VALUE`` lines, quoted as
    systemd's environment files may be, or else from the process environment: never from
    the command line, where ``ps`` and the journal show them."""
    if env_file is None:
        return {k: os.environ[k] for k in keys if os.environ.get(k)}
    try:
        lines = Path(env_file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{where}: env file {env_file}: {exc.strerror}") from None
    out = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or key.strip() not in keys:
            raise InputError(f"{where}: env file {env_file}, line {n}: expected KEY=VALUE with "
                             f"KEY one of {', '.join(keys)}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":  # as systemd's
            value = value[1:-1]
        out[key.strip()] = value
    return out
