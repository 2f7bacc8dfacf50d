"""The host link and the `link:` sink against the stand-in microcontroller (the C library,
compiled here with sanitizers) on a real pseudo-terminal."""

from __future__ import annotations

import pytest

from conftest import BUNDLED_MODEL, assert_one_line_error, run_cli, sigint_inside_a_lock_wait
from wavedge.firmware_bridge.link import Link, LinkError
from wavedge.firmware_bridge.messages import SCHEMA_HASH, Ack, Command, Hello
from wavedge.firmware_bridge.standin import StandIn, build
from wavedge.runtime import load_model, open_sink, open_source
from wavedge.runtime.loop import run


@pytest.fixture(scope="module")
def standin_exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("standin"), sanitize=True)


def test_handshake_and_command_ack(standin_exe):
    board = StandIn(standin_exe, boot_id=7)
    with Link(board.port) as link:
        hello = link.handshake(boot_id=1)
        assert hello == Hello(1, SCHEMA_HASH, 240, 7)
        seq = link.send(Command(3, b"\x01"))
        ack = link.receive(2.0, Ack)
        assert ack == Ack(seq, 0)
        assert link.stats.seq_gaps == 0 and link.stats.write_timeouts == 0
    assert board.close() == 0
    assert board.lines[-1].startswith("STATS frames=2 crc=0")


def test_results_reach_the_board_intact(standin_exe):
    model = load_model(BUNDLED_MODEL)
    rec = BUNDLED_MODEL / "recording.csv"
    board = StandIn(standin_exe)
    source = open_source(f"replay:{rec}?rate=max&limit=300", model.manifest)
    # a queue that holds the whole run: results posted before the board's HELLO wait there,
    # and a stand-in slow to start (a loaded machine) must not turn the bound into a loss here
    sink = open_sink(f"link:{board.port}?vector=1&queue=1024", model.manifest)
    summary = run(model.stream(), source, sink)
    assert board.close() == 0
    got = [ln for ln in board.lines if ln.startswith("RESULT")]
    assert summary.samples == 300 and len(got) == 300
    x = [s.values for s in open_source(f"replay:{rec}?rate=max&limit=300", model.manifest)]
    expected = model.stream().push_chunk(x).class_ids
    assert [int(ln.split("class=")[1].split()[0]) for ln in got] == list(expected)
    assert [int(ln.split("step=")[1].split()[0]) for ln in got] == list(range(300))
    assert all("vector=4" in ln for ln in got)


def test_a_silent_port_fails_the_handshake():
    """A port with nothing answering (a TCP peer that never speaks): LinkError, no hang."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()
    with Link(f"socket://{host}:{port}") as link:
        conn, _ = server.accept()
        with pytest.raises(LinkError, match=r"no HELLO from the board within 0.3 s"):
            link.handshake(timeout_s=0.3)
        conn.close()
    server.close()


def test_a_board_with_another_schema_is_refused():
    """loop:// echoes our HELLO; with a different schema hash in it, the handshake refuses."""
    from wavedge.firmware_bridge.framing import Frame, encode_frame

    with Link("loop://") as link:
        link.port.write(encode_frame(Frame(1, Hello(1, 0x12345678, 240, 9).pack(), seq=0)))
        with pytest.raises(LinkError, match="schema hash 0x12345678 is not ours"):
            link.handshake(timeout_s=1.0)


def test_cli_run_to_a_missing_port_is_one_line():
    proc = run_cli("run", BUNDLED_MODEL, "--sink", "link:/dev/nonexistent-tty", "--limit", "5")
    assert_one_line_error(proc, "link /dev/nonexistent-tty: cannot open (No such file or "
                                "directory)")


def _wait(cond, timeout_s=3.0):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.01)
    return None


