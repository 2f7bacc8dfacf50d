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
method ``405``. Bodies wait in a bounded drop-oldest queue (``queue``, 10,000), drops counted;
the summary counts the POSTs, their senders and what was refused. Plain HTTP only: put it
behind a TLS proxy to take samples from beyond the local network. The source ends after
``idle`` seconds without a POST (default: never; Ctrl-C stops)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wavedge.errors import SourceError, reason
from wavedge.recordings import message_lines
from wavedge.runtime.sources import (SOURCE_TABLE_PARAMS, Inbox, LiveSource, TableOptions,
                                     senders)
from wavedge.runtime.urls import host_port

MAX_BODY = 1 << 20  # bytes in one POST: a second of a 1 kHz IMU as JSON is about 100 kB


def _where(url) -> tuple[str, int, str]:
    """HOST, PORT and PATH (None: any) of an ``http:`` source URL."""
    address, slash, path = url.path.partition("/")
    host, port = host_port(replace(url, path=address), "the port to listen on, e.g. "
                           "http://:8080 (every address) or http://:8080/samples", "0.0.0.0",
                           SourceError)
    return host, port, "/" + path if slash else None


def reader(url) -> tuple[str, str]:
    """For ``urls.reader_of``: one stream per path of a port (one server serves them all)."""
    _, port, path = _where(url)
    return (f"TCP port {port}" + (f", path {path}" if path else ""),
            "two streams would split its POSTs; give each board its own path")


class HttpSource(LiveSource):
    def __init__(self, url, manifest) -> None:
        url.check_params((*SOURCE_TABLE_PARAMS, "idle", "queue"))
        self.table = TableOptions(url, manifest, live=True)
        self.where = url.text
        self.idle_s = url.get("idle", None, float, (0.01, 1e9))
        self.inbox = Inbox(url.get("queue", 10_000, int, (1, 10_000_000)))
        self.senders: set = set()
        host, port, self.path = _where(url)
        self.server = _Server.serving(host, port, self.path, self)

    def __iter__(self):
        return self.table.lines(self._lines(), self.where)

    def _lines(self):
        for payload in self.inbox.payloads(self.idle_s):
            yield from message_lines(payload)

    def notes(self) -> list[str]:
        refused = ", ".join(f"{n} answered {status}"
                            for status, n in sorted(self.server.refused.items()))
        return [f"http source {self.where}: {self.inbox.received} POSTs from "
                f"{senders(self.senders, 'path')}, {self.inbox.dropped} dropped from a full queue"
                + (f"; refused on its port: {refused}" if refused else "")] + self.table.notes()

    def close(self) -> None:
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
        kind = _Server6 if ":" in host else ThreadingHTTPServer  # [::]:8080, [::1]:8080
        try:
            self.http = kind((host, port), _handler(self))
        except OSError as exc:
            raise SourceError(f"{where}: cannot listen on {host}:{port} ({reason(exc)})") \
                from None
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, args=(0.25,), daemon=True,
                         name=f"wavedge-http-{port}").start()

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


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(server: _Server):
    """The request handler of ``server``: a POST's body into its path's source's inbox."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a board posting 50 times a second

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            source = server.route(self.path)
            if source is None:
                return self._answer(404, "POST samples to " + ", ".join(server.routes))
            try:
                size = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, "give a Content-Length")
            if not 0 <= size <= MAX_BODY:
                return self._answer(413, f"at most {MAX_BODY} bytes a POST")
            body = self.rfile.read(size)
            source.senders.add(self.client_address[0])
            source.inbox.put(body)
            self._answer(204)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, "POST samples here")

        do_PUT = do_DELETE = do_PATCH = do_GET

        def _answer(self, status: int, text: str = "") -> None:
            if status != 204:
                server.refused[status] += 1
            data = text.encode()
            self.send_response(status)
            if status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Length", str(len(data)))
            if status in (411, 413):
                self.send_header("Connection", "close")  # its body was not read: not reusable
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # no line per request on the run's stderr
            pass

    return Handler


def open(url, manifest) -> HttpSource:  # noqa: A001
    return HttpSource(url, manifest)
