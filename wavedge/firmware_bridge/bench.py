"""Throughput of the Python frame codec against a serial link's byte rate:
``python -m wavedge.firmware_bridge.bench`` (``make bench-bridge``).

Encodes RESULT frames like the ``link:`` sink sends (with a 4-float vector), then decodes the
byte stream in 256-byte chunks as the reader thread receives it, and compares the bytes per
second with a link's (a UART moves 10 bits per byte: 921600 baud is 92,160 bytes/s).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from wavedge.firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from wavedge.firmware_bridge.messages import Result


def measure(frames: int = 20000, chunk: int = 256, repeats: int = 3) -> dict:
    msgs = [Result(0, i, i * 10, i % 4, 0.9, (0.1, -0.2, 0.3, -0.4)) for i in range(frames)]
    best_enc = best_dec = float("inf")
    wire = b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        wire = b"".join(encode_frame(Frame(2, m.pack(), i & 0xFFFF)) for i, m in enumerate(msgs))
        best_enc = min(best_enc, time.perf_counter() - t0)
        dec = FrameDecoder()
        t0 = time.perf_counter()
        got = 0
        for i in range(0, len(wire), chunk):
            got += len(dec.feed(wire[i:i + chunk]))
        best_dec = min(best_dec, time.perf_counter() - t0)
        assert got == frames
    link = 921600 / 10
    return {"frames": frames, "bytes": len(wire), "bytes_per_frame": len(wire) / frames,
            "encode_bytes_per_s": len(wire) / best_enc, "decode_bytes_per_s": len(wire) / best_dec,
            "link_921600_baud_bytes_per_s": link,
            "encode_x_link": len(wire) / best_enc / link,
            "decode_x_link": len(wire) / best_dec / link,
            "method": f"best of {repeats}; decode fed {chunk}-byte chunks"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--out", help="write the result as JSON here too")
    args = ap.parse_args(argv)
    r = measure(args.frames)
    print(f"{r['frames']} RESULT frames, {r['bytes_per_frame']:.0f} bytes each on the wire")
    print(f"encode {r['encode_bytes_per_s'] / 1e6:.2f} MB/s = {r['encode_x_link']:.1f}x a "
          f"921600-baud link; decode {r['decode_bytes_per_s'] / 1e6:.2f} MB/s = "
          f"{r['decode_x_link']:.1f}x")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
