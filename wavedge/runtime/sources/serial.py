"""``serial://PORT[?baud=N&reconnect_s=S&<table keys>]``: CSV text lines (or ``NAME:VALUE`` pairs,
or JSON objects, ``recordings.Messages``) from a microcontroller over a serial port, through
pyserial (so ``PORT`` may be any pyserial URL too: ``loop://``, ``socket://``).

If the port vanishes (unplugged), the source retries every 0.2 s for ``reconnect_s`` seconds
(default 10) without busy-looping, counts the gap and carries on where the port came back; if it
does not, it ends with ``SourceError``. Framed SENSOR messages arrive with the firmware bridge.

With ``reply=last`` each line is answered on the same port, once the model has taken its
sample, by one line: the jsonl record of its result (``{"refused": WHY}`` when the run refused
it; a header or blank line is not answered), so a sketch that prints its readings reads the
prediction back with ``Serial.readStringUntil('\\n')`` and ArduinoJson, without the bridge's
framing. ``reply=all`` is the same for a line of one sample.
"""

from __future__ import annotations

import re
import time

from wavedge.errors import reason
from wavedge.recordings import MAX_LINE, TOO_LONG
from wavedge.runtime import interrupts
from wavedge.runtime.sources import SOURCE_TABLE_PARAMS, Answers, Awaited, LiveSource, Replies, \
    SourceError, TableOptions
from wavedge.runtime.sources import port_reader as reader  # noqa: F401 (urls.reader_of)
from wavedge.runtime.urls import BAUD_RANGE

RETRY_S = 0.2
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SerialSource(LiveSource):
    def __init__(self, url, manifest) -> None:
        url.check_params(("baud", "reconnect_s", "reply", *SOURCE_TABLE_PARAMS))
        self.table = TableOptions(url, manifest, live=True)
        self.replies = Replies(url, self.table)
        self.answers = Answers(self.replies.mode)
        try:
            import serial
        except ImportError:
            raise SourceError("serial sources need pyserial: pip install pyserial") from None
        self._serial = serial
        self.port = url.path
        self.baud = url.get("baud", 115200, int, BAUD_RANGE)
        self.reconnect_s = url.get("reconnect_s", 10.0, float, (0, 86400))
        self.gaps = 0
        self.conn = self._open()

    def _open(self):
        try:
            return self._serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.5)
        except (self._serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"serial port {self.port}: cannot open ({reason(exc)})") from None

    def _reopen(self, down_since: float):
        # the deadline runs from the first failure until data flows again, so a port that
        # opens but fails at once (a hung-up tty) cannot keep the source alive forever
        deadline = down_since + self.reconnect_s
        while time.monotonic() < deadline:
            time.sleep(RETRY_S)
            try:
                return self._serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.5)
            except (self._serial.SerialException, OSError):
                continue
        raise SourceError(f"serial port {self.port} vanished and did not come back within "
                          f"{self.reconnect_s:g} s")

    def _lines(self):
        buf, after_cr = b"", False
        down_since = None
        while True:
            try:
                chunk = self.conn.read(self.conn.in_waiting or 1)
            except (self._serial.SerialException, OSError):
                self.conn.close()
                if down_since is None:
                    down_since = time.monotonic()
                    self.gaps += 1
                self.conn = self._reopen(down_since)
                buf = b""  # a line cut by the unplug is dropped, never half-used
                continue
            if not chunk:  # a pyserial URL's port (loop://) may wait on a lock: ``interrupts``
                interrupts.check()
                continue
            down_since = None
            if after_cr and chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CR LF that came in two reads
            buf += chunk
            # CR LF, LF or a bare CR (some RS-232 instruments) each end a line, and a bare CR
            # at once: its line had waited for a LF that never came, then been lost as too long
            after_cr = buf.endswith(b"\r")
            *lines, buf = _LINE_END.split(buf)
            for line in lines:
                yield line.decode("utf-8", "replace").strip()
            if len(buf) > MAX_LINE:  # no newline in sight: one bad sample, not a growing buffer
                buf = b""
                yield TOO_LONG

    def __iter__(self):
        # a first line cut in half by connecting mid-stream is data (counted), not a bad header
        if self.replies.mode is None:  # its lines as they are read, not a message each
            return self.table.lines(self._lines(), self.port, strict=False)
        awaited = (Awaited(line.encode(), self._send) for line in self._lines())
        return self.replies.samples(self.table, awaited, self.port, strict=False)

    def _send(self, awaited: Awaited) -> None:
        """A line's answer on the port (from the loop's thread, as its sample is taken)."""
        self.answers.send(awaited, lambda text: self.conn.write(text.encode() + b"\n"))

    def notes(self) -> list[str]:
        said = self.answers.note()
        return ([f"serial source {self.port}{said}"] if said else []) + self.table.notes()

    def close(self) -> None:
        self.conn.close()


def open(url, manifest) -> SerialSource:  # noqa: A001
    return SerialSource(url, manifest)
