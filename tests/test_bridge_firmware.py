"""`wavedge firmware --out DIR` copies the C library and an Arduino sketch that compiles."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT, assert_one_line_error, run_cli


def test_firmware_copies_the_library_and_the_sketch_compiles(tmp_path):
    proc = run_cli("firmware", "--out", tmp_path / "fw")
    assert proc.returncode == 0, proc.stderr
    sketch = tmp_path / "fw" / "wavedge_bridge"
    for name in ("wb_frame.h", "wb_frame.c"):
        assert (tmp_path / "fw" / name).read_bytes() == \
            (ROOT / "wavedge" / "firmware_bridge" / "c" / name).read_bytes()
        assert (sketch / name).exists()
    if not (shutil.which("g++") and shutil.which("gcc")):
        pytest.skip("no C/C++ compiler to build the sketch against the Arduino stub")
    assert subprocess.run([str(_sketch(tmp_path, sketch))],
                          stdin=subprocess.DEVNULL).returncode == 0


def _sketch(tmp_path, sketch, *defines: str):
    """The sketch built on the host against the Arduino stub (Serial on stdin and stdout),
    its main() running setup() and then loop() ten times."""
    main = tmp_path / "main.cpp"
    main.write_text(f'#include "{ROOT / "tests" / "c" / "arduino_stub.h"}"\n'
                    '#include "wavedge_bridge.ino"\n'
                    'int main() { setup(); for (int i = 0; i < 10; i++) loop(); return 0; }\n')
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c",
                    str(sketch / "wb_frame.c"), "-o", str(tmp_path / "wb_frame.o")], check=True)
    exe = tmp_path / "sketch"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", *defines, "-I",
                    str(sketch), str(main), str(tmp_path / "wb_frame.o"), "-o", str(exe)],
                   check=True)
    return exe


def test_the_sketch_as_the_sensor_sends_samples_once_the_host_says_hello(tmp_path):
    """The sketch only received: a board whose sensor fed the model needed firmware of its
    own. Built with SENSOR_CHANNELS=6, it answers the host's HELLO and then sends a SENSOR
    frame of its six readings every 100 ms (10 Hz), numbered from 0; none before the HELLO."""
    from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, PROTOCOL_VERSION, Frame,
                                                 FrameDecoder, encode_frame)
    from wavedge.firmware_bridge.messages import SCHEMA_HASH, Hello, Sensor, pack, unpack

    if not (shutil.which("g++") and shutil.which("gcc")):
        pytest.skip("no C/C++ compiler to build the sketch against the Arduino stub")
    assert run_cli("firmware", "--out", tmp_path / "fw").returncode == 0
    exe = _sketch(tmp_path, tmp_path / "fw" / "wavedge_bridge", "-DSENSOR_CHANNELS=6",
                  "-DSENSOR_HZ=10")
    silent = subprocess.run([str(exe)], stdin=subprocess.DEVNULL, capture_output=True)
    assert silent.returncode == 0 and silent.stdout == b""  # no HELLO: nobody listens
    hello = encode_frame(Frame(*pack(Hello(PROTOCOL_VERSION, SCHEMA_HASH, MAX_PAYLOAD, 7)), 0))
    proc = subprocess.run([str(exe)], input=hello, capture_output=True)
    got = [unpack(f.type, f.payload) for f in FrameDecoder().feed(proc.stdout)]
    assert isinstance(got[0], Hello) and got[0].schema_hash == SCHEMA_HASH
    sensors = got[1:]
    # millis() advances 50 ms a call; the HELLO came at 50 ms, so samples fall due at 50,
    # 150, ... 550 ms: six in the ten loops (to 550 ms)
    assert [type(m) for m in sensors] == [Sensor] * 6
    assert [m.first_step for m in sensors] == [0, 1, 2, 3, 4, 5]
    want = [pin * 5.0 / 1023 for pin in range(14, 20)]  # the stub's analogRead(pin) is pin
    for m in sensors:
        assert m.channels == 6 and m.values == pytest.approx(want, rel=1e-6)


def test_an_edited_sketch_is_not_overwritten_without_force(tmp_path):
    """A second `firmware --out` into the same folder replaced the user's edited sketch
    without a word."""
    assert run_cli("firmware", "--out", tmp_path).returncode == 0
    ino = tmp_path / "wavedge_bridge" / "wavedge_bridge.ino"
    edited = ino.read_text() + "// my board's pins\n"
    ino.write_text(edited)
    assert_one_line_error(run_cli("firmware", "--out", tmp_path),
                          "wavedge_bridge.ino differs from this wavedge's copy", "--force")
    assert ino.read_text() == edited
    forced = run_cli("firmware", "--out", tmp_path, "--force")
    assert forced.returncode == 0 and f"wrote {ino}" in forced.stdout
    assert f"unchanged {tmp_path / 'wb_frame.c'}" in forced.stdout
    assert ino.read_bytes() == (ROOT / "wavedge" / "firmware_bridge" / "c" / "arduino" /
                                "wavedge_bridge" / "wavedge_bridge.ino").read_bytes()


def test_a_full_disk_leaves_no_file_cut_short_and_names_the_file(tmp_path):
    """`firmware` on a full disk left an empty wb_frame.h, which the next run, with room
    again, refused as "differs from this wavedge's copy" until --force; the error named
    no file."""
    import resource
    import sys

    from conftest import user_env

    def full():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "firmware", "--out",
                           str(tmp_path)], capture_output=True, text=True, env=user_env(),
                          timeout=60, preexec_fn=full)
    assert_one_line_error(proc, f"{tmp_path / 'wb_frame.h'}: File too large")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert run_cli("firmware", "--out", tmp_path).returncode == 0
