"""``http://[HOST]:PORT[/PATH][?idle=S&queue=N&<table keys>]``: samples POSTed over HTTP, for
boards and apps that push their readings (an ESP32's ``HTTPClient``, a phone's sensor logger,
a script's ``requests.post``). Binds HOST (default every address) and PORT; each POST to PATH
(default: any path) is a message as an MQTT message is: CSV lines (the table keys of the other
line sources apply), a JSON list in channel order, or a JSON object keyed by channel name (its
``time`` and ``label`` read as a table's, ``recordings.Messages``). Several sources of a run
on one port, each with its own path, share its server (``/imu1``, ``/imu2``: a stream per
board).

Each POST is answered ``204`` at once, before the model has stepped (a board's request must
not wait on the run); a body over ``MAX_BODY`` bytes ``413``, another path ``404``, another
method ``405`` (a PUT is taken as a POST: ``curl -T``). A chunked POST (``sensor | curl -T -
URL``, an ESP32 streaming with ``esp_http_client``) is a live stream: its lines go to the
model as their chunks come, up to the last whole line, and it is answered when it ends; a JSON
document laid out over lines is taken whole at its end. Bodies wait in a bounded drop-oldest
queue (``queue``, 10,000), drops counted; the summary counts the POSTs, their senders and what
was refused. Plain HTTP only: put it
behind a TLS proxy to take samples from beyond the local network. The source ends after
``idle`` seconds without a POST (default: never; Ctrl-C stops).

With ``reply=last`` a POST is answered once the model has taken its samples, with what they
gave, as a local inference service answers (a board that posts its readings and acts on the
class had also to run a UDP listener at an address the run knew): ``200`` and the jsonl
record of its last sample's result; ``reply=all``, a JSON list of every sample's record, or
``{"line": N, "refused": WHY}`` for one the run refused. A POST with no sample in it (a
header alone) ``204``, one whose every sample was refused ``422`` with the first reason, one
not taken within ``wait`` seconds (10) ``504``, one the run ended before or the full queue
dropped ``503``. A chunked POST is a stream: answered ``204`` at its end, its results the
sinks'. Every result still goes to the sinks."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler

from wavedge.errors import SourceError
from wavedge.runtime import httpd
from wavedge.runtime.sources import (SOURCE_TABLE_PARAMS, Awaited, Inbox, LiveSource,
                                     Replies, TableOptions, senders)
from wavedge.runtime.urls import host_port_path

MAX_BODY = 1 << 20  # bytes in one POST: a second of a 1 kHz IMU as JSON is about 100 kB


def _where(url) -> tuple[str, int, str]:
    """HOST, PORT and PATH (None: any) of an ``http:`` source URL."""
    return host_port_path(url, "the port to listen on, e.g. http://:8080 (every address) or "
                          "http://:8080/samples", "0.0.0.0", SourceError)


def reader(url) -> tuple[str, str]:
    """For ``urls.reader_of``: one stream per path of a port (one server serves them all)."""
    _, port, path = _where(url)
    return (f"TCP port {port}" + (f", path {path}" if path else ""),
            "two streams would split its POSTs; give each board its own path")


class HttpSource(LiveSource):
    def __init__(self, url, manifest) -> None:
        url.check_params((*SOURCE_TABLE_PARAMS, "idle", "queue", "reply", "wait"))
        self.table = TableOptions(url, manifest, live=True)
        self.where = url.text
        self.replies = Replies(url, self.table)
        self.reply = self.replies.mode
        if self.reply is None and "wait" in url.params:
            raise SourceError(f"{url.text}: wait= is how long a POST waits for its results: "
                              "give reply=last or reply=all")
        self.wait_s = url.get("wait", 10.0, float, (0.01, 3600.0))
        self.waiting: set = set()  # POSTs waiting on their answer (reply=)
        self.answered: Counter = Counter()  # their answers, by status
        self.idle_s = url.get("idle", None, float, (0.01, 1e9))
        self.inbox = Inbox(url.get("queue", 10_000, int, (1, 10_000_000)))
        self.senders: set = set()
        self.posts: Counter = Counter()  # "whole", "streamed", "cut short"
        host, port, self.path = _where(url)
        self.server = _Server.serving(host, port, self.path, self)

    def __iter__(self):
        return self.replies.samples(self.table, self.inbox.payloads(self.idle_s), self.where)

    def wait(self, post: Awaited) -> tuple[int, str, str]:
        """A POST's answer (status, body, content type) once the run has taken its samples,
        or when it gives up on them."""
        with self.inbox.lock:
            self.waiting.add(post)
        self.inbox.put(post)
        if not post.done.wait(self.wait_s):
            post.refuse(504, f"the model had not taken the samples within {self.wait_s:g} s")
        with self.inbox.lock:
            self.waiting.discard(post)
            answer = post.answer(self.reply)
            self.answered[answer[0]] += 1
        return answer

    def notes(self) -> list[str]:
        refused = ", ".join(f"{n} answered {status}"
                            for status, n in sorted(self.server.refused.items()))
        streamed = ", ".join(f"{n} {how}" for how, n in self.posts.items() if how != "whole")
        return [f"http source {self.where}: {sum(self.posts.values())} POSTs"
                + (f" ({streamed})" if streamed else "")
                + f" from {senders(self.senders, 'path')}, {self.inbox.dropped} dropped from a "
                "full queue" + (f"; refused on its port: {refused}" if refused else "")
                + (f"; reply={self.reply}: " + ", ".join(
                    f"{n} answered {status}" for status, n in sorted(self.answered.items()))
                   if self.answered else "")] \
            + self.table.notes()

    def received(self, sender: str, how: str) -> None:
        """A POST from ``sender`` taken ``how`` (counted from the server's threads)."""
        with self.inbox.lock:
            self.senders.add(sender)
            self.posts[how] += 1

    def close(self) -> None:
        with self.inbox.lock:
            waiting = list(self.waiting)
        for post in waiting:
            post.refuse(503, "the run ended before it took the samples")
        self.server.leave(self.path)


class _Server:
    """One HTTP server per port, its POSTs routed by path to the sources of the run (several
    boards posting to ``/imu1``, ``/imu2``; a source without a path takes every POST);
    ``refused`` counts the answers other than 204, by status."""

    _open: dict = {}  # (host, port) -> _Server
    _lock = threading.Lock()

    def __init__(self, host: str, port: int, where: str) -> None:
        self.key, self.routes = (host, port), {}
        self.refused: Counter = Counter()
        self.http = httpd.start(host, port, _handler(self), where, SourceError)

    @classmethod
    def serving(cls, host: str, port: int, path: str | None, source: HttpSource) -> _Server:
        """The server of ``host:port``, started for the first source, with ``source`` at
        ``path``; a path taken, or every path beside one, is refused in one line."""
        with cls._lock:
            server = cls._open.get((host, port)) or cls(host, port, source.where)
            if path in server.routes or (server.routes and None in (path, *server.routes)):
                raise SourceError(f"{source.where}: port {port} already takes POSTs to "
                                  + ", ".join(p or "any path" for p in server.routes)
                                  + "; give each source its own path")
            cls._open[server.key] = server
            server.routes[path] = source
            return server

    def route(self, path: str) -> HttpSource | None:
        return self.routes.get(path.partition("?")[0]) or self.routes.get(None)

    def leave(self, path: str | None) -> None:
        with self._lock:
            self.routes.pop(path, None)
            if not self.routes:
                self._open.pop(self.key, None)
                self.http.shutdown()
                self.http.server_close()


def _handler(server: _Server):
    """The request handler of ``server``: a POST's body into its path's source's inbox."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a board posting 50 times a second
        # an answer's headers and body go in two writes, and Nagle held the body for the
        # board's delayed ACK: a POST answered with its prediction took 43 ms, now 0.4 ms
        # (`make bench-reply`)
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            source = server.route(self.path)
            if source is None:
                return self._answer(404, "POST samples to " + ", ".join(server.routes))
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._stream(source)
            try:
                size = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, "give a Content-Length")
            if not 0 <= size <= MAX_BODY:
                return self._answer(413, f"at most {MAX_BODY} bytes a POST")
            body = self.rfile.read(size)
            source.received(self.client_address[0], "whole")
            if source.reply is None:
                source.inbox.put(body)
                return self._answer(204)
            self._answer(*source.wait(Awaited(body)))

        do_PUT = do_POST  # noqa: N815 (curl -T, some loggers' uploads)

        def _stream(self, source: HttpSource) -> None:
            """A chunked body into ``source`` as its lines complete; what came before a
            connection lost or a malformed chunk is kept, the line it cut is not."""
            lines = _Lines()
            try:
                for data in _chunks(self.rfile):
                    for piece in lines.add(data):
                        source.inbox.put(piece)
            except (ValueError, OSError) as exc:
                source.received(self.client_address[0], "cut short")
                return self._answer(413 if isinstance(exc, _TooLong) else 400, str(exc))
            source.received(self.client_address[0], "streamed")
            if lines.pending.strip():
                source.inbox.put(lines.pending)
            self._answer(204)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, "POST samples here")

        do_DELETE = do_PATCH = do_GET

        def _answer(self, status: int, text: str = "", kind: str = "") -> None:
            if status >= 400 and kind == "":
                server.refused[status] += 1
            data = text.encode()
            self.send_response(status)
            if status == 405:
                self.send_header("Allow", "POST")
            if kind:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if status >= 400 and kind == "":  # its body was not read, or not whole: spent
                self.send_header("Connection", "close")
                self.close_connection = True
            try:
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the board hung up (a stream cut short): nothing to tell it
                self.close_connection = True

        def log_message(self, *args) -> None:  # no line per request on the run's stderr
            pass

    return Handler


class _TooLong(ValueError):
    pass


_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(;.*)?\r?\n")


def _chunks(rfile):
    """A chunked body's data, chunk by chunk as they come (RFC 9112 7.1), its trailer read and
    dropped; ``ValueError`` for a size line that is not one, or a body cut short."""
    while True:
        size = _CHUNK_SIZE.fullmatch(rfile.readline(1024))
        if size is None:
            raise ValueError("a chunked body cut short, or a chunk size that is not hex")
        if int(size[1], 16) == 0:  # the last chunk, then trailer lines to a blank one
            while rfile.readline(MAX_BODY) not in (b"\r\n", b"\n", b""):
                pass
            return
        left = int(size[1], 16)
        while left:  # a big chunk in pieces, each through the line limit as it comes
            data = rfile.read(min(left, 1 << 16))
            if not data:
                break
            left -= len(data)
            yield data
        if left or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise ValueError("a chunked body cut short, or a chunk longer than its size")


class _Lines:
    """A streamed body cut at whole lines, as a sensor's lines are; one JSON document laid out
    over lines (its first line not one by itself) is held whole to the body's end."""

    def __init__(self) -> None:
        self.pending, self.whole = b"", None

    def add(self, data: bytes) -> list[bytes]:
        self.pending += data
        if self.whole is None:
            first, newline, _ = self.pending.lstrip().partition(b"\n")
            if newline:
                self.whole = first.strip()[:1] in (b"[", b"{") and not _is_json(first)
        cut = self.pending.rfind(b"\n") + 1 if self.whole is False else 0
        piece, self.pending = self.pending[:cut], self.pending[cut:]
        if len(self.pending) > MAX_BODY:
            raise _TooLong(f"at most {MAX_BODY} bytes a line, or a JSON document")
        return [piece] if piece else []


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def open(url, manifest) -> HttpSource:  # noqa: A001
    return HttpSource(url, manifest)