def test_unplug_replug_and_reboot_recover_by_themselves(standin_exe, tmp_path):
    """The board's port vanishes (its pseudo-terminal closed), comes back as a new one behind
    the same stable path (as /dev/serial/by-id does) with a new boot id: the link reopens it,
    handshakes again, adopts the new boot id, and results flow again - within a second, without
    a busy loop while the port is gone."""
    import os
    import time

    from wavedge.firmware_bridge.messages import Result

    stable = tmp_path / "ttyWAVEDGE"
    first = StandIn(standin_exe, boot_id=1)
    os.symlink(first.port, stable)
    link = Link(str(stable), retry_s=0.1)
    try:
        assert link.handshake(boot_id=5).boot_id == 1
        for i in range(5):
            assert link.send(Result(0, i, 0, 1, 0.5)) is not None
        time.sleep(0.2)
        first.proc.kill()  # unplug: the pty's master side goes away
        first.close()
        assert _wait(lambda: not link.connected) is not None
        down = time.monotonic()
        time.sleep(0.5)  # the port is gone for half a second
        assert link.send(Result(0, 99, 0, 1, 0.5)) is None  # dropped, counted, not blocking
        attempts_while_down = link.stats.reopen_attempts
        second = StandIn(standin_exe, boot_id=2)  # replug, after a reboot
        back = time.monotonic()
        os.replace(_symlink_tmp(tmp_path, second.port), stable)
        recovered = _wait(lambda: link.connected and link.board.boot_id == 2)
        assert recovered is not None and recovered - back < 1.0
        assert attempts_while_down <= (back - down) / 0.1 + 2  # paced retries, no busy loop
        assert link.stats.disconnects == 1 and link.stats.reconnects == 1
        assert link.stats.reboots == 1 and link.stats.dropped_while_down >= 1
        for i in range(5):
            assert link.send(Result(0, 100 + i, 0, 3, 0.5)) is not None
        time.sleep(0.3)
    finally:
        link.close()
    assert second.close() == 0
    got = [ln for ln in second.lines if ln.startswith("RESULT")]
    assert [int(ln.split("step=")[1].split()[0]) for ln in got] == list(range(100, 105))


def _symlink_tmp(tmp_path, target):
    import os

    tmp = tmp_path / "ttyWAVEDGE.new"
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    os.symlink(target, tmp)
    return tmp


