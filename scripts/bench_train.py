"""Training time per epoch on each device, the devices interleaved (`make bench-train`).

    python scripts/bench_train.py --device cpu --device cuda --repeats 3 --out out/bench-train

Each repeat trains every size on every device in turn, from the same seed (so the same
batches, noise and initial weights: wavedge.models.train), for a few epochs without the
int8-aware ones, and records the seconds per epoch and the test accuracy it reached. The
sizes: the bundled recipe (BasicMotions, 16 rings of 64, batch 8, 4 recordings back to back),
the same at 64 rings of 256, and sequential digits (batch 32). Writes ``train.json`` and a
table with the median and [min, max] over the repeats, and each device's time over the first's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_json  # noqa: E402

from wavedge.errors import InputError  # noqa: E402
from wavedge.models.data import load_dataset  # noqa: E402
from wavedge.models.train import default_recipe, device_name, torch_device, train  # noqa: E402

SIZES = {  # name: (task, model, epochs timed)
    "basic_motions 16x64": ("basic_motions", {"channels": 16, "ring_size": 64}, 2),
    "basic_motions 64x256": ("basic_motions", {"channels": 64, "ring_size": 256}, 1),
    "digits 16x64": ("digits", {"channels": 16, "ring_size": 64}, 1),
}


def one(task: str, model: dict, epochs: int, device: str, data) -> dict:
    recipe = replace(default_recipe(task, "wave_rnn"), model=model, epochs=epochs,
                     quant_aware_epochs=0)
    _, meta = train(recipe, progress=False, dataset=data, device=device)
    m = meta["metrics"]
    return {"seconds_per_epoch": m["train_seconds"] / epochs,
            "test_accuracy": m["test_accuracy"]}


def table(report: dict) -> str:
    """Per size: each device's seconds per epoch, median [min, max], then each device's
    median of per-repeat ratios to the first device (the runs of a repeat are neighbours)."""
    devices = report["devices"]
    head = [f"{d}: s per epoch" for d in devices] + [f"{d} / {devices[0]}" for d in devices[1:]]
    lines = ["| size | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for size, by_device in report["results"].items():
        s = {d: [r["seconds_per_epoch"] for r in by_device[d]] for d in devices}
        cells = [f"{statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]" for v in s.values()]
        cells += [f"{statistics.median(b / a for a, b in zip(s[devices[0]], s[d])):.2f}"
                  for d in devices[1:]]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", help="cpu, cuda, ... (repeat; default cpu)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--size", action="append", choices=sorted(SIZES),
                    help="the sizes to time (default all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    devices = args.device or ["cpu"]
    try:  # refused before any training
        names = {d: device_name(torch_device(d)) for d in devices}
    except InputError as exc:
        ap.exit(1, f"bench_train: {exc}\n")
    torch.set_num_threads(args.threads)
    sizes = {k: SIZES[k] for k in (args.size or SIZES)}
    data = {task: load_dataset(task) for task, _, _ in sizes.values()}
    results = {size: {d: [] for d in devices} for size in sizes}
    task, model, _ = next(iter(sizes.values()))
    for d in devices:  # not timed: a GPU's context and libraries load at its first run
        one(task, model, 1, d, data[task])
    for k in range(args.repeats):
        for size, (task, model, epochs) in sizes.items():
            for d in devices if k % 2 == 0 else devices[::-1]:  # neither always first
                results[size][d].append(one(task, model, epochs, d, data[task]))
                print(f"repeat {k} {size} {d}: {results[size][d][-1]}", flush=True)
        report = {"devices": devices, "device_names": names, "threads": args.threads,
                  "torch": torch.__version__, "repeats": k + 1, "results": results}
        if args.out:  # after every repeat: a run stopped keeps what it timed
            write_json(args.out / "train.json", report)
            (args.out / "train.md").write_text(table(report) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
