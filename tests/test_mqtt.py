"""The mqtt: sink and source against a real mosquitto on the loopback address (started here,
on a free port, with persistence), a subscriber that checks every record, and a broker restart
in the middle of a stream."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BUNDLED_MODEL, ROOT, assert_one_line_error, run_cli, user_env

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
try:
    import paho.mqtt.client as mqtt
except ImportError:  # pragma: no cover - the test extra installs it
    mqtt = None
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or mqtt is None,
    reason="needs the mosquitto broker (make test installs it from Debian: apt-get install "
           "mosquitto) and paho-mqtt (the mqtt extra)")

RECORDING = BUNDLED_MODEL / "recording.csv"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto of our own: loopback only, persistent sessions kept across restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"persistence true\npersistence_location {folder}/\n"
                             "max_queued_messages 100000\nuser root\n"
                             f"log_dest file {folder}/mosquitto.log\n"
                             # the defaults, and each subscription (wait_subscribed reads it)
                             + "".join(f"log_type {t}\n" for t in
                                       ("error", "warning", "notice", "information",
                                        "subscribe")))
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {(self.folder / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop writes the persistence file
            self.proc.wait(10)

    def wait_subscribed(self, *topics: str, timeout: float = 20) -> None:
        """Until the broker has logged a subscription to each of ``topics`` (a client's
        subscription takes longer on a loaded machine than any fixed sleep)."""
        log, deadline = self.folder / "mosquitto.log", time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            subscribed = {ln.rsplit(" ", 1)[-1] for ln in lines
                          if re.fullmatch(r"\d+: \S+ [012] \S+", ln)}
            if subscribed.issuperset(topics):
                return
            time.sleep(0.05)
        raise AssertionError(f"no subscription to {topics} within {timeout} s")

    def url(self, topic: str, **keys) -> str:
        query = "&".join(f"{k}={v}" for k, v in keys.items())
        return f"mqtt://127.0.0.1:{self.port}/{topic}" + (f"?{query}" if query else "")


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A dashboard's view: a persistent session (QoS 1), every message kept, reconnecting."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=False)
        c.reconnect_delay_set(0.2, 1.0)
        c.on_connect = lambda *a: (c.subscribe(topic, qos=1), self.ready.set())
        c.on_message = self._on_message
        c.connect_async("127.0.0.1", broker.port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "the subscriber could not connect"
        broker.wait_subscribed(topic)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(msg.payload)
        except (ValueError, RecursionError):  # a command we sent ourselves, say
            body = msg.payload.decode("utf-8", "replace")
        with self.lock:
            self.messages.append((msg.topic, body, msg.retain))

    def on(self, topic: str) -> list:
        with self.lock:
            return [m for t, m, _ in self.messages if t == topic]

    def wait_for(self, topic: str, count: int, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.on(topic)) < count:
            time.sleep(0.05)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _run(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "wavedge.cli", "run", str(BUNDLED_MODEL),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=user_env(), **popen)


def test_every_result_reaches_a_subscriber_with_model_board_and_step(broker):
    sub = Subscriber(broker, "fleet/b1/#")
    before = time.time()
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                   "--sink", broker.url("fleet/b1", board="b1", host_time=1), "--limit", 500)
    assert proc.returncode == 0, proc.stderr
    rows = sub.wait_for("fleet/b1", 500)
    sub.close()
    # host_time=1: the board's clock as each result was made (a sensor's own has none)
    assert before <= rows[0]["host_time"] <= rows[-1]["host_time"] <= time.time()
    assert [r["seq"] for r in rows] == list(range(500))
    assert [r["step"] for r in rows] == list(range(500))
    assert {r["model"] for r in rows} == {"wave_rnn-basic_motions"} and \
        {r["board"] for r in rows} == {"b1"}
    assert {"label", "score", "class_id", "truth"} <= set(rows[0])
    # the same results as the jsonl sink gives for the same samples
    local = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                    "--sink", "jsonl:-", "--limit", 500)
    assert [json.loads(ln)["label"] for ln in local.stdout.splitlines()] == \
        [r["label"] for r in rows]
    assert "500 results, 500 delivered" in proc.stderr and "0 dropped" in proc.stderr
    status = sub.on("fleet/b1/status")
    assert status[0]["state"] == "online" and status[-1]["state"] == "stopped"
    assert status[-1]["results"] == 500 and status[-1]["model"] == "wave_rnn-basic_motions"


def test_the_retained_status_greets_a_late_subscriber(broker):
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                   "--sink", broker.url("fleet/b2", board="b2"), "--limit", 50)
    assert proc.returncode == 0, proc.stderr
    late = Subscriber(broker, "fleet/b2/status", client_id="late")
    status = late.wait_for("fleet/b2/status", 1)
    late.close()
    assert status[-1]["state"] == "stopped" and status[-1]["delivered"] == 50


def test_a_broker_restart_mid_stream_loses_nothing(broker):
    """Every result accepted while the broker was up or queued while it was down reaches the
    subscriber; at QoS 1 some may arrive twice, each carries its seq (dropped from a full
    queue: none, the queue holds the whole outage)."""
    sub = Subscriber(broker, "fleet/b3")
    n = 1500
    proc = _run("--source", f"replay:{RECORDING}?rate=300", "--limit", n,
                "--sink", broker.url("fleet/b3", board="b3"))
    assert len(sub.wait_for("fleet/b3", 200)) >= 200
    broker.stop()
    time.sleep(1.5)  # about 450 results produced while the broker is gone
    broker.start()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = sub.wait_for("fleet/b3", n, timeout=30)
    sub.close()
    seqs = [r["seq"] for r in rows]
    assert sorted(set(seqs)) == list(range(n)), f"missing: {sorted(set(range(n)) - set(seqs))[:10]}"
    assert "1 disconnects" in err and "0 dropped from a full queue" in err, err
    assert "0 undelivered at close" in err, err


def test_a_connack_before_the_client_is_held_loses_nothing(broker, monkeypatch):
    """On a loaded machine the broker can answer before the sink or source holds its client
    (the starting thread is descheduled; here it sleeps 0.5 s once the network thread runs).
    The sink still says it is online and takes commands; the source still subscribes."""
    from wavedge.runtime import load_model, open_sink, open_source

    sub = Subscriber(broker, "fleet/b10/#")
    loop_start = mqtt.Client.loop_start
    monkeypatch.setattr(mqtt.Client, "loop_start",
                        lambda c: (loop_start(c), time.sleep(0.5))[0])
    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    manifest = load_model(BUNDLED_MODEL).manifest
    sink = open_sink(broker.url("fleet/b10", board="b10"), manifest)
    source = open_source(broker.url("fleet/b10/samples"), manifest)
    try:
        broker.wait_subscribed("fleet/b10/command", "fleet/b10/samples")
        assert sub.wait_for("fleet/b10/status", 1, timeout=10)[0]["state"] == "online"
        sub.client.publish("fleet/b10/command", json.dumps({"command": "stats", "id": 1}), qos=1)
        sub.client.publish("fleet/b10/samples", "1,2,3,4,5,6", qos=1)
        assert source.inbox.queue.get(timeout=10) == b"1,2,3,4,5,6"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not sink.inbox:
            time.sleep(0.05)
        assert sink.inbox and sink.inbox[0][0]["command"] == "stats"
        assert died == []
    finally:
        sink.close()
        source.close()
        sub.close()


def test_a_full_queue_drops_the_oldest_and_counts_them_without_a_busy_loop(broker):
    import resource

    broker.stop()  # the broker is down for the whole run
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                   "--sink", broker.url("fleet/b4", queue=100), "--limit", 300, timeout_s=60)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - t0
    # the whole run ran, then ended in an error: none of it reached the broker (it had been 0)
    assert proc.returncode == 1 and proc.stderr.endswith(
        "none of the 300 results reached the broker (never connected: no answer)\n"), \
        proc.stderr
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert wall > 5 and cpu < wall / 2, (cpu, wall)  # it waited 5 s for the broker, idly
    assert "300 results, 0 delivered" in proc.stderr
    assert "200 dropped from a full queue (100)" in proc.stderr
    assert "100 undelivered at close" in proc.stderr


def test_the_last_will_says_offline_when_a_board_vanishes(broker):
    sub = Subscriber(broker, "fleet/b9/status")
    proc = _run("--source", f"replay:{RECORDING}?rate=100", "--sink",
                broker.url("fleet/b9", board="b9", keepalive=5))
    assert sub.wait_for("fleet/b9/status", 1)[0]["state"] == "online"
    proc.kill()  # no DISCONNECT packet: the broker publishes the will (a dead link: after 1.5 keep-alives)
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sub.on("fleet/b9/status")[-1]["state"] != "offline":
        time.sleep(0.1)
    last = sub.on("fleet/b9/status")[-1]
    sub.close()
    assert last["state"] == "offline" and last["board"] == "b9"


def test_commands_reset_and_stats_are_answered_on_the_reply_topic(broker):
    sub = Subscriber(broker, "fleet/b5/#")
    proc = _run("--source", f"replay:{RECORDING}?rate=200", "--limit", 600,
                "--sink", broker.url("fleet/b5", board="b5"))
    sub.wait_for("fleet/b5", 50)
    pub = sub.client
    pub.publish("fleet/b5/command", json.dumps({"command": "stats", "id": 7}), qos=1)
    pub.publish("fleet/b5/command", json.dumps({"command": "reset", "id": "r1"}), qos=1)
    pub.publish("fleet/b5/command", "reboot please", qos=1)
    replies = sub.wait_for("fleet/b5/reply", 3)
    _, err = proc.communicate(timeout=60)
    sub.close()
    by_id = {r.get("id"): r for r in replies}
    assert by_id[7]["ok"] and by_id[7]["samples"] > 0 and by_id[7]["sink"]["results"] > 0
    assert by_id["r1"]["ok"] and by_id["r1"]["command"] == "reset"
    assert by_id[None]["ok"] is False and "command" in by_id[None]["error"]
    assert "commands: reset 1, stats 1" in err, err


def test_a_message_nested_too_deeply_for_json_is_a_bad_one_not_the_end_of_the_run(broker):
    """100,000 brackets on the sample topic ended the run with a RecursionError traceback, and
    on the command topic killed the sink's network thread (no result delivered after it)."""
    sub = Subscriber(broker, "fleet/b11/#")
    proc = _run("--source", broker.url("fleet/b11/samples", idle=2), "--sink",
                broker.url("fleet/b11"))
    broker.wait_subscribed("fleet/b11/samples", "fleet/b11/command")
    deep = "[" * 100_000 + "]" * 100_000
    row = ",".join(RECORDING.read_text().splitlines()[1].split(",")[2:])
    for topic, body in (("samples", row), ("samples", deep), ("command", deep),
                        ("samples", row), ("command", json.dumps({"command": "stats", "id": 3}))):
        sub.client.publish(f"fleet/b11/{topic}", body, qos=1)
    replies = sub.wait_for("fleet/b11/reply", 2)
    _, err = proc.communicate(timeout=60)
    sub.close()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "dropped: bad_line 1" in err and "2 results, 2 delivered" in err, err
    # the two topics reach the run through two clients, so stats may come before any sample
    assert [r["ok"] for r in replies] == [False, True] and "samples" in replies[1]


