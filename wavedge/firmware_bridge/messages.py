"""The bridge's messages: what goes inside a frame's payload, little-endian, floats IEEE-754.

| type | name      | payload                                                                  |
|------|-----------|--------------------------------------------------------------------------|
| 1    | HELLO     | protocol u8, schema hash u32, max payload u16, boot id u32               |
| 2    | RESULT    | stream u8, step u32, timestamp ms u32, class u16, score f32, n u8, n x f32 |
| 3    | SENSOR    | stream u8, first step u32, channels u8, count u8, channels x count f32   |
| 4    | COMMAND   | command u8, argument bytes                                               |
| 5    | ACK       | acknowledged seq u16, code u8                                            |
| 6    | NACK      | refused seq u16, code u8                                                 |
| 7    | HEARTBEAT | uptime ms u32                                                            |
| 8    | PREDICTION| stream u8, step u32, timestamp ms u32, kind u8, index u32, score f32, n u8, n x f32 |

PREDICTION carries any output head (``PREDICTION_KINDS``; ``wavedge.runtime.heads`` fills it):
class scores (index = class, score = probability, values = logits), a Gaussian (values = the
means then the variances), regression, embedding or activations (values as they are), tokens
(index = the top token id, score = its probability, values = the top-5 probabilities), class
scores with their predictive variance (kind 7: index = class, score = probability, values = the
logits then their variances). RESULT stays the message for class scores without a variance.

``SCHEMA_HASH`` is the CRC-32 of this table's canonical form (``SCHEMA``); HELLO carries it so
a host and a board built from different schemas notice at the handshake. The C library
(``c/wb_frame.h``) defines the same layouts and ``WB_SCHEMA_HASH``; the tests hold them equal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from wavedge.errors import MessageError
from wavedge.firmware_bridge.framing import MAX_PAYLOAD, crc32

SCHEMA = ("wavedge-bridge/1;HELLO=1:<BIHI;RESULT=2:<BIIHfB+f*;SENSOR=3:<BIBB+f*;"
          "COMMAND=4:<B+B*;ACK=5:<HB;NACK=6:<HB;HEARTBEAT=7:<I;PREDICTION=8:<BIIBIfB+f*")
SCHEMA_HASH = crc32(SCHEMA.encode())
MAX_VECTOR = 32  # floats in a RESULT's optional vector and a PREDICTION's values
PREDICTION_KINDS = {"class_scores": 1, "gaussian_mean": 2, "regression": 3, "token_logits": 4,
                    "embedding": 5, "activations": 6, "class_scores_variance": 7}


class MsgType(IntEnum):
    HELLO = 1
    RESULT = 2
    SENSOR = 3
    COMMAND = 4
    ACK = 5
    NACK = 6
    HEARTBEAT = 7
    PREDICTION = 8


@dataclass(frozen=True)
class Hello:
    protocol_version: int
    schema_hash: int
    max_payload: int
    boot_id: int
    TYPE = MsgType.HELLO
    LAYOUT = struct.Struct("<BIHI")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.protocol_version, self.schema_hash, self.max_payload,
                                self.boot_id)

    @classmethod
    def unpack(cls, payload: bytes) -> "Hello":
        return cls(*_fixed(cls, payload))


@dataclass(frozen=True)
class Result:
    stream_id: int
    step: int
    timestamp_ms: int
    class_id: int
    score: float
    vector: tuple[float, ...] = ()
    TYPE = MsgType.RESULT
    LAYOUT = struct.Struct("<BIIHfB")

    def pack(self) -> bytes:
        if len(self.vector) > MAX_VECTOR:
            raise MessageError(f"RESULT vector of {len(self.vector)} floats exceeds {MAX_VECTOR}")
        return (self.LAYOUT.pack(self.stream_id, self.step & 0xFFFFFFFF,
                                 self.timestamp_ms & 0xFFFFFFFF, self.class_id, self.score,
                                 len(self.vector))
                + struct.pack(f"<{len(self.vector)}f", *self.vector))

    @classmethod
    def unpack(cls, payload: bytes) -> "Result":
        return _with_floats(cls, payload, "vector of ")


@dataclass(frozen=True)
class Sensor:
    stream_id: int
    first_step: int
    channels: int
    values: tuple[float, ...]  # count samples x channels, sample-major
    TYPE = MsgType.SENSOR
    LAYOUT = struct.Struct("<BIBB")

    @property
    def count(self) -> int:
        return len(self.values) // self.channels if self.channels else 0

    def pack(self) -> bytes:
        if self.channels == 0 or len(self.values) % self.channels:
            raise MessageError(f"SENSOR: {len(self.values)} values are not whole samples of "
                               f"{self.channels} channels")
        return (self.LAYOUT.pack(self.stream_id, self.first_step & 0xFFFFFFFF, self.channels,
                                 self.count)
                + struct.pack(f"<{len(self.values)}f", *self.values))

    @classmethod
    def unpack(cls, payload: bytes) -> "Sensor":
        (stream_id, first_step, channels, count), rest = _head(cls, payload)
        if len(rest) != 4 * channels * count:
            raise MessageError(f"SENSOR: {count} samples of {channels} channels need "
                               f"{4 * channels * count} bytes, got {len(rest)}")
        return cls(stream_id, first_step, channels, struct.unpack(f"<{channels * count}f", rest))


@dataclass(frozen=True)
class Command:
    command: int
    args: bytes = b""
    TYPE = MsgType.COMMAND

    def pack(self) -> bytes:
        return bytes([self.command]) + self.args

    @classmethod
    def unpack(cls, payload: bytes) -> "Command":
        if not payload:
            raise MessageError("COMMAND: empty payload")
        return cls(payload[0], bytes(payload[1:]))


@dataclass(frozen=True)
class Ack:
    seq: int
    code: int = 0
    TYPE = MsgType.ACK
    LAYOUT = struct.Struct("<HB")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.seq, self.code)

    @classmethod
    def unpack(cls, payload: bytes) -> "Ack":
        return cls(*_fixed(cls, payload))


@dataclass(frozen=True)
class Nack(Ack):
    TYPE = MsgType.NACK


@dataclass(frozen=True)
class Heartbeat:
    uptime_ms: int
    TYPE = MsgType.HEARTBEAT
    LAYOUT = struct.Struct("<I")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.uptime_ms & 0xFFFFFFFF)

    @classmethod
    def unpack(cls, payload: bytes) -> "Heartbeat":
        return cls(*_fixed(cls, payload))


@dataclass(frozen=True)
class Prediction:
    stream_id: int
    step: int
    timestamp_ms: int
    kind: int  # PREDICTION_KINDS
    index: int
    score: float
    values: tuple[float, ...] = ()
    TYPE = MsgType.PREDICTION
    LAYOUT = struct.Struct("<BIIBIfB")

    def pack(self) -> bytes:
        if len(self.values) > MAX_VECTOR:
            raise MessageError(f"PREDICTION of {len(self.values)} floats exceeds {MAX_VECTOR}")
        if not 0 <= self.index < 2**32:
            raise MessageError(f"PREDICTION index {self.index} does not fit 32 bits")
        return (self.LAYOUT.pack(self.stream_id, self.step & 0xFFFFFFFF,
                                 self.timestamp_ms & 0xFFFFFFFF, self.kind, self.index,
                                 self.score, len(self.values))
                + struct.pack(f"<{len(self.values)}f", *self.values))

    @classmethod
    def unpack(cls, payload: bytes) -> "Prediction":
        return _with_floats(cls, payload, "")


MESSAGES = {cls.TYPE: cls for cls in (Hello, Result, Sensor, Command, Ack, Nack, Heartbeat,
                                      Prediction)}


def _fixed(cls, payload: bytes) -> tuple:
    if len(payload) != cls.LAYOUT.size:
        raise MessageError(f"{cls.TYPE.name}: expected {cls.LAYOUT.size} bytes, got {len(payload)}")
    return cls.LAYOUT.unpack(payload)


def _head(cls, payload: bytes) -> tuple[tuple, bytes]:
    if len(payload) < cls.LAYOUT.size:
        raise MessageError(f"{cls.TYPE.name}: expected at least {cls.LAYOUT.size} bytes, got "
                           f"{len(payload)}")
    return cls.LAYOUT.unpack_from(payload), bytes(payload[cls.LAYOUT.size:])


def _with_floats(cls, payload: bytes, what: str):
    """A message whose fixed head ends with a count n, followed by n floats."""
    head, rest = _head(cls, payload)
    n = head[-1]
    if n > MAX_VECTOR or len(rest) != 4 * n:
        raise MessageError(f"{cls.TYPE.name}: {what}{n} floats needs {4 * n} bytes, "
                           f"got {len(rest)}")
    return cls(*head[:-1], struct.unpack(f"<{n}f", rest))


def pack(message) -> tuple[int, bytes]:
    """(type, payload) of a message; ``MessageError`` when the payload would not fit a frame."""
    payload = message.pack()
    if len(payload) > MAX_PAYLOAD:
        raise MessageError(f"{message.TYPE.name}: payload of {len(payload)} bytes exceeds "
                           f"{MAX_PAYLOAD}")
    return int(message.TYPE), payload


def unpack(mtype: int, payload: bytes):
    """The message in a frame's payload; ``MessageError`` for an unknown type or bad layout."""
    try:
        cls = MESSAGES[MsgType(mtype)]
    except ValueError:
        raise MessageError(f"unknown message type {mtype}") from None
    return cls.unpack(payload)
