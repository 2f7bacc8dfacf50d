"""A small live dashboard for a fleet: every board's predictions from an MQTT broker, plotted.

    python examples/mqtt_dashboard.py --broker localhost --topic 'fleet/+'          # a window
    python examples/mqtt_dashboard.py --topic 'fleet/+' --count 500 --png live.png  # headless

Subscribes to the results that ``wavedge run --sink mqtt://HOST/fleet/BOARD`` publishes (and
their retained ``.../status``), drops repeated ``seq`` (QoS 1 is at least once), and draws per
board the predicted class over the steps with its score. Needs paho-mqtt and matplotlib.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict, deque

import paho.mqtt.client as mqtt

KEEP = 2000  # points per board on the plot


class Fleet:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.points = defaultdict(lambda: deque(maxlen=KEEP))  # board -> (step, label, score)
        self.seen = defaultdict(set)  # board -> seq received (for duplicates)
        self.status: dict = {}
        self.total = self.duplicates = 0

    def take(self, topic: str, body: dict) -> None:
        with self.lock:
            if topic.endswith("/status"):
                self.status[body.get("board", topic)] = body
                return
            board, seq = body.get("board", topic), body.get("seq")
            if seq in self.seen[board]:
                self.duplicates += 1
                return
            self.seen[board].add(seq)
            self.total += 1
            self.points[board].append((body["step"], body.get("label"), body.get("score")))


def subscribe(fleet: Fleet, host: str, port: int, topic: str):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wavedge-dashboard",
                    clean_session=False)

    def on_message(client, userdata, msg):
        try:
            fleet.take(msg.topic, json.loads(msg.payload))
        except (ValueError, KeyError):
            pass  # not a wavedge record

    c.on_connect = lambda cl, *a: cl.subscribe([(topic, 1), (topic + "/status", 1)])
    c.on_message = on_message
    c.reconnect_delay_set(0.5, 8)
    c.connect_async(host, port)
    c.loop_start()
    return c


def draw(fleet: Fleet, fig) -> None:
    fig.clf()
    with fleet.lock:
        boards = sorted(fleet.points)
        data = {b: list(fleet.points[b]) for b in boards}
    labels = sorted({p[1] for pts in data.values() for p in pts if p[1] is not None})
    for k, board in enumerate(boards or ["(waiting for results)"], 1):
        ax = fig.add_subplot(max(len(boards), 1), 1, k)
        pts = data.get(board, [])
        if pts:
            steps = [p[0] for p in pts]
            ax.scatter(steps, [labels.index(p[1]) for p in pts], c=[p[2] for p in pts],
                       cmap="viridis", vmin=0, vmax=1, s=6)
            ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"{board}: predicted class by step (colour: score)", fontsize=9)
    fig.tight_layout()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--topic", default="fleet/+")
    ap.add_argument("--count", type=int, help="stop after this many results (headless)")
    ap.add_argument("--png", help="save the plot here instead of opening a window")
    ap.add_argument("--timeout", type=float, default=60.0, help="headless: give up after (s)")
    args = ap.parse_args()
    import matplotlib

    if args.png:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fleet = Fleet()
    client = subscribe(fleet, args.broker, args.port, args.topic)
    fig = plt.figure(figsize=(8, 4))
    if args.png:
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and fleet.total < (args.count or 1):
            time.sleep(0.1)
        draw(fleet, fig)
        fig.savefig(args.png, dpi=100)
    else:
        while plt.fignum_exists(fig.number):
            draw(fleet, fig)
            plt.pause(1.0)
    client.disconnect()
    client.loop_stop()
    for board in sorted(fleet.points):
        st = fleet.status.get(board, {})
        print(f"{board}: {len(fleet.seen[board])} results, status {st.get('state', '?')}, "
              f"model {st.get('model', '?')}")
    print(f"{fleet.total} results, {fleet.duplicates} duplicates dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