@pytest.mark.parametrize("sensors", [1, 2])
def test_commands_to_a_board_whose_sensor_went_quiet_are_answered_while_it_waits(broker,
                                                                                  sensors):
    """Commands were taken one per sample: three sent after the last sample were never
    answered, then answered only at the run's end. Now they are answered while the run
    waits for its next sample, a reset too; one sensor or several (a tick's wait)."""
    sub = Subscriber(broker, "fleet/b12/#")
    topics = [f"fleet/b12/samples{k}" for k in range(sensors)]
    proc = _run(*(a for t in topics for a in ("--source", broker.url(t, idle=120))),
                "--sink", broker.url("fleet/b12"))
    broker.wait_subscribed(*topics, "fleet/b12/command")
    for t in topics:
        sub.client.publish(t, ",".join(["0.5"] * 6), qos=1)
    assert len(sub.wait_for("fleet/b12", sensors)) == sensors
    for k in range(3):
        sub.client.publish("fleet/b12/command", json.dumps({"command": "stats", "id": k}), qos=1)
    sub.client.publish("fleet/b12/command", json.dumps({"command": "reset", "id": 3}), qos=1)
    replies = sub.wait_for("fleet/b12/reply", 4)
    running = proc.poll() is None  # no sample came since: the run is waiting for one
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    sub.close()
    assert running and proc.returncode == 0, err
    assert sorted(r["id"] for r in replies) == [0, 1, 2, 3], replies
    assert all(r["samples"] == sensors for r in replies if r["command"] == "stats")
    assert "commands: reset 1, stats 3" in err, err


