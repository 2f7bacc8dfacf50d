"""``mqtt://HOST[:PORT]/TOPIC[?qos=1&queue=N&idle=S&<table keys>]`` (or ``mqtts://``): sensor
samples from a broker, for boards whose sensors publish.

Each message is one sample or several: a CSV line per sample (the table keys of the other
line sources apply: a header line naming channels, ``columns=``, ``sequence=``, ``time=``...),
a JSON list of numbers in channel order, or a JSON object keyed by channel name
(its ``time`` and ``label`` read as a table's, ``recordings.Messages``). Messages wait
in a bounded queue (``queue``, 10,000 messages, drop-oldest, drops counted) for the model; the
session is kept on the broker (QoS 1 messages published while we were away arrive on
reconnect). The source ends after ``idle`` seconds without a message (default: never).
"""

from __future__ import annotations

from wavedge.recordings import message_lines
from wavedge.runtime.mqtt import FILE_PARAMS  # noqa: F401 (wavedge service reads it)
from wavedge.runtime.mqtt import (COMMON_PARAMS, WARN_AFTER_S, client, client_id, parse_broker,
                                  start, warn_unreached)
from wavedge.runtime.sources import SOURCE_TABLE_PARAMS, Inbox, LiveSource, TableOptions


def reader(url) -> tuple[str, str]:
    """For ``urls.reader_of``: one broker session per client id."""
    return (f"client id {client_id(url, 'source')} on {url.path.partition('/')[0]}",
            "two clients with one id would take the broker's session from each other; give "
            "each its own ?client_id=")


class MqttSource(LiveSource):
    def __init__(self, url, manifest) -> None:
        url.check_params((*COMMON_PARAMS, *SOURCE_TABLE_PARAMS, "queue", "idle"))
        self.table = TableOptions(url, manifest, live=True)
        self.broker = b = parse_broker(url, "source")
        self.idle_s = url.get("idle", None, float, (0.01, 1e9))
        self.inbox = Inbox(url.get("queue", 10_000, int, (1, 10_000_000)))
        self.connects = self.disconnects = 0
        self.problem: str | None = None  # why the broker refused us, when it did
        self.warned = False
        self.client = client(b, clean=False, on_connect=self._on_connect,
                             on_disconnect=self._on_disconnect, on_message=self._on_message)
        start(self.client, b)

    def __iter__(self):
        return self.table.lines(self._lines(), self.broker.where)

    def _lines(self):
        for payload in self.inbox.payloads(self.idle_s, self._waiting):
            yield from message_lines(payload)

    def _waiting(self, seconds: float) -> None:
        if not self.warned and not self.connects and seconds > WARN_AFTER_S:
            self.warned = True  # silent, a wrong host or port looked like a quiet topic
            warn_unreached(self.broker, self.problem, "waiting for it")

    def _on_message(self, msg) -> None:
        self.inbox.put(msg.payload)

    def _on_connect(self, reason) -> None:
        if reason.is_failure:
            self.problem = f"refused: {reason}"
            return
        self.connects += 1
        self.client.subscribe(self.broker.topic, qos=self.broker.qos)

    def _on_disconnect(self, reason) -> None:
        self.disconnects += bool(reason.is_failure)  # not our own at close

    def notes(self) -> list[str]:
        return [f"mqtt source {self.broker.where}: {self.inbox.received} messages, "
                f"{self.inbox.dropped} dropped from a full queue; {self.connects} connects, "
                f"{self.disconnects} disconnects"] + self.table.notes()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open(url, manifest) -> MqttSource:  # noqa: A001
    return MqttSource(url, manifest)
