"""``serve://[HOST]:PORT[/PATH][?time_format=iso&host_time=1]``: the latest result for whoever asks
over HTTP: each ``GET PATH`` (default: any path) is answered ``200`` with the jsonl record of
the latest result (its ``time_format`` and ``host_time`` as the file sinks'), the latest of any
stream, or stream K's with ``?stream=K``. For what polls rather than listens: Home Assistant's
RESTful sensor (``value_template: "{{ value_json.label }}"``), a dashboard, a phone's browser,
``curl`` on another machine. Before the first result ``503``; another path ``404``; another
method ``405``. ``GET PATH/stats`` answers the run's counters so far (the MQTT sink's ``stats``
command's answer: samples, seconds, dropped, repaired, resets, latency, the sinks' counters),
for a health check that asks whether the service is alive and well. Binds HOST (default every
address); plain HTTP (a TLS proxy in front for beyond the local network). A result costs its
record's JSON when it is made (about 10 us), and nothing more: the server's thread answers from
the last one."""

from __future__ import annotations

import threading
from collections import deque
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from wavedge.errors import SinkError
from wavedge.runtime import httpd
from wavedge.runtime.sinks import STAMP_PARAMS, Stamps, json_text
from wavedge.runtime.urls import host_port_path

STATS_WAIT_S = 2.0  # how long a GET of the counters waits for the run to give them


def _where(url) -> tuple[str, int, str | None]:
    return host_port_path(url, "the port to serve on, e.g. serve://:8081/latest (every "
                          "address)", "0.0.0.0", SinkError)


def reader(url) -> tuple[str, str]:
    """For ``urls.reader_of``: one server per port."""
    return f"TCP port {_where(url)[1]}", "two servers cannot both take its requests"


class ServeSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(STAMP_PARAMS)
        self.stamps = Stamps(url)
        self.where = url.text
        host, port, self.path = _where(url)
        self.latest: dict = {}  # stream (0 where the run has one) -> its latest record's JSON
        self.last: str | None = None
        self.gets, self.askers = 0, set()
        self.inbox: deque = deque()  # ``stats`` commands for the loop (``wavedge.runtime.loop``)
        self.server = httpd.start(host, port, _handler(self), url.text, SinkError)

    def write(self, result, sample) -> None:
        text = json_text(self.stamps.record(result, sample))
        self.latest[(sample.stream or 0) if sample is not None else 0] = text
        self.last = text  # one assignment: the server's threads read it as it stands

    def answer(self, target: str) -> tuple[int, str]:
        """A GET of ``target`` (its path and query): the status and the body."""
        parts = urlsplit(target)
        if parts.path == f"{self.path or ''}/stats":
            return self._stats()
        if self.path is not None and parts.path != self.path:
            return 404, f"GET {self.path} (the latest result) or {self.path}/stats"
        stream = parse_qs(parts.query).get("stream", [None])[-1]
        if stream is None:
            text = self.last
        else:
            text = self.latest.get(int(stream) if stream.isdigit() else stream)
            if text is None and self.last is not None:
                known = ", ".join(str(k) for k in sorted(self.latest))
                return 404, f"no result of stream {stream} (streams: {known})"
        return (200, text) if text is not None else (503, "no result yet")

    def _stats(self) -> tuple[int, str]:
        """The run's counters, from the loop's thread (between two samples, or while the
        source is quiet) as the MQTT sink's ``stats`` command has them."""
        given, answered = {}, threading.Event()

        def reply(command: dict, payload: dict) -> None:
            given.update(payload)
            answered.set()

        self.inbox.append(({"command": "stats"}, reply))
        if not answered.wait(STATS_WAIT_S):
            return 503, f"the run did not give its counters within {STATS_WAIT_S:g} s"
        return 200, json_text(given)

    def notes(self) -> list[str]:
        return [f"serve sink {self.where}: {self.gets} GETs from {len(self.askers)} host(s)"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(sink: ServeSink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a dashboard polling every second
        disable_nagle_algorithm = True  # headers and body in two writes (see the http: source)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            sink.gets += 1
            sink.askers.add(self.client_address[0])
            status, text = sink.answer(self.path)
            kind = "application/json" if status == 200 else "text/plain; charset=utf-8"
            self._send(status, text, kind)

        def do_POST(self) -> None:  # noqa: N802
            self.close_connection = True  # its body is not read
            self._send(405, "GET the latest result here", "text/plain; charset=utf-8")

        do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

        def _send(self, status: int, text: str, kind: str) -> None:
            data = text.encode()
            self.send_response(status)
            if status == 405:
                self.send_header("Allow", "GET")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")  # always the latest
            try:
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the asker hung up
                self.close_connection = True

        def log_message(self, *args) -> None:  # no line per request on the run's stderr
            pass

    return Handler


def open(url, manifest) -> ServeSink:  # noqa: A001
    return ServeSink(url, manifest)
