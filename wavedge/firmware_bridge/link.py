"""The host side of the bridge: framed messages over ``serial.serial_for_url`` (a real port,
``loop://``, ``socket://``, a pseudo-terminal's path).

A reader thread decodes incoming bytes into messages and puts them in a bounded inbox that
drops the oldest when full (and counts it); writes have a timeout so the inference loop never
blocks on a stalled port (a timed-out frame is counted, not retried). ``handshake()`` exchanges
HELLO and checks the schema hash. Still to come (issue 5): reconnection after the port vanishes,
re-handshake on a new boot id.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from wavedge.errors import WavedgeError
from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, PROTOCOL_VERSION, Frame, FrameDecoder,
                                             encode_frame)
from wavedge.firmware_bridge.messages import SCHEMA_HASH, Hello, MessageError, pack, unpack


class LinkError(WavedgeError):
    """The port cannot be opened, the handshake failed, or the board speaks another schema."""


@dataclass
class LinkStats:
    frames_out: int = 0
    frames_in: int = 0
    write_timeouts: int = 0  # frames not sent because the port did not take them in time
    inbox_dropped: int = 0  # oldest messages dropped because nobody read them
    seq_gaps: int = 0  # incoming frames missing, seen as jumps in the sequence number
    bad_messages: int = 0  # intact frames whose payload did not fit their type


class Link:
    def __init__(self, url: str, baud: int = 115200, write_timeout_s: float = 0.05,
                 inbox_frames: int = 256) -> None:
        try:
            import serial
        except ImportError:
            raise LinkError("the bridge needs pyserial: pip install pyserial") from None
        self._serial_mod = serial
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0.1,
                                              write_timeout=write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"link {url}: cannot open ({exc})") from None
        self.url = url
        self.stats = LinkStats()
        self.decoder = FrameDecoder()
        self.board: Hello | None = None
        self._seq = 0
        self._last_in: int | None = None
        self._inbox: collections.deque = collections.deque(maxlen=inbox_frames)
        self._ready = threading.Condition()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name="wavedge-link", daemon=True)
        self._thread.start()

    # -- sending -------------------------------------------------------------------------------
    def send(self, message, flags: int = 0) -> int | None:
        """Frame and write ``message``; returns its sequence number, or None when the port did
        not take it within the write timeout (counted in ``stats.write_timeouts``)."""
        mtype, payload = pack(message)
        with self._write_lock:
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            try:
                self.port.write(encode_frame(Frame(mtype, payload, seq, flags)))
            except self._serial_mod.SerialTimeoutException:
                self.stats.write_timeouts += 1
                return None
            except (self._serial_mod.SerialException, OSError) as exc:
                raise LinkError(f"link {self.url}: write failed ({exc})") from None
        self.stats.frames_out += 1
        return seq

    # -- receiving -----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.port.read(self.port.in_waiting or 1)
            except (self._serial_mod.SerialException, OSError, TypeError):
                break  # the port went away; reconnection is still to come
            for frame in self.decoder.feed(data):
                self._accept(frame)

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
        self.send(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, boot_id))
        reply = self.receive(timeout_s, Hello)
        if reply is None:
            raise LinkError(f"link {self.url}: no HELLO from the board within {timeout_s:g} s")
        if reply.schema_hash != SCHEMA_HASH:
            raise LinkError(f"link {self.url}: the board's schema hash {reply.schema_hash:#010x} "
                            f"is not ours ({SCHEMA_HASH:#010x}); rebuild its firmware from "
                            "this wavedge")
        self.board = reply
        return reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.port.close()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
