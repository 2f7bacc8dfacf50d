"""Bridge messages: Python and C pack the same bytes, unpack each other's, share a schema hash,
and refuse payloads of the wrong layout."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from test_bridge_framing import _run_c, c_driver  # noqa: F401  (the compiled C driver)
from wavedge.firmware_bridge.messages import (MAX_VECTOR, SCHEMA_HASH, Ack, Command, Heartbeat,
                                              Hello, MessageError, MsgType, Nack, Result, Sensor,
                                              pack, unpack)


def _f32(rng, n):
    """``n`` values exactly representable as float32."""
    return tuple(float(np.float32(rng.gauss(0, 10))) for _ in range(n))


def test_round_trip_every_type():
    rng = random.Random(0)
    for msg in (Hello(1, SCHEMA_HASH, 240, 0xDEADBEEF), Result(0, 123, 4567, 2, 0.75, (1.0, -2.5)),
                Result(3, 2**32 - 1, 0, 65535, 0.5), Sensor(1, 10, 3, _f32(rng, 6)),
                Command(9, b"ab"), Ack(513, 0), Nack(7, 3), Heartbeat(1000)):
        mtype, payload = pack(msg)
        assert unpack(mtype, payload) == msg


@pytest.mark.parametrize("mtype,payload,message", [
    (MsgType.HELLO, bytes(10), "HELLO: expected 11 bytes, got 10"),
    (MsgType.RESULT, bytes(15), "RESULT: expected at least 16 bytes"),
    (MsgType.RESULT, bytes(15) + b"\x02" + bytes(4), "vector of 2 floats needs 8 bytes, got 4"),
    (MsgType.SENSOR, b"\x00" + bytes(4) + b"\x02\x02" + bytes(12), "need 16 bytes, got 12"),
    (99, b"", "unknown message type 99"),
])
def test_wrong_layouts_are_refused(mtype, payload, message):
    with pytest.raises(MessageError, match=message):
        unpack(mtype, payload)


def test_a_result_vector_too_long_is_refused():
    with pytest.raises(MessageError, match=f"exceeds {MAX_VECTOR}"):
        pack(Result(0, 0, 0, 0, 0.0, (0.0,) * (MAX_VECTOR + 1)))


def test_schema_hash_is_shared_with_c(c_driver):  # noqa: F811
    assert _run_c(c_driver, ["V"]) == [f"V {SCHEMA_HASH}"]


def test_c_packs_what_python_packs(c_driver):  # noqa: F811
    rng = random.Random(1)
    lines, expected = [], []
    for _ in range(200):
        h = Hello(1, SCHEMA_HASH, rng.randrange(2**16), rng.randrange(2**32))
        lines.append(f"H {h.protocol_version} {h.schema_hash} {h.max_payload} {h.boot_id}")
        expected.append(f"H {h.pack().hex()}")
        r = Result(rng.randrange(256), rng.randrange(2**32), rng.randrange(2**32),
                   rng.randrange(2**16), _f32(rng, 1)[0], _f32(rng, rng.randrange(MAX_VECTOR + 1)))
        lines.append(f"R {r.stream_id} {r.step} {r.timestamp_ms} {r.class_id} "
                     + " ".join(f"{v:.9g}" for v in (r.score, *r.vector)))
        expected.append(f"R {r.pack().hex()}")
        s = Sensor(rng.randrange(256), rng.randrange(2**32), 6, _f32(rng, 6 * rng.randrange(1, 9)))
        lines.append(f"S {s.stream_id} {s.first_step} {s.channels} {s.count} "
                     + " ".join(f"{v:.9g}" for v in s.values))
        expected.append(f"S {s.pack().hex()}")
        a = Ack(rng.randrange(2**16), rng.randrange(256))
        lines.append(f"A {a.seq} {a.code}")
        expected.append(f"A {a.pack().hex()}")
    assert _run_c(c_driver, lines) == expected


def test_c_unpacks_what_python_packs(c_driver):  # noqa: F811
    rng = random.Random(2)
    msgs = [Result(rng.randrange(256), rng.randrange(2**32), rng.randrange(2**32),
                   rng.randrange(2**16), _f32(rng, 1)[0], _f32(rng, rng.randrange(5)))
            for _ in range(100)]
    out = _run_c(c_driver, [f"U {m.pack().hex()}" for m in msgs] + ["U 00ff"])

    def bits(v):
        return struct.pack("<f", v)[::-1].hex()

    assert out[:-1] == [f"U {m.stream_id} {m.step} {m.timestamp_ms} {m.class_id} {bits(m.score)}"
                        + "".join(f" {bits(v)}" for v in m.vector) for m in msgs]
    assert out[-1] == "U bad"


def test_prediction_golden_vector_and_c_unpacks_what_python_packs(c_driver):  # noqa: F811
    from wavedge.firmware_bridge.messages import Prediction

    golden = Prediction(3, 258, 1000, 2, 0, 0.0, (1.5, -2.0, 0.25, 4.0))
    # stream 3 | step 258 | 1000 ms | kind 2 (Gaussian) | index 0 | score 0 | 4 values
    assert golden.pack().hex() == ("03" "02010000" "e8030000" "02" "00000000" "00000000" "04"
                                   "0000c03f" "000000c0" "0000803e" "00008040")
    assert unpack(*pack(golden)) == golden
    rng = random.Random(3)
    msgs = [Prediction(rng.randrange(256), rng.randrange(2**32), rng.randrange(2**32),
                       rng.randrange(1, 7), rng.randrange(2**32), _f32(rng, 1)[0],
                       _f32(rng, rng.randrange(MAX_VECTOR + 1))) for _ in range(100)]
    out = _run_c(c_driver, [f"P {m.pack().hex()}" for m in msgs] + ["P 00ff"])

    def bits(v):
        return struct.pack("<f", v)[::-1].hex()

    assert out[:-1] == [f"P {m.stream_id} {m.step} {m.timestamp_ms} {m.kind} {m.index} "
                        f"{bits(m.score)}" + "".join(f" {bits(v)}" for v in m.values)
                        for m in msgs]
    assert out[-1] == "P bad"
    with pytest.raises(MessageError, match="exceeds 32"):
        pack(Prediction(0, 0, 0, 3, 0, 0.0, (0.0,) * 33))
