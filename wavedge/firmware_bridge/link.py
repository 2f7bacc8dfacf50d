"""The host side of the bridge: framed messages over ``serial.serial_for_url`` (a real port,
``loop://``, ``socket://``, a pseudo-terminal's path).

A reader thread decodes incoming bytes into messages and puts them in a bounded inbox that
drops the oldest when full (and counts it). ``post()`` hands a frame to a bounded send queue
(drop-oldest, counted) that a writer thread drains, so the inference loop never waits on the
port; writes have a timeout (a timed-out frame is counted, not retried). ``handshake()``
exchanges HELLO and checks the schema hash.

When the port vanishes (unplugged), the reader thread closes it and tries to reopen it by its
path every ``retry_s`` (no busy loop) - a stable path such as ``/dev/serial/by-id/...``, or a
``usb:VID:PID[:SERIAL]`` URL looked up again at every try, finds the board wherever the OS puts
it; once it is back it handshakes again, and nothing but HELLO goes to the board until its
HELLO is checked exactly as on first connect: a board of another schema is counted
(``refused_boards``) and never sent a result; the writer says HELLO every ``hello_every_s``
until a board answers, and posted frames wait in the bounded queue meanwhile. A HELLO with a
new boot id (the board rebooted) is counted and adopted. ``send()`` (synchronous, for the
handshake and commands) drops and counts a frame while the port is gone.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from wavedge.errors import LinkError, reason
from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, PROTOCOL_VERSION, Frame, FrameDecoder,
                                             encode_frame)
from wavedge.firmware_bridge.messages import SCHEMA_HASH, Hello, MessageError, pack, unpack
from wavedge.ports import find_usb_port, parse_usb, port_name


@dataclass
class LinkStats:
    frames_out: int = 0
    frames_in: int = 0
    write_timeouts: int = 0  # frames not sent because the port did not take them in time
    inbox_dropped: int = 0  # oldest messages dropped because nobody read them
    seq_gaps: int = 0  # incoming frames missing, seen as jumps in the sequence number
    bad_messages: int = 0  # intact frames whose payload did not fit their type
    disconnects: int = 0  # times the port vanished
    reconnects: int = 0  # times it came back
    reopen_attempts: int = 0
    reboots: int = 0  # HELLOs with a new boot id
    dropped_while_down: int = 0  # frames not sent because the port was gone
    queue_dropped: int = 0  # posted frames dropped, oldest first, from a full send queue
    refused_boards: int = 0  # connections whose board answered with another schema


class Link:
    def __init__(self, url: str, baud: int = 115200, write_timeout_s: float = 0.05,
                 inbox_frames: int = 256, retry_s: float = 0.1, send_queue: int = 256,
                 hello_every_s: float = 1.0) -> None:
        try:
            import serial
        except ImportError:
            raise LinkError("the bridge needs pyserial: pip install pyserial") from None
        self._serial_mod = serial
        self.url, self.baud, self.write_timeout_s, self.retry_s = url, baud, write_timeout_s, retry_s
        try:
            self.port = self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"link {url}: cannot open ({reason(exc)})") from None
        self.connected = True
        self.stats = LinkStats()
        self.decoder = FrameDecoder()
        self.board: Hello | None = None
        self._seq = 0
        self._last_in: int | None = None
        self._boot_id = 0
        self._inbox: collections.deque = collections.deque(maxlen=inbox_frames)
        self._ready = threading.Condition()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        # frames posted by the inference loop wait here for the writer thread, which sends
        # them only to a verified board (its HELLO checked on this connection)
        self.verified = False
        self.hello_every_s = hello_every_s
        self._outbox: collections.deque = collections.deque(maxlen=send_queue)
        self._pending = threading.Condition()
        self._refused_here = False
        self._thread = threading.Thread(target=self._read_loop, name="wavedge-link", daemon=True)
        self._thread.start()
        self._writer = threading.Thread(target=self._write_loop, name="wavedge-link-send",
                                        daemon=True)
        self._writer.start()

    def _open(self):
        target = self.url
        usb = parse_usb(self.url)
        if usb is not None:  # found again on every (re)open: the path may change on replug
            target = find_usb_port(*usb)
            if target is None:
                raise self._serial_mod.SerialException(f"no USB serial device {self.url[4:]}")
        return self._serial_mod.serial_for_url(target, baudrate=self.baud, timeout=0.1,
                                               write_timeout=self.write_timeout_s)

    # -- sending -------------------------------------------------------------------------------
    def send(self, message, flags: int = 0) -> int | None:
        """Frame and write ``message``; returns its sequence number, or None when the port did
        not take it within the write timeout (counted in ``stats.write_timeouts``)."""
        mtype, payload = pack(message)
        with self._write_lock:
            if not self.connected:
                self.stats.dropped_while_down += 1
                return None
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            try:
                self.port.write(encode_frame(Frame(mtype, payload, seq, flags)))
            except self._serial_mod.SerialTimeoutException:
                self.stats.write_timeouts += 1
                return None
            except (self._serial_mod.SerialException, OSError):
                self.stats.dropped_while_down += 1  # the reader thread sees it go and reopens
                return None
        self.stats.frames_out += 1
        return seq

    def post(self, message, flags: int = 0) -> None:
        """Queue ``message`` for the writer thread and return at once: the inference loop never
        waits for the port. A full queue drops its oldest frame (``stats.queue_dropped``)."""
        with self._pending:
            if len(self._outbox) == self._outbox.maxlen:
                self.stats.queue_dropped += 1
            self._outbox.append((message, flags))
            self._pending.notify()

    @property
    def queued(self) -> int:
        return len(self._outbox)

    @property
    def send_queue(self) -> int:
        return self._outbox.maxlen

    def grow_send_queue(self, frames: int) -> None:
        """Let the send queue hold ``frames`` (a second user of a shared link asked more)."""
        with self._pending:
            self._outbox = collections.deque(self._outbox, maxlen=frames)

    def flush(self, timeout_s: float = 1.0) -> bool:
        """Wait up to ``timeout_s`` for the send queue to empty; False if it did not."""
        deadline = time.monotonic() + timeout_s
        with self._pending:
            while self._outbox and time.monotonic() < deadline:
                self._pending.wait(0.01)
        return not self._outbox

    def _write_loop(self) -> None:
        """Send queued frames to a verified board; while the board is unverified (after a
        reconnect) say HELLO every ``hello_every_s`` and hold the queue."""
        last_hello = time.monotonic()
        while not self._stop.is_set():
            with self._pending:
                if not (self._outbox and self.connected and self.verified):
                    self._pending.wait(0.05)
                item = self._outbox.popleft() if (self._outbox and self.connected
                                                  and self.verified) else None
                self._pending.notify_all()
            if item is not None:
                self.send(*item)
            elif self.connected and not self.verified and self.board is not None \
                    and time.monotonic() - last_hello >= self.hello_every_s:
                last_hello = time.monotonic()
                self.send(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, self._boot_id))

    # -- receiving -----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.port.read(self.port.in_waiting or 1)
            except (self._serial_mod.SerialException, OSError, TypeError):
                self._reconnect()
                continue
            for frame in self.decoder.feed(data):
                self._accept(frame)

    def _reconnect(self) -> None:
        """The port vanished: close it, reopen it by path every ``retry_s``, then handshake."""
        with self._write_lock:
            self.connected = False
            self.stats.disconnects += 1
            try:
                self.port.close()
            except (self._serial_mod.SerialException, OSError):
                pass
        self.decoder.feed(b"\x00")  # a frame cut by the unplug is dropped, not spliced
        while not self._stop.wait(self.retry_s):
            self.stats.reopen_attempts += 1
            try:
                port = self._open()
            except (self._serial_mod.SerialException, OSError, ValueError):
                continue
            with self._write_lock:
                # whoever is on the port now is checked as on first connect before anything
                # but HELLO goes to it
                self.port, self.connected, self.verified = port, True, False
                self._refused_here = False
            self.stats.reconnects += 1
            self._last_in = None  # the board's sequence numbers may restart
            self.send(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, self._boot_id))
            return

    def _accept(self, frame: Frame) -> None:
        if self._last_in is not None and frame.seq != (self._last_in + 1) & 0xFFFF:
            self.stats.seq_gaps += 1
        self._last_in = frame.seq
        self.stats.frames_in += 1
        try:
            message = unpack(frame.type, frame.payload)
        except MessageError:
            self.stats.bad_messages += 1
            return
        if isinstance(message, Hello) and message.schema_hash != SCHEMA_HASH:
            if self.board is not None and not self._refused_here:  # after a reconnect
                self._refused_here = True
                self.stats.refused_boards += 1
        elif isinstance(message, Hello) and self.board is not None and not self.verified:
            # the board on a reopened port answered with our schema: results may flow again
            if message.boot_id != self.board.boot_id:
                self.stats.reboots += 1
            self.board, self.verified = message, True
        elif isinstance(message, Hello):
            if self.board is not None and message.boot_id != self.board.boot_id:
                # the board rebooted behind a port that stayed: count it, adopt the new boot
                # id, and handshake again so a board that waits for the host's HELLO resumes
                self.stats.reboots += 1
                self.board = message
                self.send(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, self._boot_id))
        with self._ready:
            if len(self._inbox) == self._inbox.maxlen:
                self.stats.inbox_dropped += 1
            self._inbox.append((frame.seq, message))
            self._ready.notify_all()

    def receive(self, timeout_s: float = 1.0, kind: type | None = None):
        """The oldest message received (of type ``kind`` when given; others are kept), or None
        after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while True:
                for i, (_, msg) in enumerate(self._inbox):
                    if kind is None or isinstance(msg, kind):
                        del self._inbox[i]
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ready.wait(left)

    def handshake(self, boot_id: int = 0, timeout_s: float = 1.0) -> Hello:
        """Send HELLO, wait for the board's; raise ``LinkError`` on silence or another schema."""
        self._boot_id = boot_id
        self.send(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, boot_id))
        reply = self.receive(timeout_s, Hello)
        if reply is None:
            raise LinkError(f"link {self.url}: no HELLO from the board within {timeout_s:g} s")
        if reply.schema_hash != SCHEMA_HASH:
            raise LinkError(f"link {self.url}: the board's schema hash {reply.schema_hash:#010x} "
                            f"is not ours ({SCHEMA_HASH:#010x}); rebuild its firmware from "
                            "this wavedge")
        self.board = reply
        self.verified = True
        return reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._writer.join(timeout=1.0)
        with self._write_lock:
            self.connected = False
            self.port.close()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(url: str, baud: int = 115200, **kwargs) -> Link:
    """Open a link and handshake; the port is closed again when the handshake fails."""
    link = Link(url, baud=baud, **kwargs)
    try:
        link.handshake()
    except BaseException:
        link.close()
        raise
    return link


