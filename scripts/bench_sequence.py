"""Training time per iteration against sequence length: `sequence` as it is (the drive split
per step) against the `drive[:, i]` indexing it replaced (before), interleaved, for the
Wave-RNN and the iRNN. One iteration is a forward pass over a batch, the loss on every step and the backward
pass, as `wavedge.models.train` does.

    .venv/bin/python scripts/bench_sequence.py --out out/bench/sequence.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wavedge.models import build_model


def _indexed_sequence(model, x, h):
    """The loop as it was: ``drive[:, i]`` per step (kept here only to measure it)."""
    b, t, _ = x.shape
    if model.arch == "wave_rnn":
        drive = model.encoder(x).view(b, t, model.channels, model.ring_size)
        hs = []
        for i in range(t):
            h = model._update(drive[:, i], h)
            hs.append(h)
        return model.readout(torch.stack(hs, dim=1).flatten(2)), h
    drive = model.encoder(x)
    hs = []
    for i in range(t):
        h = torch.relu(drive[:, i] + model.recurrent(h))
        hs.append(h)
    return model.readout(torch.stack(hs, dim=1)), h


def _iteration(model, x, y, indexed: bool) -> float:
    h = model.init_state(x.shape[0])[0]
    t0 = time.perf_counter()
    logits, _ = _indexed_sequence(model, x, h) if indexed else model.sequence(x, h)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    model.zero_grad()
    loss.backward()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="100,250,500,1000")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("out/bench/sequence.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = []
    for arch, config in (("wave_rnn", {"channels": 16, "ring_size": 64}),
                         ("irnn", {"hidden_size": 128})):
        model = build_model(arch, input_size=6, output_size=4, **config)
        for t in (int(v) for v in args.lengths.split(",")):
            x = torch.randn(args.batch, t, 6)
            y = torch.randint(4, (args.batch, t))
            times = {"before": [], "after": []}
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for key, indexed in (("before", True), ("after", False)):
                    times[key].append(_iteration(model, x, y, indexed))
            best = {k: min(v) for k, v in times.items()}
            rows.append({"arch": arch, "steps": t, "batch": args.batch,
                         "seconds_before": round(best["before"], 4),
                         "seconds_after": round(best["after"], 4),
                         "speedup": round(best["before"] / best["after"], 2)})
            print(f"{arch:9s} T={t:5d}: before {best['before']:.3f} s, after "
                  f"{best['after']:.3f} s per iteration, {rows[-1]['speedup']}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"method": "best of the repeats, one thread, interleaved",
                                    "repeats": args.repeats, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