def test_stats_of_a_run_of_several_sensors_give_each_streams_samples(broker):
    sub = Subscriber(broker, "fleet/b8/#")
    proc = _run("--source", f"replay:{RECORDING}?rate=200&limit=400", "--source",
                f"replay:{RECORDING}?rate=100&limit=200", "--sink", broker.url("fleet/b8"))
    sub.wait_for("fleet/b8", 60)
    sub.client.publish("fleet/b8/command", json.dumps({"command": "stats", "id": 1}), qos=1)
    reply = sub.wait_for("fleet/b8/reply", 1)[0]
    _, err = proc.communicate(timeout=60)
    sub.close()
    assert proc.returncode == 0, err
    assert reply["ok"] and len(reply["streams"]) == 2 and sum(reply["streams"]) == \
        reply["samples"] and reply["streams"][0] > reply["streams"][1] > 0


def test_the_mqtt_source_streams_published_samples_like_a_replay(broker, tmp_path):
    lines = RECORDING.read_text().splitlines()
    header, rows = lines[0], lines[1:201]
    out = tmp_path / "from_mqtt.jsonl"
    proc = _run("--source", broker.url("fleet/b6/samples", idle=2), "--sink", f"jsonl:{out}")
    broker.wait_subscribed("fleet/b6/samples")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    names = header.split(",")  # sequence, label, then the six channels
    for k, row in enumerate(rows):
        if k % 2:  # half as JSON objects keyed by channel, half as CSV lines
            fields = dict(zip(names, row.split(",")))
            c.publish("fleet/b6/samples", json.dumps(
                {ch: float(fields[ch]) for ch in names[2:]}), qos=1)
        else:
            c.publish("fleet/b6/samples", ",".join(row.split(",")[2:]), qos=1)
    c.loop_stop()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = [json.loads(ln)["label"] for ln in out.read_text().splitlines()]
    want = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max", "--sink",
                   "jsonl:-", "--limit", 200).stdout.splitlines()
    assert got == [json.loads(ln)["label"] for ln in want]
    assert "200 messages, 0 dropped" in err


