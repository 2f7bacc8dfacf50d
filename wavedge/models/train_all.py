"""Train every default recipe and write a results table: ``python -m wavedge.models.train_all``.

Writes ``<out>/<task>-<arch>.pt`` checkpoints and ``<out>/results.json``; prints a Markdown
table of test accuracy at the final step, parameters and training time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from wavedge.models.data import DATASETS
from wavedge.errors import InputError
from wavedge.models.tasks import generator
from wavedge.models.train import RECIPES, USER_DATA, torch_device, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", metavar="TASK/ARCH",
                        help="train only these recipes, e.g. basic_motions/gru")
    parser.add_argument("--device", default="cpu",
                        help="where torch trains: cpu (default), cuda, cuda:N, mps or auto")
    args = parser.parse_args(argv)
    # the "recordings" and "walks" recipes are for the user's own data (wavedge train --data)
    known = [f"{task}/{arch}" for task, arch in sorted(RECIPES)
             if task in DATASETS or (generator(task) and task not in USER_DATA)]
    try:
        torch_device(args.device)
        unknown = [name for name in args.only or () if name not in known]
        if unknown:  # had trained nothing and printed an empty table
            raise InputError(f"--only {' '.join(unknown)}: no such recipe; known: "
                             f"{', '.join(known)}")
    except InputError as exc:
        parser.exit(1, f"train_all: {exc}\n")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in known:
        if args.only and name not in args.only:
            continue
        task, arch = name.split("/")
        recipe = RECIPES[(task, arch)]
        _, meta = train(recipe, out=args.out / f"{task}-{arch}.pt", device=args.device)
        m = meta["metrics"]
        # a generated task's metrics are its own (TEM-t's walks: zero-shot, no stream pass)
        rows.append({"task": task, "arch": arch, "test_accuracy": m["test_accuracy"],
                     "test_stream_accuracy": m.get("test_stream_accuracy"),
                     "train_accuracy": m.get("train_accuracy"),
                     "zero_shot_accuracy": m.get("zero_shot_accuracy"),
                     "n_parameters": m["n_parameters"],
                     "train_seconds": m["train_seconds"], "epochs": recipe.epochs,
                     "seed": recipe.seed, "device": meta["device"]})
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| task | model | test acc. | stream acc. | parameters | train time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        stream = r["test_stream_accuracy"]
        print(f"| {r['task']} | {r['arch']} | {r['test_accuracy']:.3f} "
              f"| {'-' if stream is None else f'{stream:.3f}'} | {r['n_parameters']:,} "
              f"| {r['train_seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
