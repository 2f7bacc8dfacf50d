"""An HTTP server on its own thread: the ``http:`` source's (boards POST samples) and the
``serve:`` sink's (anyone GETs the latest result)."""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer

from wavedge.errors import reason


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def start(host: str, port: int, handler, where: str, error: type[Exception]):
    """A server of ``handler`` on ``host:port`` (an IPv6 address too: ``[::1]:8080``),
    serving on a daemon thread; a port it cannot take is ``error`` in one line."""
    kind = _Server6 if ":" in host else ThreadingHTTPServer
    try:
        server = kind((host, port), handler)
    except OSError as exc:
        raise error(f"{where}: cannot listen on {host}:{port} ({reason(exc)})") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.25,), daemon=True,
                     name=f"wavedge-http-{port}").start()
    return server
