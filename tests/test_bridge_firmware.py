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
    main = tmp_path / "main.cpp"
    main.write_text(f'#include "{ROOT / "tests" / "c" / "arduino_stub.h"}"\n'
                    '#include "wavedge_bridge.ino"\nint main() { setup(); loop(); return 0; }\n')
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c",
                    str(sketch / "wb_frame.c"), "-o", str(tmp_path / "wb_frame.o")], check=True)
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(sketch),
                    str(main), str(tmp_path / "wb_frame.o"), "-o", str(tmp_path / "sketch")],
                   check=True)
    assert subprocess.run([str(tmp_path / "sketch")]).returncode == 0


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
    import subprocess
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