_SHARED: dict[str, Link] = {}  # the open shared links, by port
_SHARED_USERS: dict[str, int] = {}
_SHARED_LOCK = threading.Lock()


def shared(url: str, baud: int = 115200, send_queue: int | None = None) -> Link:
    """The process's one link on ``url``'s port, connected by the first caller: a board that
    sends SENSOR frames and receives the results on one port is a run's source and its sink.
    Two links on one port had each read part of its bytes (97 of 200 samples through, the
    run reconnecting three times). ``release()`` it; the last release closes it."""
    key = port_name(url)  # a usb: URL and its device, a by-id link and its device: one port
    with _SHARED_LOCK:
        link = _SHARED.get(key)
        if link is None:
            link = connect(url, baud=baud, **({"send_queue": send_queue} if send_queue else {}))
            _SHARED[key], _SHARED_USERS[key] = link, 0
        elif link.baud != baud:
            raise LinkError(f"link {url}: its port is open at {link.baud} baud already, for "
                            f"this run's other use of it; give both baud={link.baud} (or both "
                            f"{baud})")
        elif send_queue is not None and send_queue > link.send_queue:
            link.grow_send_queue(send_queue)
        _SHARED_USERS[key] += 1
        return link


def release(link: Link) -> None:
    """Done with a link from ``shared``: closed when no other user holds it."""
    with _SHARED_LOCK:
        # by the link, not its URL named again: a usb: board unplugged since names no device
        key = next((k for k, held in _SHARED.items() if held is link), None)
        if key is not None:
            _SHARED_USERS[key] -= 1
            if _SHARED_USERS[key] > 0:
                return
            del _SHARED[key], _SHARED_USERS[key]
    link.close()
