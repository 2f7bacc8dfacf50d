"""The stand-in microcontroller: ``c/wb_standin.c`` (built on the same ``wb_frame`` C files a
firmware uses) compiled on the host and attached to a pseudo-terminal. Tests and the demo use
it as the board: the host opens ``StandIn.port`` like any serial device.

    python -m wavedge.firmware_bridge.standin MODEL_DIR   # stream the recording to it
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib.resources import files
from pathlib import Path

from wavedge.errors import WavedgeError
from wavedge.firmware_bridge.link import LinkError

C_DIR = Path(str(files("wavedge.firmware_bridge") / "c"))


def build(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile the stand-in with ``-Wall -Wextra -Werror`` into ``out_dir``."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise LinkError("building the stand-in microcontroller needs a C compiler (gcc or cc)")
    exe = Path(out_dir) / "wb_standin"
    cmd = [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(C_DIR),
           str(C_DIR / "wb_frame.c"), str(C_DIR / "wb_standin.c"), "-o", str(exe)]
    if sanitize:
        cmd[3:3] = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LinkError(f"building the stand-in failed: {proc.stderr.strip().splitlines()[-1]}")
    return exe


class StandIn:
    """The stand-in running on the master side of a new pseudo-terminal; ``port`` is the
    slave's path. Its output lines collect in ``lines``; ``close()`` waits for it to exit.
    With ``samples`` (a file of numbers, a sample a line) it is the sensor too: it sends them
    as SENSOR frames, ``rate_hz`` a second, once the host has said HELLO."""

    def __init__(self, exe: Path, boot_id: int = 1, port: str | None = None,
                 samples: Path | None = None, rate_hz: float = 100.0) -> None:
        self.lines: list[str] = []
        self._ready = threading.Event()
        sensor = ["-s", str(samples), "-r", f"{rate_hz:g}"] if samples is not None else []
        if port is not None:  # an existing port (a real device, or a proxy's board side)
            self.port, self._slave = port, None
            self.proc = subprocess.Popen([str(exe), port, str(boot_id), *sensor],
                                         stdout=subprocess.PIPE, text=True)
            self._start_reader()
            return
        master, slave = os.openpty()
        self.port = os.ttyname(slave)
        import termios
        import tty

        tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are
        termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(slave))
        self._slave = slave  # held until close(): the path lives while a slave fd is open
        self.proc = subprocess.Popen([str(exe), "-f", str(master), str(boot_id), *sensor],
                                     pass_fds=(master,), stdout=subprocess.PIPE, text=True)
        os.close(master)
        self._start_reader()

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(5):
            raise LinkError("the stand-in microcontroller did not start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("READY"):
                self._ready.set()

    def close(self, timeout_s: float = 5.0) -> int:
        """Wait for the stand-in to see the host hang up and exit; returns its exit status."""
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(timeout=1.0)
        return rc


def main(argv: list[str] | None = None) -> int:
    """Stream a model directory's recording into the stand-in over a pseudo-terminal."""
    import argparse

    from wavedge.runtime import load_model, open_sink, open_source
    from wavedge.runtime.loop import run

    ap = argparse.ArgumentParser(description="Stream a model's recording to the stand-in "
                                             "microcontroller over a pseudo-terminal.")
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--limit", type=int, default=400, help="samples to stream (400)")
    args = ap.parse_args(argv)
    try:
        model = load_model(args.model_dir)
    except WavedgeError as exc:
        print(f"standin: error: {exc}", file=sys.stderr)
        return 1
    try:
        rec = model.manifest.own_recording("the stand-in replays it to the host")
    except WavedgeError as exc:
        print(f"standin: error: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        board = StandIn(build(Path(tmp)))
        source = open_source(f"replay:{rec}?rate=max&limit={args.limit}", model.manifest)
        # a send queue that holds the whole run: the demo shows every result arriving, and at
        # rate=max on a loaded machine the default 256 (drop-oldest) lost 498 of 4,000
        sink = open_sink(f"link:{board.port}?queue={max(256, args.limit)}", model.manifest)
        summary = run(model.stream(), source, sink)
        board.close()
    results = [ln for ln in board.lines if ln.startswith("RESULT")]
    labels = model.manifest.labels
    print(f"stand-in microcontroller on {board.port} (wb_standin, C), what it printed:")
    for line in board.lines[:2]:
        print(f"  {line}")
    for line in results[99::100]:  # the last sample of each 100-sample recording
        cls = int(line.split("class=")[1].split()[0])
        print(f"  {line}  ({labels[cls] if cls < len(labels) else '?'})")
    print(f"  {board.lines[-1]}")
    print(f"host sent {summary.samples} results; the board decoded {len(results)} RESULT frames")
    return 0 if len(results) == summary.samples else 1


if __name__ == "__main__":
    sys.exit(main())
