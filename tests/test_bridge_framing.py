"""The bridge's frame codec: the Python reference and the C library (compiled here with
warnings as errors and AddressSanitizer/UBSan) agree on shared vectors, and no corrupted frame
is ever delivered."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, Frame, FrameDecoder, FrameError,
                                             cobs_decode, cobs_encode, crc32, encode_frame)

C_DIR = ROOT / "wavedge" / "firmware_bridge" / "c"

# golden vectors, also in docs/bridge.md: (frame, bytes on the wire)
GOLDEN = [
    (Frame(type=2, payload=bytes.fromhex("000168656c6c6f00"), seq=513, flags=1),
     "0701020101020801070168656c6c6f055403944300"),
    (Frame(type=7, payload=b"", seq=0, flags=0), "030107010101010572e41e2600"),
    (Frame(type=1, payload=bytes(4), seq=65535, flags=0), "03010104ffff040101010105d20b276a00"),
]


def test_crc32_check_value():
    assert crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize("frame,wire", GOLDEN)
def test_golden_vectors(frame, wire):
    assert encode_frame(frame).hex() == wire
    assert FrameDecoder().feed(bytes.fromhex(wire)) == [frame]


def test_cobs_round_trip_and_no_zero_bytes():
    rng = random.Random(0)
    for n in range(0, 700):
        data = bytes(rng.choice([0, 0, 1, 255, rng.randrange(256)]) for _ in range(n))
        enc = cobs_encode(data)
        assert 0 not in enc and cobs_decode(enc) == data
    assert cobs_decode(b"\x05ab") is None  # block runs past the end


def test_frame_limits_are_errors():
    with pytest.raises(FrameError, match=f"exceeds the maximum of {MAX_PAYLOAD}"):
        encode_frame(Frame(1, bytes(MAX_PAYLOAD + 1)))
    with pytest.raises(FrameError, match="seq 70000 is out of range"):
        encode_frame(Frame(1, b"", seq=70000))


def _corrupt_stream(frames, rate, rng):
    """The wire bytes of ``frames`` with ``rate`` of bytes flipped, dropped or inserted, and
    bursts of garbage between some frames."""
    out = bytearray()
    for f in frames:
        if rng.random() < 0.01:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        for b in encode_frame(f):
            r = rng.random()
            if r < rate / 3:
                out.append(b ^ (1 << rng.randrange(8)))
            elif r < 2 * rate / 3:
                continue
            elif r < rate:
                out += bytes([b, rng.randrange(256)])
            else:
                out.append(b)
    return bytes(out)


def _frames(n, rng):
    return [Frame(rng.randrange(1, 8), bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60))),
                  seq=i & 0xFFFF, flags=rng.randrange(4)) for i in range(n)]


def test_no_corrupted_frame_is_ever_delivered_and_losses_are_visible():
    rng = random.Random(1)
    frames = _frames(20_000, rng)
    dec = FrameDecoder()
    wire = _corrupt_stream(frames, 0.01, rng)
    got = []
    for i in range(0, len(wire), 97):  # arbitrary chunking
        got += dec.feed(wire[i:i + 97])
    sent = {f.seq: f for f in frames}
    assert all(sent[f.seq] == f for f in got)  # every delivered frame is one that was sent
    seqs = [f.seq for f in got]
    assert seqs == sorted(seqs)  # in order; a lost frame shows as a gap in seq
    lost = len(frames) - len(got)
    s = dec.stats
    assert lost > 0 and s.crc_errors + s.cobs_errors + s.length_errors + s.version_errors > 0
    assert len(got) > 0.5 * len(frames)  # decoding resumes at the next intact frame


@pytest.fixture(scope="module")
def c_driver(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("c") / "wb_vectors"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-g",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(C_DIR),
           str(C_DIR / "wb_frame.c"), str(ROOT / "tests" / "c" / "wb_vectors.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def _run_c(exe: Path, lines: list[str]) -> list[str]:
    proc = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_c_encoder_matches_python(c_driver):
    rng = random.Random(2)
    frames = [g[0] for g in GOLDEN] + _frames(500, rng)
    frames.append(Frame(3, bytes(rng.randrange(256) for _ in range(MAX_PAYLOAD)), seq=9))
    out = _run_c(c_driver, [f"E {f.type} {f.flags} {f.seq} {f.payload.hex() or '-'}"
                            for f in frames])
    assert out == [f"E {encode_frame(f).hex()}" for f in frames]


def test_c_refuses_an_oversized_payload(c_driver):
    assert _run_c(c_driver, [f"E 1 0 0 {'ab' * (MAX_PAYLOAD + 1)}"]) == ["E 0"]


def test_c_never_writes_past_the_buffer(c_driver):
    assert _run_c(c_driver, ["C"]) == ["C ok"]


def test_c_decoder_matches_python_on_corrupted_streams(c_driver):
    rng = random.Random(3)
    wire = _corrupt_stream(_frames(3000, rng), 0.01, rng)
    chunks = [wire[i:i + 4000] for i in range(0, len(wire), 4000)]
    out = _run_c(c_driver, [f"D {c.hex()}" for c in chunks])
    dec = FrameDecoder()
    expected = []
    for c in chunks:
        expected += [f"F {f.type} {f.flags} {f.seq} {f.payload.hex()}" for f in dec.feed(c)]
        s = dec.stats
        expected.append(f"S {s.frames} {s.crc_errors} {s.cobs_errors} {s.length_errors} "
                        f"{s.version_errors} {s.overflows} {s.bytes_skipped}")
    assert out == expected


def test_c_decoder_survives_garbage(c_driver):
    rng = random.Random(4)
    garbage = [bytes(rng.choice([0, rng.randrange(256)]) for _ in range(rng.randrange(1, 3000)))
               for _ in range(50)]
    garbage.append(bytes([1] * 5000))  # no delimiter for far longer than a frame: overflow
    out = _run_c(c_driver, [f"D {g.hex()}" for g in garbage])
    assert out[-1].startswith("S ") and int(out[-1].split()[6]) >= 1  # the overflow counted


def test_python_decoder_takes_any_bytes():
    """Random and adversarial byte sequences: no exception, bounded memory, and every frame
    delivered passes its own checks (re-encodes to the same frame)."""
    from wavedge.firmware_bridge.framing import MAX_ENCODED

    rng = random.Random(5)
    dec = FrameDecoder()
    for _ in range(300):
        kind = rng.randrange(4)
        n = rng.randrange(1, 2000)
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(n))
        elif kind == 1:
            data = bytes([0]) * n
        elif kind == 2:
            data = bytes([rng.randrange(1, 256)]) * n
        else:  # a valid frame with one byte changed
            wire = bytearray(encode_frame(_frames(1, rng)[0]))
            wire[rng.randrange(len(wire))] = rng.randrange(256)
            data = bytes(wire)
        for f in dec.feed(data):
            assert FrameDecoder().feed(encode_frame(f)) == [f]
        assert len(dec._buf) <= MAX_ENCODED


def test_codec_benchmark_reports_against_the_link_rate():
    from wavedge.firmware_bridge.bench import measure

    r = measure(frames=300, repeats=1)
    assert r["frames"] == 300 and r["bytes"] == r["bytes_per_frame"] * 300
    assert r["link_921600_baud_bytes_per_s"] == 92160
    assert r["decode_x_link"] == pytest.approx(r["decode_bytes_per_s"] / 92160)
