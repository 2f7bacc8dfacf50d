"""``udp://[HOST]:PORT[?idle=S&<table keys>]``: samples in UDP datagrams, for sensor boards on
WiFi (an ESP32 sending its IMU's readings to the Pi). Binds HOST (default every address) and
PORT; each datagram is one sample or several, as an MQTT message is: CSV lines (the table keys
of the other line sources apply: a header line, ``columns=``, ``sequence=``, ``time=``...), a
JSON list of numbers in channel order, or a JSON object keyed by channel name
(its ``time`` and ``label`` read as a table's, ``recordings.Messages``). UDP does not say
what it lost; the summary counts the datagrams and their senders (two boards on one port would
interleave their samples into one stream). The source ends after ``idle`` seconds without a
datagram (default: never; Ctrl-C stops).

With ``reply=last`` each datagram is answered, once the model has taken its samples, by a
datagram to its sender's address and port with the jsonl record of its last sample's result
(``reply=all``: a JSON list of every sample's, ``{"line": N, "refused": WHY}`` for one the run
refused; ``{"refused": WHY}`` when it refused them all): a board reads its prediction on the
socket it sends from (an ESP32's ``WiFiUDP``), where a ``udp://`` sink needed its address, which
DHCP may change. A datagram with no sample in it is not answered. A ``reply=all`` list longer
than a datagram holds comes as several lists of whole records, in order (``datagrams``)."""

from __future__ import annotations

import json
import socket
import time
from functools import partial

from wavedge.errors import SourceError, reason
from wavedge.runtime.urls import host_port
from wavedge.runtime.sources import POLL_S, SOURCE_TABLE_PARAMS, Answers, Awaited, LiveSource, \
    Replies, TableOptions, senders

MAX_DATAGRAM = 65_535
MAX_REPLY = 65_507  # the most one UDP datagram carries over IPv4


def datagrams(text: str, limit: int | None = None) -> list[bytes]:
    """An answer as datagrams of at most ``limit`` bytes (``MAX_REPLY``): whole where it
    fits, else lists of whole records, in order (a ``reply=all`` list of 600 of the bundled
    model's samples, 33 KB of CSV in one datagram, came to 74 KB of records and went as
    nothing); a record longer than a datagram goes alone, and fails as it did."""
    from wavedge.runtime.sinks import json_text

    limit = MAX_REPLY if limit is None else limit
    data = text.encode()
    if len(data) <= limit or not text.startswith("["):
        return [data]
    out: list[bytes] = []
    part: list[bytes] = []
    size = 2  # the brackets
    for item in (json_text(r).encode() for r in json.loads(text)):
        if part and size + 2 + len(item) > limit:  # ", " and the record
            out.append(b"[" + b", ".join(part) + b"]")
            part, size = [], 2
        size += len(item) + (2 if part else 0)
        part.append(item)
    return [*out, b"[" + b", ".join(part) + b"]"]


def _address(url) -> tuple[str, int]:
    return host_port(url, "the port to listen on, e.g. udp://:5005 (every address) or "
                          "udp://192.168.1.10:5005", "0.0.0.0", SourceError)


def reader(url) -> tuple[str, str]:
    """For ``urls.reader_of``: one socket per port."""
    return f"UDP port {_address(url)[1]}", "two sockets cannot both take its datagrams"


class UdpSource(LiveSource):
    def __init__(self, url, manifest) -> None:
        url.check_params((*SOURCE_TABLE_PARAMS, "idle", "reply"))
        self.table = TableOptions(url, manifest, live=True)
        self.where = url.text
        self.replies = Replies(url, self.table)
        self.answers = Answers(self.replies.mode)
        self.idle_s = url.get("idle", None, float, (0.01, 1e9))
        host, port = _address(url)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise SourceError(f"{url.text}: cannot listen on {host}:{port} ({reason(exc)})") \
                from None
        self.sock.settimeout(POLL_S)
        self.datagrams = 0
        self.senders: set = set()

    def __iter__(self):
        return self.replies.samples(self.table, self._messages(), self.where)

    def _messages(self):
        last = time.monotonic()
        while True:
            try:
                payload, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                if self.idle_s is not None and time.monotonic() - last > self.idle_s:
                    return
                continue
            last = time.monotonic()
            self.datagrams += 1
            self.senders.add(sender[0])
            yield payload if self.replies.mode is None else Awaited(payload, partial(
                self._send, sender))

    def _send(self, sender, awaited: Awaited) -> None:
        """A datagram's answer to its sender (from the loop's thread, as its last sample is
        taken)."""
        self.answers.send(awaited, lambda text: [self.sock.sendto(d, sender)
                                                 for d in datagrams(text)])

    def notes(self) -> list[str]:
        return [f"udp source {self.where}: {self.datagrams} datagrams from "
                f"{senders(self.senders)}{self.answers.note()}"] + self.table.notes()

    def close(self) -> None:
        self.sock.close()


def open(url, manifest) -> UdpSource:  # noqa: A001
    return UdpSource(url, manifest)