def test_100k_frames_through_the_fault_proxy(standin_exe):
    """100,000 RESULT frames from the host's link through the fault-injecting proxy (1 % of
    bytes flipped, dropped, inserted or duplicated, plus garbage bursts) into the stand-in's C
    decoder: no corrupted frame is delivered, every loss is a gap in the sequence numbers and
    is matched by counted errors, and decoding resumes at the next intact frame."""
    from wavedge.firmware_bridge.messages import Result
    from wavedge.firmware_bridge.proxy import FaultProxy, Faults

    n = 100_000
    with FaultProxy(Faults(flip=0.004, drop=0.003, insert=0.002, duplicate=0.001, burst=0.0002,
                           seed=1), reverse=Faults()) as proxy:
        board = StandIn(standin_exe, port=proxy.board_port)
        with Link(proxy.host_port, write_timeout_s=2.0) as link:
            link.handshake(timeout_s=2.0)
            for i in range(n):
                link.send(Result(0, i, i, i % 4, (i % 1000) / 1000))
            assert link.stats.write_timeouts == 0 and link.stats.frames_out == n + 1
            _wait(lambda: proxy.counts["to_board"].bytes_in >= link.stats.frames_out * 20, 10)
            import time
            time.sleep(0.5)
    assert board.close() == 0
    got = [ln.split() for ln in board.lines if ln.startswith("RESULT")]
    steps = [int(f[3].split("=")[1]) for f in got]
    for f, step in zip(got, steps):  # every delivered frame is exactly the one sent as `step`
        assert f[1] == f"seq={(step + 1) & 0xFFFF}"  # seq 0 was the HELLO; u16 wraps
        assert f[4] == f"class={step % 4}"
        assert abs(float(f[5].split("=")[1]) - (step % 1000) / 1000) < 1e-4
    assert steps == sorted(set(steps))  # in order, no duplicates
    delivered, lost = len(got), n - len(got)
    stats = dict(kv.split("=") for kv in board.lines[-1].split()[1:])
    errors = sum(int(stats[k]) for k in ("crc", "cobs", "length", "version"))
    assert lost > 0 and errors + int(stats["overflows"]) >= lost  # every loss counted
    assert delivered > 0.6 * n  # most frames survive: decoding resumes after each fault
    faults = proxy.counts["to_board"]
    assert faults.flipped and faults.dropped and faults.inserted and faults.duplicated


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_proxy_from_the_command_line(stop):
    """It stops on Ctrl-C or SIGTERM with its counts, even started the way a script starts a
    job in the background (SIGINT inherited ignored)."""
    import signal
    import subprocess
    import sys

    ignoring = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")  # as `proxy &` does
    proc = subprocess.Popen([sys.executable, "-c", ignoring, "-m", "wavedge.firmware_bridge.proxy",
                             "--flip", "0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    host = proc.stdout.readline().split()
    board = proc.stdout.readline().split()
    assert host[0] == "host" and board[0] == "board" and host[1].startswith("/dev/")
    proc.send_signal(getattr(signal, stop))
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "to board: FaultCounts(" in err


def test_sensor_frames_from_a_board_feed_the_stream():
    """A board on a pseudo-terminal answers HELLO and sends SENSOR frames (3 samples each, and
    one with the wrong channel count); `--source link:` turns them into samples. The summary
    says what the line lost (a frame number skipped, a damaged frame): it had said nothing of
    the source's link."""
    import os
    import threading
    import tty

    import numpy as np

    from wavedge.firmware_bridge.framing import Frame, FrameDecoder, encode_frame
    from wavedge.firmware_bridge.messages import MAX_PAYLOAD, Sensor, pack

    model = load_model(BUNDLED_MODEL)
    x = [s.values for s in open_source(f"replay:{BUNDLED_MODEL / 'recording.csv'}?rate=max"
                                       "&limit=60", model.manifest)]
    master, slave = os.openpty()
    tty.setraw(slave)

    def board():
        dec = FrameDecoder()
        while True:  # wait for the host's HELLO, answer it
            frames = dec.feed(os.read(master, 256))
            if any(f.type == 1 for f in frames):
                break
        seq = 0
        os.write(master, encode_frame(Frame(*pack(Hello(1, SCHEMA_HASH, MAX_PAYLOAD, 3)), seq)))
        for i in range(0, 60, 3):
            seq += 1
            values = tuple(float(v) for v in np.concatenate(x[i:i + 3]))
            os.write(master, encode_frame(Frame(*pack(Sensor(0, i, 6, values)), seq)))
            if i == 30:  # a board misconfigured for 5 channels, once
                seq += 1
                os.write(master, encode_frame(Frame(*pack(Sensor(0, i, 5, (0.0,) * 5)), seq)))
            if i == 45:  # a frame lost on the line: its number never arrives
                seq += 1
            if i == 51:  # a frame damaged on the line: dropped by its CRC
                os.write(master, b"\x05\x01\x02\x03\x04\x00")

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    source = open_source(f"link:{os.ttyname(slave)}?timeout_s=1", model.manifest)
    sink_rows = []

    class Collect:
        def write(self, result, sample):
            sink_rows.append(result.class_id)

        def close(self):
            pass

    warnings = []
    summary = run(model.stream(), source, Collect(), warn=warnings.append)
    os.close(master)
    os.close(slave)
    assert summary.samples == 60 and summary.dropped == {"wrong_shape": 1}
    assert ("link source: 21 SENSOR frames taken; 1 gap(s) in the board's frame numbers "
            "(frames lost), 1 damaged frame(s) dropped, 0 malformed message(s), 0 dropped "
            "unread") in "\n".join(summary.lines()), summary.lines()
    assert warnings == ["step 33: sample rejected by the source: wrong_shape (a frame of 5 "
                        "channel(s), the model takes 6)"]
    assert sink_rows == list(model.stream().push_chunk(np.stack(x)).class_ids)


def test_ctrl_c_while_a_quiet_board_is_awaited_ends_with_the_summary():
    """`--source link:` waiting on a board that answered HELLO and sends nothing yet: a Ctrl-C
    landing inside the link's wait on its lock had left the lock released under its `with`
    (a traceback instead of the summary). The source now waits in slices and polls for it."""
    import os
    import threading
    import tty

    from wavedge.firmware_bridge.framing import Frame, FrameDecoder, encode_frame
    from wavedge.firmware_bridge.messages import MAX_PAYLOAD, pack

    model = load_model(BUNDLED_MODEL)
    master, slave = os.openpty()
    tty.setraw(slave)

    def board():
        dec = FrameDecoder()
        while not any(f.type == 1 for f in dec.feed(os.read(master, 256))):
            pass
        os.write(master, encode_frame(Frame(*pack(Hello(1, SCHEMA_HASH, MAX_PAYLOAD, 3)), 0)))

    threading.Thread(target=board, daemon=True).start()
    source = open_source(f"link:{os.ttyname(slave)}", model.manifest)
    with sigint_inside_a_lock_wait("receive") as fired:
        summary = run(model.stream(), source, open_sink("null:", model.manifest), signals=True)
    os.close(master)
    os.close(slave)
    assert fired and summary.interrupted and summary.stopped_by == "SIGINT"
    assert summary.error is None


def test_one_board_on_one_port_is_the_runs_sensor_and_its_results_reader(standin_exe,
                                                                          tmp_path):
    """The stand-in microcontroller (C) sends 200 samples of the recording as SENSOR frames
    and prints the RESULT frames it gets back, all on one port: `wavedge run --source
    link:PORT --sink link:PORT`. The source and the sink had each opened the port, and each
    read part of its bytes: 97 of 200 samples came through, the link reconnecting three
    times, and the run said nothing was wrong. They share one link now: every sample's result
    reaches the board, as the same samples replayed give it."""
    import csv

    rows = list(csv.reader((BUNDLED_MODEL / "recording.csv").open()))[1:201]
    samples = tmp_path / "samples.csv"
    samples.write_text("acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z\n"  # a header: skipped
                       + "".join(",".join(r[2:]) + "\n" for r in rows))
    board = StandIn(standin_exe, samples=samples, rate_hz=400)
    proc = run_cli("run", BUNDLED_MODEL, "--source", f"link:{board.port}?limit=200&timeout_s=5",
                   "--sink", f"link:{board.port}?queue=1024", timeout_s=120)
    assert board.close() == 0
    assert proc.returncode == 0 and "samples: 200 in" in proc.stderr, proc.stderr
    assert "0 disconnects, 0 reconnects" in proc.stderr, proc.stderr
    assert "SENT 200 samples" in board.lines
    got = [ln for ln in board.lines if ln.startswith("RESULT")]
    model = load_model(BUNDLED_MODEL)
    want = model.stream().push_chunk([[float(v) for v in r[2:]] for r in rows])
    assert [int(ln.split("class=")[1].split()[0]) for ln in got] == list(want.class_ids)
    assert [int(ln.split("step=")[1].split()[0]) for ln in got] == list(range(200))
    other = StandIn(standin_exe)
    mismatched = run_cli("run", BUNDLED_MODEL, "--source", f"link:{other.port}?baud=9600",
                         "--sink", f"link:{other.port}")
    other.close()
    assert_one_line_error(mismatched, f"link {other.port}: its port is open at 9600 baud "
                          "already", "give both baud=9600")


def test_a_port_read_as_lines_and_as_frames_at_once_is_refused_before_it_opens(tmp_path):
    """A board that prints CSV lines, read by serial:// while a link: sink sends it frames on
    the same port (a stable by-id name for one, the device for the other): the sink's HELLO
    went to a board that speaks lines, and the run failed with "no HELLO from the board"."""
    import os

    master, slave = os.openpty()
    device = os.ttyname(slave)
    by_id = tmp_path / "usb-Arduino_Uno-if00"
    by_id.symlink_to(device)
    try:
        proc = run_cli("run", BUNDLED_MODEL, "--source", f"serial://{by_id}", "--sink",
                       f"link:{device}")
        twice = run_cli("run", BUNDLED_MODEL, "--source", f"serial://{by_id}", "--source",
                        f"serial://{device}", "--sink", "null:")
    finally:
        os.close(master)
        os.close(slave)
    assert_one_line_error(proc, f"--sink link:{device}: {device} is also read by --source "
                          f"serial://{by_id}, and a port carries one protocol; give the board "
                          "link: both ways")
    # one port by two names as two sources: each would read part of its lines
    assert_one_line_error(twice, f"--source serial://{device}: {device} is already a source")


def test_usb_urls_find_the_device_by_vid_pid_serial():
    from serial.tools.list_ports_common import ListPortInfo

    from wavedge.firmware_bridge.link import find_usb_port, parse_usb

    def port(device, vid, pid, serial):
        p = ListPortInfo(device)
        p.vid, p.pid, p.serial_number = vid, pid, serial
        return p

    ports = [port("/dev/ttyS0", None, None, None), port("/dev/ttyACM0", 0x2341, 0x0043, "A1"),
             port("/dev/ttyACM1", 0x2341, 0x0043, "B2")]
    assert parse_usb("usb:2341:0043:B2") == (0x2341, 0x0043, "B2")
    assert parse_usb("/dev/ttyACM0") is None
    assert find_usb_port(0x2341, 0x0043, "B2", ports) == "/dev/ttyACM1"
    assert find_usb_port(0x2341, 0x0043, None, ports) == "/dev/ttyACM0"
    assert find_usb_port(0x1234, 0x0043, None, ports) is None
    with pytest.raises(LinkError, match="expected usb:VID:PID"):
        parse_usb("usb:arduino")


def test_a_usb_url_and_its_device_are_one_port(standin_exe, tmp_path, monkeypatch):
    """`--source link:usb:2341:0043 --sink link:/dev/ttyACM0` (one board named two ways) had
    opened the port twice, each link reading part of its bytes, and `--source
    serial://...` with `--sink link:usb:...` was not refused as one port read as lines and as
    frames. The OS's USB list is stood in for by pyserial's own port records (no USB device
    here); the port is a real pseudo-terminal with the C stand-in on it."""
    from serial.tools import list_ports
    from serial.tools.list_ports_common import ListPortInfo

    import os

    from wavedge.cli import _one_protocol_a_port
    from wavedge.errors import InputError
    from wavedge.firmware_bridge.link import release, shared
    from wavedge.ports import port_name

    board = StandIn(standin_exe)
    info = ListPortInfo(board.port)
    info.vid, info.pid, info.serial_number = 0x2341, 0x0043, "A1"
    monkeypatch.setattr(list_ports, "comports", lambda: [info])
    by_id = tmp_path / "usb-Arduino_Uno_A1-if00"
    by_id.symlink_to(board.port)
    try:
        assert port_name("usb:2341:0043:A1") == port_name(str(by_id)) == \
            os.path.realpath(board.port)
        assert port_name("usb:2341:0099") == "usb:2341:0099"  # not plugged in: the URL
        a = shared("usb:2341:0043")
        b = shared(str(by_id))
        assert a is b
        release(a)
        assert a.port.is_open  # the other use holds it still
        release(b)
        assert not a.port.is_open
        with pytest.raises(InputError, match="is also read by --source serial://"):
            _one_protocol_a_port([f"serial://{by_id}"], "link:usb:2341:0043")
    finally:
        board.close()


def test_a_usb_board_that_is_not_plugged_in_is_a_clear_error():
    with pytest.raises(LinkError, match="no USB serial device 0bad:f00d"):
        Link("usb:0bad:f00d")


def test_a_board_reboot_behind_a_live_port_is_adopted_and_handshaken():
    """The board resets (new boot id) while the USB port stays: its unsolicited HELLO is
    counted as a reboot, adopted, and answered with the host's HELLO."""
    import os
    import threading
    import time
    import tty

    from wavedge.firmware_bridge.framing import Frame, FrameDecoder, encode_frame
    from wavedge.firmware_bridge.messages import pack

    master, slave = os.openpty()
    tty.setraw(slave)
    host_hellos = []

    def board():
        dec = FrameDecoder()

        def wait_for_host_hellos(n):
            while len(host_hellos) < n:
                host_hellos.extend(f for f in dec.feed(os.read(master, 256)) if f.type == 1)

        wait_for_host_hellos(1)
        os.write(master, encode_frame(Frame(*pack(Hello(1, SCHEMA_HASH, 240, 1)), 0)))
        time.sleep(0.2)  # ... and then the board resets and announces itself
        os.write(master, encode_frame(Frame(*pack(Hello(1, SCHEMA_HASH, 240, 2)), 0)))
        wait_for_host_hellos(2)

    link = Link(os.ttyname(slave))
    try:
        threading.Thread(target=board, daemon=True).start()
        assert link.handshake().boot_id == 1
        assert _wait(lambda: link.board.boot_id == 2)
        assert link.stats.reboots == 1
        assert _wait(lambda: len(host_hellos) == 2)  # the host handshook again
    finally:
        link.close()
        os.close(master)
        os.close(slave)


def test_a_stalled_port_never_blocks_the_sender():
    """Nobody reads the board side: once the port's buffer is full, frames time out after the
    write timeout, are counted, and send() returns instead of blocking the inference loop."""
    import os
    import time
    import tty

    from wavedge.firmware_bridge.messages import Result

    master, slave = os.openpty()
    tty.setraw(slave)
    with Link(os.ttyname(slave), write_timeout_s=0.02) as link:
        sent = []
        while sent.count(None) < 20 and len(sent) < 20000:  # fill the buffer, then 20 more
            t0 = time.monotonic()
            sent.append(link.send(Result(0, len(sent), 0, 1, 0.5, (0.0,) * 32)))
            assert time.monotonic() - t0 < 1.0  # a stalled send gives up, it never hangs
        assert sent.count(None) == link.stats.write_timeouts == 20
        assert link.stats.frames_out + link.stats.write_timeouts == len(sent)
    os.close(master)
    os.close(slave)


def _fake_board(schema: int, boot_id: int = 3):
    """A board on a new pseudo-terminal that records every frame the host sends and answers
    each HELLO with its own, built from ``schema``. Returns (port path, received frames,
    closer)."""
    import os
    import threading
    import tty

    from wavedge.firmware_bridge.framing import Frame, FrameDecoder, encode_frame
    from wavedge.firmware_bridge.messages import pack

    master, slave = os.openpty()
    tty.setraw(slave)
    got, stop = [], threading.Event()

    def run():
        dec = FrameDecoder()
        while not stop.is_set():
            try:
                data = os.read(master, 256)
            except OSError:
                return
            for f in dec.feed(data):
                got.append(f)
                if f.type == 1 and not stop.is_set():
                    os.write(master, encode_frame(Frame(*pack(Hello(1, schema, 240, boot_id)),
                                                        0)))

    reader = threading.Thread(target=run, daemon=True)
    reader.start()

    def close(hang: bool = False):
        """Stop reading; with ``hang`` the port stays open (a hung board), else it goes."""
        stop.set()
        if not hang:
            os.close(slave)
            os.close(master)

    return os.ttyname(slave), got, close


def test_after_a_replug_the_board_is_checked_as_on_first_connect(standin_exe, tmp_path):
    """Replugged into a board of another schema: only HELLO goes to it, every second, the
    refusal is counted and the results wait in the queue; the right board then gets them."""
    import os
    import time

    from wavedge.firmware_bridge.messages import Result

    stable = tmp_path / "ttyWAVEDGE"
    first = StandIn(standin_exe, boot_id=1)
    os.symlink(first.port, stable)
    link = Link(str(stable), retry_s=0.1)
    try:
        link.handshake()
        first.proc.kill()
        first.close()
        assert _wait(lambda: not link.connected) is not None
        port, got, close_fake = _fake_board(schema=0x12345678)
        os.replace(_symlink_tmp(tmp_path, port), stable)
        assert _wait(lambda: link.stats.refused_boards == 1) is not None
        for i in range(20):
            link.post(Result(0, i, 0, 1, 0.5))
        time.sleep(2.3)  # two more HELLOs, and no result
        assert not link.verified and link.queued == 20
        assert {f.type for f in got} == {1} and len(got) >= 3
        assert link.stats.refused_boards == 1  # one board, counted once
        close_fake()
        right = StandIn(standin_exe, boot_id=2)
        os.replace(_symlink_tmp(tmp_path, right.port), stable)
        assert _wait(lambda: link.verified and link.board.boot_id == 2, 5.0) is not None
        assert link.flush(3.0)
        time.sleep(0.3)
    finally:
        link.close()
    assert right.close() == 0
    got = [ln for ln in right.lines if ln.startswith("RESULT")]
    assert [int(ln.split("step=")[1].split()[0]) for ln in got] == list(range(20))


def test_a_hung_board_never_slows_inference_and_the_summary_says_what_was_lost():
    """The board answers the handshake, then never reads again: the port's buffer fills, each
    write would block for the write timeout; through the send queue the stream keeps its
    pace and the summary counts the frames that did not go."""
    import time

    model = load_model(BUNDLED_MODEL)
    rec = BUNDLED_MODEL / "recording.csv"
    port, got, close_fake = _fake_board(schema=SCHEMA_HASH)
    summary_null = run(model.stream(), open_source(f"replay:{rec}?rate=max", model.manifest),
                       open_sink("null:", model.manifest))
    sink = open_sink(f"link:{port}?vector=1", model.manifest)
    close_fake(hang=True)  # the board hangs: its port stays, nothing reads it any more
    t0 = time.monotonic()
    summary = run(model.stream(), open_source(f"replay:{rec}?rate=max", model.manifest), sink)
    took = time.monotonic() - t0
    assert summary.samples == 4000
    # 4,000 frames at a blocking 50 ms each would be 200 s; the queue keeps the pace
    assert took < 10 * max(summary_null.seconds, 0.5), (took, summary_null.seconds)
    line = next(ln for ln in summary.lines() if ln.startswith("link: "))
    assert "4000 results posted" in line and "boards refused" in line
    st = sink.link.stats
    assert st.queue_dropped > 0 and st.write_timeouts > 0 and st.disconnects == 0
    # every result accounted for: sent (frames_out less the handshake's HELLO), dropped from
    # the full queue, timed out on the port, or still queued when the run closed the link
    assert (st.frames_out - 1) + st.queue_dropped + st.write_timeouts + sink.unsent == 4000


def test_a_run_whose_sources_would_pass_a_stream_byte_is_refused_before_it_starts():
    """The run had started and sent sources 0 and 1's results, and ended at source 2's
    first; the count of sources is known at start."""
    replay = ["--source", "replay:?rate=max&limit=5"]
    proc = run_cli("run", BUNDLED_MODEL, *replay * 3, "--sink", "link:loop://?stream=254")
    assert_one_line_error(proc, "link:loop://?stream=254: 3 sources would reach stream 256, "
                          "past a frame's 255; give ?stream=253 or lower")
    assert proc.stdout == ""


def test_a_source_whose_stream_id_would_pass_a_byte_is_refused_and_the_link_lives_on():
    """`link:PORT?stream=254` with three sources: source 2 would be stream 256. Its frame had
    killed the link's writer thread with struct.error, so nothing more reached the board and
    the run went on without a word."""
    import threading

    import numpy as np

    from wavedge.errors import SinkError
    from wavedge.recordings import Sample

    model = load_model(BUNDLED_MODEL)
    sink = open_sink("link:loop://?stream=254", model.manifest)
    result = model.stream().push(np.zeros(6, np.float32))
    sink.write(result, Sample(np.zeros(6, np.float32), stream=1))  # stream 255: fits
    with pytest.raises(SinkError, match=r"source 2 would be stream 256, past a frame's 255; "
                                        r"give a lower \?stream="):
        sink.write(result, Sample(np.zeros(6, np.float32), stream=2))
    assert sink.link.flush(2.0)  # the frame of stream 255 went out
    assert any(t.name == "wavedge-link" and t.is_alive() for t in threading.enumerate())
    sink.close()