def test_a_sensor_publishing_at_another_rate_is_said_and_a_kept_sessions_backlog_is_not(
        broker):
    """A sensor publishing at 5x the model's rate is said, as a serial board's is; the
    backlog a broker hands over on reconnect (the messages kept for the session while the
    board's runtime was restarting) comes at once and is not read as a fast sensor."""
    import dataclasses

    from wavedge.runtime import load_model, open_sink, open_source
    from wavedge.runtime.loop import run

    model = load_model(BUNDLED_MODEL)
    raw = model.manifest.raw  # the bundled model at 50 Hz: a window of samples is 1.3 s
    at_50 = dataclasses.replace(model.manifest, raw={**raw, "signature": {
        **raw["signature"], "sample_rate_hz": 50.0}})
    rows = [",".join(r.split(",")[2:]) for r in RECORDING.read_text().splitlines()[1:]]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="imu")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()

    def arrivals(topic, backlog, hz, seconds):
        url = broker.url(topic, idle=1, client_id=f"runtime-{topic}")
        if backlog:  # subscribed once, then away while the sensor published
            first = open_source(url, at_50)
            broker.wait_subscribed(topic)
            first.close()
            for row in rows[:backlog]:
                c.publish(topic, row, qos=1).wait_for_publish(5)
        source = open_source(url, at_50)
        broker.wait_subscribed(topic)

        def sensor():
            due = time.monotonic()
            for row in rows[backlog:backlog + int(hz * seconds)]:
                c.publish(topic, row, qos=1)
                due += 1 / hz
                time.sleep(max(0.0, due - time.monotonic()))

        threading.Thread(target=sensor, daemon=True).start()
        summary = run(model.stream(), source, open_sink("null:", at_50), warn=lambda m: None)
        return source.table.arrival_hz, [n for n in summary.lines() if "arrived at about" in n]

    hz, said = arrivals("imu/kept", 1500, 50, 7)
    assert hz == pytest.approx(50, rel=0.2) and said == []  # timed, and found the model's
    hz, said = arrivals("imu/fast", 0, 250, 5)
    assert len(said) == 1 and "the model's rate is 50 Hz" in said[0], said
    c.loop_stop()


