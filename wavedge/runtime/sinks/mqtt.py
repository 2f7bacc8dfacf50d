"""``mqtt://HOST[:PORT]/TOPIC[?qos=1&board=ID&queue=N&status_every=S&env=FILE]`` (or
``mqtts://`` for TLS): each result as one JSON message on TOPIC, for a fleet's broker.

- **Results** on ``TOPIC``: the jsonl sink's record (``step``, each head's fields, ``time`` and
  ``truth`` when the source has them; ``host_time`` with ``host_time=1``: ``sinks.Stamps``) plus
  ``model``, ``board`` and ``seq`` (0, 1, 2, ... per run). At ``qos=1`` (the default) delivery
  is at least once: after a reconnect the broker may see a message twice, and a subscriber
  that drops repeated ``seq`` gets each exactly once.
- **Status**, retained, on ``TOPIC/status``: ``online`` at every connect, every
  ``status_every`` seconds (10) and ``stopped`` at the end, with the manifest's identity and the
  run's counters; ``offline`` is the last will, published by the broker if we vanish.
- **Commands** on ``TOPIC/command``: ``{"command": "reset" | "stats", "id": ...}``, handled
  before the next sample, answered on ``TOPIC/reply`` with the same ``id``.
- **Offline**: results wait in a bounded queue (``queue``, 10,000 results, drop-oldest, drops
  counted) while the broker is away; the client retries with a growing delay (0.5 s to 8 s),
  never busily. At close the queue gets 5 s to drain; the summary says what was delivered
  (acknowledged by the broker at QoS 1), dropped and left undelivered. A run none of whose
  results reached the broker ends in an error (exit 1): a wrong host, port or account is not
  a success.

Credentials and TLS files come from ``?env=FILE`` or the environment (``wavedge.runtime.mqtt``).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from wavedge.errors import SinkError, parse_json
from wavedge.runtime.loop import COMMANDS
from wavedge.runtime.mqtt import FILE_PARAMS  # noqa: F401 (wavedge service reads it)
from wavedge.runtime.mqtt import (COMMON_PARAMS, WARN_AFTER_S, client, parse_broker, start,
                                  warn_unreached)
from wavedge.runtime.sinks import STAMP_PARAMS, Stamps, json_text

WINDOW = 64  # results handed to the client and not yet acknowledged
CLOSE_FLUSH_S = 5.0


class MqttSink:
    def __init__(self, url, manifest) -> None:
        url.check_params((*COMMON_PARAMS, "queue", "status_every", *STAMP_PARAMS))
        self.stamps = Stamps(url)
        self.broker = b = parse_broker(url, "sink")
        self.capacity = url.get("queue", 10_000, int, (1, 10_000_000))
        self.status_every = url.get("status_every", 10.0, float, (0.5, 86_400))
        self.topics = {k: f"{b.topic}/{k}" for k in ("status", "command", "reply")}
        self.identity = {"model": manifest.name, "family": manifest.raw.get("family"),
                         "board": b.board, "manifest_version": manifest.raw.get("version")}
        self.pending: deque = deque()
        self.inbox: deque = deque()  # commands for the loop (``wavedge.runtime.loop``)
        self.cond = threading.Condition()
        self.seq = self.delivered = self.dropped = self.unacked = self.lost = 0
        # message ids: a result's acknowledgement counts as delivered; paho may acknowledge
        # before publish() has returned the id, so early ones wait in ``early``
        self.result_mids: set = set()
        self.other_mids: set = set()
        self.early: set = set()
        self.connects = self.disconnects = 0
        self.connected = self.closing = False
        self.problem: str | None = None
        self.started = time.monotonic()
        self.client = client(b, clean=False, on_connect=self._on_connect,
                             on_disconnect=self._on_disconnect, on_message=self._on_message,
                             will=(self.topics["status"], self._status("offline")),
                             on_publish=self._on_publish)
        start(self.client, b)
        self.sender = threading.Thread(target=self._send, name="mqtt-sink", daemon=True)
        self.sender.start()

    # -- the loop's side ----------------------------------------------------------------------
    def write(self, result, sample) -> None:
        row = {**self.stamps.record(result, sample), "model": self.identity["model"],
               "board": self.broker.board, "seq": self.seq}
        self.seq += 1
        with self.cond:
            if len(self.pending) >= self.capacity:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(json_text(row))
            self.cond.notify()

    def reply(self, command: dict, payload: dict) -> None:
        body = {"id": command.get("id"), "command": command.get("command"), **payload}
        self._publish(self.topics["reply"], json_text(body), result=False)

    def counters(self) -> dict:
        return {"results": self.seq, "delivered": self.delivered, "queued": len(self.pending),
                "dropped": self.dropped, "connects": self.connects,
                "disconnects": self.disconnects}

    def close(self) -> None:
        deadline = time.monotonic() + CLOSE_FLUSH_S
        with self.cond:
            while (self.pending or self.unacked) and time.monotonic() < deadline:
                self.cond.wait(0.05)
            self.closing = True
            self.cond.notify_all()
        self.sender.join(1.0)
        self.undelivered = len(self.pending) + self.unacked
        if self.connected:
            info = self._publish(self.topics["status"], self._status("stopped"), result=False)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        if self.seq and not self.delivered:  # a wrong host, port or account: exit 1
            why = (f"connected {self.connects} time(s), nothing acknowledged" if self.connects
                   else f"never connected: {self.problem or 'no answer'}")
            raise SinkError(f"mqtt {self.broker.where}: none of the {self.seq} results reached "
                            f"the broker ({why})")

    def notes(self) -> list[str]:
        c = self.counters()
        return [f"mqtt {self.broker.where}: {c['results']} results, {c['delivered']} delivered "
                f"(acknowledged at QoS {self.broker.qos}), {c['dropped']} dropped from a full "
                f"queue ({self.capacity}), {self.lost} lost (QoS 0 while the link dropped), "
                f"{getattr(self, 'undelivered', 0)} undelivered at "
                f"close; {c['connects']} connects, {c['disconnects']} disconnects"
                + (f"; {self.problem}" if self.problem else "")]

    # -- the client's threads -----------------------------------------------------------------
    def _send(self) -> None:
        """Hand queued results to the client while connected, at most WINDOW unacknowledged;
        the retained status every ``status_every`` seconds; one warning if never connected."""
        next_status, warned = time.monotonic() + self.status_every, False
        while True:
            with self.cond:
                while not self.closing and not (self.connected and self.pending
                                                and self.unacked < WINDOW):
                    now = time.monotonic()
                    if now >= next_status:
                        break
                    self.cond.wait(min(next_status - now, 1.0))
                    if not warned and not self.connects and now - self.started > WARN_AFTER_S:
                        warned = True
                        warn_unreached(self.broker, self.problem, "results wait in the "
                                       f"queue ({self.capacity} at most)")
                if self.closing:
                    return
                payload = None
                if self.connected and self.pending and self.unacked < WINDOW:
                    payload = self.pending.popleft()
                    self.unacked += 1
            if payload is not None:
                self._publish(self.broker.topic, payload, result=True)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_every
                if self.connected:
                    self._publish(self.topics["status"], self._status("online"), result=False)

    def _publish(self, topic: str, payload: str, result: bool):
        """Results at the URL's QoS; status (retained) and replies at QoS 1."""
        status = topic == self.topics["status"]
        qos = self.broker.qos if result else 1
        info = self.client.publish(topic, payload, qos=qos, retain=status)
        with self.cond:
            if info.rc != 0 and qos == 0:  # QoS 0 while the link just dropped: gone
                if result:
                    self.unacked -= 1
                    self.lost += 1
            elif info.mid in self.early:
                self.early.discard(info.mid)
                if result:
                    self._acked()
            else:
                (self.result_mids if result else self.other_mids).add(info.mid)
        return info

    def _acked(self) -> None:
        self.unacked -= 1
        self.delivered += 1
        self.cond.notify_all()

    def _on_connect(self, reason) -> None:
        if reason.is_failure:
            self.problem = f"refused: {reason}"
            return
        with self.cond:
            self.connected, self.problem = True, None
            self.connects += 1
            self.cond.notify_all()
        self.client.subscribe(self.topics["command"], qos=1)
        self._publish(self.topics["status"], self._status("online"), result=False)

    def _on_disconnect(self, reason) -> None:
        with self.cond:
            if self.connected and reason.is_failure:  # not our own at close
                self.disconnects += 1
            self.connected = False
            refused = (self.problem or "").startswith("refused")  # says more than "lost"
            if reason.is_failure and not refused:
                self.problem = f"connection lost: {reason}"

    def _on_publish(self, mid: int) -> None:
        with self.cond:
            if mid in self.result_mids:
                self.result_mids.discard(mid)
                self._acked()
            elif mid in self.other_mids:
                self.other_mids.discard(mid)
            else:
                self.early.add(mid)

    def _on_message(self, msg) -> None:
        try:
            command = parse_json(msg.payload.decode("utf-8"))
            if not isinstance(command, dict) or command.get("command") not in COMMANDS:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            self.reply({}, {"ok": False, "error": "expected {\"command\": \"reset\" or "
                                                  "\"stats\", \"id\": ...}"})
            return
        self.inbox.append((command, self.reply))

    def _status(self, state: str) -> str:
        return json_text({"state": state, **self.identity, **self.counters(),
                          "seconds": round(time.monotonic() - self.started, 1)})


def open(url, manifest) -> MqttSink:  # noqa: A001
    return MqttSink(url, manifest)
