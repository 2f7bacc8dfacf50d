"""The frame codec: the pure-Python reference that the C library is checked against.

On the wire a frame is ``COBS(header | payload | crc32) 0x00``:

- header, little-endian, 7 bytes: protocol version (u8), message type (u8), flags (u8),
  sequence number (u16), payload length (u16);
- CRC-32 as zlib computes it (check value 0xCBF43926 for b"123456789") over header and
  payload, appended little-endian;
- COBS removes every 0x00 from the frame, so 0x00 marks where frames end and a receiver can
  resynchronise at the next delimiter after any corruption.

A frame that fails any check is dropped and counted, never delivered. See docs/bridge.md.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from wavedge.errors import FrameError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBBHH")
HEADER_SIZE = HEADER.size  # 7
CRC_SIZE = 4
MAX_PAYLOAD = 240  # keeps a raw frame within one COBS block (<= 254 bytes)
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1  # COBS worst case, without the delimiter


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no 0x00 in the result; no delimiter appended). Works a
    zero-free run at a time (``bytes.split``), not a byte at a time."""
    out = bytearray()
    for run in bytes(data).split(b"\x00"):
        while len(run) >= 254:
            out.append(255)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Decode COBS ``data`` (without its delimiter); None when it is malformed (a zero byte,
    or a block that runs past the end)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n or 0 in data[i + 1:end]:
            return None
        out += data[i + 1:end]
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes
    seq: int = 0
    flags: int = 0
    version: int = PROTOCOL_VERSION


def encode_frame(frame: Frame) -> bytes:
    """The bytes to send for ``frame``, delimiter included."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(frame.payload)} bytes exceeds the maximum of "
                         f"{MAX_PAYLOAD}")
    for name, value, top in (("type", frame.type, 0xFF), ("flags", frame.flags, 0xFF),
                             ("seq", frame.seq, 0xFFFF), ("version", frame.version, 0xFF)):
        if not 0 <= value <= top:
            raise FrameError(f"{name} {value} is out of range 0..{top}")
    raw = HEADER.pack(frame.version, frame.type, frame.flags, frame.seq,
                      len(frame.payload)) + frame.payload
    raw += struct.pack("<I", crc32(raw))
    return cobs_encode(raw) + b"\x00"


@dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0  # malformed encoding
    length_errors: int = 0  # too short, or the header's length disagrees with the frame
    version_errors: int = 0
    overflows: int = 0  # more bytes than a frame can have before a delimiter
    bytes_skipped: int = 0  # bytes of frames that were dropped


@dataclass
class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` accepts any byte chunks and returns the intact
    frames completed by it. Memory is bounded by ``MAX_ENCODED``."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _overflow: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        data = bytes(data)
        start = 0
        while True:
            end = data.find(0, start)
            self._take(data[start:] if end < 0 else data[start:end])
            if end < 0:
                return frames
            self._end_of_frame(frames)
            start = end + 1

    def _take(self, part: bytes) -> None:
        """Buffer bytes of the current frame, up to what a frame can have (the rest is
        counted as skipped, as the C decoder does byte by byte)."""
        room = MAX_ENCODED - len(self._buf)
        self._buf += part[:room]
        extra = len(part) - room
        if extra > 0:
            if not self._overflow:
                self.stats.overflows += 1
                self._overflow = True
            self.stats.bytes_skipped += extra

    def _end_of_frame(self, frames: list[Frame]) -> None:
        if self._overflow:
            self.stats.bytes_skipped += len(self._buf) + 1
        elif self._buf:
            frame = self._decode(bytes(self._buf))
            if frame is not None:
                frames.append(frame)
            else:
                self.stats.bytes_skipped += len(self._buf) + 1
        self._buf.clear()
        self._overflow = False

    def _decode(self, encoded: bytes) -> Frame | None:
        raw = cobs_decode(encoded)
        if raw is None:
            self.stats.cobs_errors += 1
            return None
        if len(raw) < HEADER_SIZE + CRC_SIZE:
            self.stats.length_errors += 1
            return None
        body, (crc,) = raw[:-CRC_SIZE], struct.unpack("<I", raw[-CRC_SIZE:])
        if crc32(body) != crc:
            self.stats.crc_errors += 1
            return None
        version, mtype, flags, seq, length = HEADER.unpack_from(body)
        if version != PROTOCOL_VERSION:
            self.stats.version_errors += 1
            return None
        if length != len(body) - HEADER_SIZE or length > MAX_PAYLOAD:
            self.stats.length_errors += 1
            return None
        self.stats.frames += 1
        return Frame(mtype, body[HEADER_SIZE:], seq, flags, version)