def test_two_sensors_topics_run_as_one_group_each_like_its_replay(broker, tmp_path):
    lines = RECORDING.read_text().splitlines()
    rows = {"imu1": lines[1:121], "imu2": lines[2001:2081]}
    out = tmp_path / "two.jsonl"
    proc = _run("--source", broker.url("fleet/b7/imu1", idle=2), "--source",
                broker.url("fleet/b7/imu2", idle=2), "--sink", f"jsonl:{out}",
                "--group", "always")
    broker.wait_subscribed("fleet/b7/imu1", "fleet/b7/imu2")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensors")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for a, b in zip(rows["imu1"], rows["imu2"] + [None] * 40):  # interleaved, one ends first
        c.publish("fleet/b7/imu1", ",".join(a.split(",")[2:]), qos=1)
        if b is not None:
            c.publish("fleet/b7/imu2", ",".join(b.split(",")[2:]), qos=1)
    c.loop_stop()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "2 streams, one call of the batch-8 step graph per tick" in err
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    for k, name in enumerate(("imu1", "imu2")):
        csv = tmp_path / f"{name}.csv"
        csv.write_text("\n".join([lines[0], *rows[name]]) + "\n")
        want = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{csv}?rate=max", "--sink",
                       "jsonl:-").stdout.splitlines()
        assert [r["label"] for r in recs if r["stream"] == k] == \
            [json.loads(ln)["label"] for ln in want]


def test_credentials_never_on_the_command_line_and_env_file_checked(tmp_path):
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "mqtt://me:secret@host/t"),
                          "never go on the command line", "env=FILE")
    bad = tmp_path / "mqtt.env"
    bad.write_text("PASSWORD=x\n")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", f"mqtt://host/t?env={bad}"),
                          "line 1", "WAVEDGE_MQTT_USERNAME")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "mqtt://host"), "TOPIC")
    assert_one_line_error(run_cli("run", BUNDLED_MODEL, "--sink", "mqtt://host/a/#"), "TOPIC")


def test_a_source_whose_broker_is_not_reached_says_so_once(tmp_path):
    """Silent, a wrong host or port looked like a quiet topic; the client keeps trying (a
    broker may come up after the board), as the sink's does."""
    where = f"mqtt://127.0.0.1:{_free_port()}/fleet/in"  # nothing listens there
    proc = run_cli("run", BUNDLED_MODEL, "--sink", "null:", "--source", f"{where}?idle=6.5",
                   timeout_s=60)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [f"wavedge: warning: mqtt: {where} not reached yet (no answer); "
                        "waiting for it"], proc.stderr


