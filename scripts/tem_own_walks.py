"""TEM-t trained on logged walks, as a user trains it on their own (`make tem-own-walks`).

    python scripts/tem_own_walks.py --walks 4,10,40 --out out/tem-own-walks

For each count of walks: that many walks of ``--steps`` steps, each in a fresh 5x5 grid
world (seed 1), are written as a user's log (``sequence,observation,action``, and a second
log with a ``place`` column), and ``wavedge train --arch tem_t --data LOG`` trains on each
(the default recipe, a quarter of the walks held out), on the log with places without the
recipe's relabelling, and on a log in which a tenth of the moves logged failed (the agent
stayed). Each model is then scored as the generated default is
(``gridworld.evaluate``): on 64 walks of 400 steps in environments no log holds (seed
10,000), on visited and zero-shot steps. Writes ``results.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_json  # noqa: E402

from wavedge.models.gridworld import TEST_STEPS, TEST_WALKS, Grid, evaluate, walks  # noqa: E402
from wavedge.models.train import default_recipe, train, user_data  # noqa: E402


def write_log(path: Path, n: int, steps: int, places: bool, seed: int,
              failed: float = 0.0) -> Path:
    """``n`` walks as a log; ``failed``: before that share of steps, a commanded move that
    did not happen (a random move logged, the agent where it was), as a robot that logs the
    command rather than the move made would write it."""
    w = walks(Grid(), n, steps, np.random.default_rng(seed))
    fail = np.random.default_rng(seed + 1)
    with path.open("w") as f:
        f.write("sequence,observation,action" + ",place" * places + "\n")
        for b in range(n):
            for t in range(steps):
                here = f"{b},{w.observation[b, t]},{{}}" + f",{w.place[b, t]}" * places + "\n"
                if failed and fail.random() < failed:
                    f.write(here.format(int(fail.integers(1, 5))))
                f.write(here.format(w.action[b, t]))
    return path


# name: (a place column, the recipe's relabelling, the share of commanded moves that failed)
CONDITIONS = {"places": (True, True, 0.0), "no-places": (False, True, 0.0),
              "no-relabel": (True, False, 0.0), "failed-moves": (True, True, 0.1)}


def one(log: Path, epochs: int | None, relabel: bool) -> dict:
    task, data = user_data(str(log), "tem_t")
    recipe = default_recipe(task, "tem_t")
    recipe = replace(recipe, epochs=epochs or recipe.epochs, relabel=relabel)
    model, meta = train(recipe, progress=False, dataset=data)
    fresh = evaluate(model, Grid(), TEST_WALKS, TEST_STEPS)
    m = meta["metrics"]
    return {"held_out_accuracy": m["test_accuracy"], "held_out_metric": m["metric"],
            "fresh_visited": fresh["visited"], "fresh_zero_shot": fresh["zero_shot"],
            "train_seconds": m["train_seconds"], "epochs": recipe.epochs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--walks", default="4,10,40",
                   help="counts of logged walks, comma-separated")
    p.add_argument("--steps", type=int, default=300, help="steps per logged walk")
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"comma-separated, of {', '.join(CONDITIONS)}")
    p.add_argument("--epochs", type=int, help="override the recipe's 30")
    p.add_argument("--seed", type=int, default=1, help="the logs' walks and environments")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("out/tem-own-walks"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(v) for v in args.walks.split(",")):
        for name in args.conditions.split(","):
            places, relabel, failed = CONDITIONS[name]
            log = write_log(args.out / f"walks{n}-{name}.csv", n, args.steps, places,
                            args.seed, failed)
            row = {"walks": n, "steps": args.steps, "condition": name, "places": places,
                   "relabel": relabel, "failed_moves": failed,
                   **one(log, args.epochs, relabel)}
            print(row, flush=True)
            rows.append(row)
    write_json(args.out / "results.json", {
        "what": "TEM-t trained by `wavedge train --arch tem_t --data LOG` on logged walks in "
                f"fresh 5x5 grid worlds (seed {args.seed}), scored on {TEST_WALKS} walks of "
                f"{TEST_STEPS} steps in environments no log holds",
        "threads": args.threads, "torch": torch.__version__, "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
