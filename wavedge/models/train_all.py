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
from wavedge.models.train import RECIPES, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", metavar="TASK/ARCH",
                        help="train only these recipes, e.g. basic_motions/gru")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for (task, arch), recipe in sorted(RECIPES.items()):
        # the "recordings" recipes are for the user's own data (wavedge train --data)
        if task not in DATASETS or (args.only and f"{task}/{arch}" not in args.only):
            continue
        _, meta = train(recipe, out=args.out / f"{task}-{arch}.pt")
        m = meta["metrics"]
        rows.append({"task": task, "arch": arch, "test_accuracy": m["test_accuracy"],
                     "test_stream_accuracy": m["test_stream_accuracy"],
                     "train_accuracy": m["train_accuracy"], "n_parameters": m["n_parameters"],
                     "train_seconds": m["train_seconds"], "epochs": recipe.epochs,
                     "seed": recipe.seed})
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| task | model | test acc. (final step) | stream acc. | parameters | train time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['arch']} | {r['test_accuracy']:.3f} "
              f"| {r['test_stream_accuracy']:.3f} | {r['n_parameters']:,} "
              f"| {r['train_seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
