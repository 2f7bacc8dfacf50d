"""``udp://HOST:PORT[?broadcast=1]``: each result as one UDP datagram of JSON (the jsonl
sink's record, with its ``time_format`` and ``host_time``), for a board on WiFi that acts on
the predictions (an ESP32 listening on a port, the counterpart of the ``udp:`` source) or a
dashboard. A send never waits: one the host's network stack refuses (no route, a full buffer,
nothing listening on a host that says so) is counted, not the end of the run, and the summary
says how many were sent and refused, and why the last was; UDP does not say what arrived.
``broadcast=1`` lets HOST be a broadcast address (``192.168.1.255``: every board on the
network hears), which the system refuses otherwise."""

from __future__ import annotations

import errno
import socket

from wavedge.errors import SinkError, reason
from wavedge.runtime.sinks import STAMP_PARAMS, Stamps, json_text
from wavedge.runtime.urls import host_port


class UdpSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(("broadcast", *STAMP_PARAMS))
        self.stamps = Stamps(url)
        self.where = url.text
        host, port = host_port(url, "the host and port to send to, e.g. udp://192.168.1.20:5006")
        try:
            family, _, _, _, self.address = socket.getaddrinfo(host, port, 0,
                                                               socket.SOCK_DGRAM)[0]
        except (OSError, UnicodeError) as exc:
            raise SinkError(f"{url.text}: cannot resolve {host} "
                            f"({getattr(exc, 'strerror', None) or reason(exc)})") from None
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)  # the loop's next sample never waits on the network
        if url.get("broadcast", 0, int, (0, 1)):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:  # sends nothing: a broadcast address without broadcast=1 is refused here
            self.sock.connect(self.address)
        except OSError as exc:
            self.sock.close()
            hint = "; add ?broadcast=1 to send to a broadcast address" \
                if exc.errno == errno.EACCES else ""
            raise SinkError(f"{url.text}: cannot send to {host} ({reason(exc)}){hint}") \
                from None
        self.sent = self.refused = 0
        self.why: str | None = None

    def write(self, result, sample) -> None:
        try:
            self.sock.send(json_text(self.stamps.record(result, sample)).encode())
            self.sent += 1
        except OSError as exc:  # the last send's ICMP answer among them: nothing listens
            self.refused += 1
            self.why = reason(exc) + (": nothing listens on that port"
                                      if exc.errno == errno.ECONNREFUSED else "")

    def counters(self) -> dict:
        return {"sent": self.sent, "refused": self.refused}

    def notes(self) -> list[str]:
        return [f"udp sink {self.where}: {self.sent} datagrams sent, {self.refused} refused by "
                "this host" + (f" (the last: {self.why})" if self.why else "")]

    def close(self) -> None:
        self.sock.close()


def open(url, manifest) -> UdpSink:  # noqa: A001
    return UdpSink(url, manifest)