def test_a_password_protected_broker_takes_the_env_files_credentials(tmp_path):
    b = Broker(tmp_path)
    pw = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c",
                    str(pw), "board", "s3cret"], check=True, capture_output=True)
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true",
                                                 f"allow_anonymous false\npassword_file {pw}"))
    b.start()
    try:
        env = tmp_path / "mqtt.env"
        env.write_text("# the board's broker account\nWAVEDGE_MQTT_USERNAME=board\n"
                       "WAVEDGE_MQTT_PASSWORD='s3cret'\n")
        src = f"replay:{RECORDING}?rate=max"
        ok = run_cli("run", BUNDLED_MODEL, "--source", src, "--limit", 20,
                     "--sink", b.url("fleet/b7", env=env))
        assert ok.returncode == 0 and "20 delivered" in ok.stderr, ok.stderr
        env.write_text("WAVEDGE_MQTT_USERNAME=board\nWAVEDGE_MQTT_PASSWORD=wrong\n")
        refused = run_cli("run", BUNDLED_MODEL, "--source", src, "--limit", 20,
                          "--sink", b.url("fleet/b7", env=env), timeout_s=60)
        assert "0 delivered" in refused.stderr and "refused" in refused.stderr, refused.stderr
        assert refused.returncode == 1 and "none of the 20 results reached the broker " \
            "(never connected: refused: " in refused.stderr, refused.stderr
    finally:
        b.stop()


def test_the_dashboard_example_plots_two_boards(broker, tmp_path):
    pytest.importorskip("matplotlib", reason="the dashboard plots with matplotlib (the bench "
                                              "extra), which this install has not")
    png = tmp_path / "live.png"
    dash = subprocess.Popen([sys.executable, str(ROOT / "examples" / "mqtt_dashboard.py"),
                             "--port", str(broker.port), "--topic", "fleet/+", "--count", "400",
                             "--png", str(png)], stdout=subprocess.PIPE, text=True,
                            env=user_env())
    broker.wait_subscribed("fleet/+")
    for board in ("pi-1", "pi-2"):
        proc = run_cli("run", BUNDLED_MODEL, "--source", f"replay:{RECORDING}?rate=max",
                       "--sink", broker.url(f"fleet/{board}", board=board), "--limit", 200)
        assert proc.returncode == 0, proc.stderr
    out, _ = dash.communicate(timeout=90)
    assert dash.returncode == 0
    assert "pi-1: 200 results" in out and "pi-2: 200 results" in out, out
    assert png.stat().st_size > 5000


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca, key, csr, crt = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr",
                                                      "srv.pem"))
    ssl = shutil.which("openssl")
    if ssl is None:
        pytest.skip("needs openssl to make a throwaway CA")
    run = lambda *a: subprocess.run([ssl, *map(str, a)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", ca_key, "-out", ca)
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key,
        "-out", csr)
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", crt)
    return ca, crt, key


def test_mqtts_checks_the_brokers_certificate_against_the_env_files_ca(tmp_path):
    ca, crt, key = _tls_files(tmp_path)
    b = Broker(tmp_path)
    b.conf.write_text(b.conf.read_text() + f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n")
    b.start()
    try:
        env = tmp_path / "mqtt.env"
        env.write_text(f"WAVEDGE_MQTT_CA_CERTS={ca}\n")
        url = f"mqtts://127.0.0.1:{b.port}/fleet/b8?env={env}"
        src = f"replay:{RECORDING}?rate=max"
        ok = run_cli("run", BUNDLED_MODEL, "--source", src, "--limit", 20, "--sink", url)
        assert ok.returncode == 0 and "20 delivered" in ok.stderr, ok.stderr
        plain = run_cli("run", BUNDLED_MODEL, "--source", src, "--limit", 20, "--sink",
                        f"mqtts://127.0.0.1:{b.port}/fleet/b8", timeout_s=60)  # no CA given
        assert "0 delivered" in plain.stderr and plain.returncode == 1, plain.stderr
    finally:
        b.stop()
