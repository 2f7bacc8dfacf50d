"""What the ``mqtt:`` sink and source share: the broker's address from the URL, credentials
and TLS from an environment file (never the command line), and a paho-mqtt client that
reconnects by itself with a growing delay (no busy loop while the broker is gone).

``mqtt://HOST[:PORT]/TOPIC`` (1883) or ``mqtts://HOST[:PORT]/TOPIC`` (TLS, 8883). Keys:
``qos`` (0, 1, 2; default 1), ``client_id`` (default ``wavedge-<board>`` plus the role; a
source's also a hash of its topic),
``board`` (default the host name), ``keepalive`` (seconds, 30), ``env`` (a file of
``KEY=VALUE`` lines; default: the process environment):

- ``WAVEDGE_MQTT_USERNAME``, ``WAVEDGE_MQTT_PASSWORD``
- ``WAVEDGE_MQTT_CA_CERTS`` (the broker's CA, PEM), ``WAVEDGE_MQTT_CERTFILE`` and
  ``WAVEDGE_MQTT_KEYFILE`` (a client certificate), for ``mqtts:``
"""

from __future__ import annotations

import socket
import sys
import zlib
from dataclasses import dataclass

from wavedge.errors import InputError, SinkError
from wavedge.runtime.urls import env_secrets

RECONNECT_DELAY_S = (0.5, 8.0)  # paho doubles the wait between attempts within this range
WARN_AFTER_S = 5.0  # a broker not reached this long after start gets one warning line
ENV_KEYS = ("WAVEDGE_MQTT_USERNAME", "WAVEDGE_MQTT_PASSWORD", "WAVEDGE_MQTT_CA_CERTS",
            "WAVEDGE_MQTT_CERTFILE", "WAVEDGE_MQTT_KEYFILE")
COMMON_PARAMS = ("qos", "client_id", "board", "keepalive", "env")
FILE_PARAMS = ("env",)  # keys whose value is a file (wavedge service wants it absolute)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    topic: str
    tls: bool
    qos: int
    board: str
    client_id: str
    keepalive: int
    secrets: dict

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


def parse_broker(url, role: str) -> Broker:
    """The broker, topic and options of an ``mqtt:``/``mqtts:`` URL; ``InputError`` for a
    missing topic or credentials written into the URL."""
    netloc, _, topic = url.path.partition("/")
    if "@" in netloc:
        raise InputError(f"{url.scheme}: credentials never go on the command line (they show "
                         "in ps and shell history); put WAVEDGE_MQTT_USERNAME and "
                         "WAVEDGE_MQTT_PASSWORD in a file and give ?env=FILE")
    if not netloc or not topic or any(c in topic for c in "#+"):
        raise InputError(f"{url.text}: expected {url.scheme}://HOST[:PORT]/TOPIC (a topic "
                         "without wildcards), e.g. mqtt://localhost/fleet/board1")
    host, _, port_text = netloc.rpartition(":") if netloc.count(":") == 1 else (netloc, "", "")
    tls = url.scheme == "mqtts"
    try:
        port = int(port_text) if port_text else (8883 if tls else 1883)
    except ValueError:
        raise InputError(f"{url.text}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise InputError(f"{url.text}: port {port} is outside 1-65535")
    return Broker(host=host, port=port, topic=topic, tls=tls, qos=url.get("qos", 1, int, (0, 2)),
                  board=_board(url), client_id=client_id(url, role),
                  keepalive=url.get("keepalive", 30, int, (5, 3600)),
                  secrets=env_secrets(url.get("env"), url.text, ENV_KEYS))


def _board(url) -> str:
    return url.get("board", socket.gethostname())


def client_id(url, role: str) -> str:
    """The URL's ``client_id``, else one per board and role; a source's also per topic,
    since a run may read several topics and the broker would hand the session (and its
    queued messages) from one connection with an id to the next. Stable, so a persistent
    session survives restarts."""
    topic, board = url.path.partition("/")[2], _board(url)
    default = f"wavedge-{board}-{role}" if role != "source" else \
        f"wavedge-{board}-source-{zlib.crc32(topic.encode()) & 0xFFFFFF:06x}"
    return url.get("client_id", default)


def client(broker: Broker, clean: bool, on_connect, on_disconnect, on_message=None,
           will: tuple[str, str] | None = None, on_publish=None):
    """A paho client for ``broker``, not started yet: hold it, then ``start`` it. ``clean``
    False keeps the broker-side session (subscriptions, QoS 1 messages queued while we are
    away)."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise SinkError("mqtt: needs paho-mqtt (pip install 'wavedge[mqtt]')") from None
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                    clean_session=clean, protocol=mqtt.MQTTv311)
    s = broker.secrets
    if s.get("WAVEDGE_MQTT_USERNAME"):
        c.username_pw_set(s["WAVEDGE_MQTT_USERNAME"], s.get("WAVEDGE_MQTT_PASSWORD"))
    if broker.tls:
        try:
            c.tls_set(ca_certs=s.get("WAVEDGE_MQTT_CA_CERTS"),
                      certfile=s.get("WAVEDGE_MQTT_CERTFILE"), keyfile=s.get("WAVEDGE_MQTT_KEYFILE"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{broker.where}: TLS files: {exc}") from None
    if will is not None:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.reconnect_delay_set(*RECONNECT_DELAY_S)
    c.on_connect = lambda cl, userdata, flags, reason, props: on_connect(reason)
    c.on_disconnect = lambda cl, userdata, flags, reason, props: on_disconnect(reason)
    if on_message is not None:
        c.on_message = lambda cl, userdata, msg: on_message(msg)
    if on_publish is not None:  # before the network thread starts: no acknowledgement unseen
        c.on_publish = lambda cl, userdata, mid, reason, props: on_publish(mid)
    return c


def start(c, broker: Broker) -> None:
    """Run ``c``'s network thread, connecting in the background: a broker that is not up yet
    is retried, not an error. Its callbacks may run before this returns, so the owner holds
    ``c`` first: started inside ``client``, a loaded machine answered the CONNACK before the
    sink had its client, the callback raised, paho's thread died and nothing was delivered."""
    c.connect_async(broker.host, broker.port, keepalive=broker.keepalive)
    c.loop_start()


def warn_unreached(broker: Broker, problem: str | None, meanwhile: str) -> None:
    """The one warning for a broker not reached ``WARN_AFTER_S`` after start (the client
    keeps trying: a broker may come up after the board)."""
    print(f"wavedge: warning: mqtt: {broker.where} not reached yet ({problem or 'no answer'}); "
          f"{meanwhile}", file=sys.stderr)
