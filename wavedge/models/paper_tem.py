"""TEM-t against its paper (Whittington, Warren & Behrens, ICLR 2022, arXiv 2112.04035): does
path integration from actions let a transformer predict what it will see at a place it
reaches by a move it never made (zero-shot), where one without it cannot?

    python -m wavedge.models.paper_tem --profile quick --out out/paper-tem

For each seed, two runs on the same walks (``wavedge.models.gridworld``, 5x5 grids, 45
observations, a fresh environment per walk): TEM-t (``tem_t``, the ``grid_walks`` recipe) and
the same model with ``path_integration=False``, whose positions count time only. Every
``eval_every`` epochs: the accuracy on the visited and the zero-shot steps of walks in 32
environments training never drew. References: the edge agent (remembers each transition,
chance on zero-shot steps: 1/45) and the node agent (remembers each place: 1.0). The paper
gives no number (its figure 4: TEM-t at full performance within 20,000 updates).

After training, each TEM-t model streams one walk of ``long_steps`` steps in one environment,
never reset: its accuracy on visited steps there, in thousands of steps, and the largest
``|e|`` (the position code must stay bounded on a stream that never ends).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from wavedge.errors import InputError
from wavedge.models.gridworld import HELD_OUT_SEED, Grid, evaluate, train, walks
from wavedge.models.train import default_recipe
from wavedge.stopping import write_figure, write_whole

# the default recipe's 30 epochs (1,500 updates) a run: the model `wavedge train` gives
PROFILES = {"quick": dict(seeds=(0, 1), epochs=30),
            "full": dict(seeds=(0, 1, 2, 3, 4), epochs=30)}
EVAL_EVERY = 5  # epochs (250 updates)
EVAL_WALKS, EVAL_STEPS = 32, 400
LONG_STEPS = 20_000


def run(seed: int, path_integration: bool, epochs: int, progress: bool = False) -> dict:
    """One training run: the curve, the final metrics, and (TEM-t) the long stream."""
    base = default_recipe("grid_walks", "tem_t")
    recipe = replace(base, seed=seed, epochs=epochs,
                     model={**base.model, "path_integration": path_integration})
    grid, curve = Grid(), []

    def measure(model, done: int) -> None:
        if done % EVAL_EVERY == 0:
            s = evaluate(model, grid, EVAL_WALKS, EVAL_STEPS)
            curve.append({"updates": done * 50, **s})
            if progress:
                print(f"  {done * 50} updates: visited {s['visited']:.3f}, zero-shot "
                      f"{s['zero_shot']:.3f}", flush=True)

    t0 = time.perf_counter()
    model, meta = train(recipe, None, False, torch.device("cpu"), on_epoch=measure)
    out = {"seed": seed, "path_integration": path_integration, "curve": curve,
           "final": {k: meta["metrics"][k] for k in ("test_accuracy", "zero_shot_accuracy",
                                                   "zero_shot_steps")},
           "seconds": round(time.perf_counter() - t0, 1)}
    if path_integration:
        out["long_stream"] = long_stream(model, grid, LONG_STEPS)
    return out


@torch.inference_mode()
def long_stream(model, grid: Grid, steps: int) -> dict:
    """One walk of ``steps`` in one environment, never reset, step by step through the
    model's ``sequence`` in blocks (as a board streams it): the accuracy on visited steps per
    quarter, and the largest position magnitude reached."""
    w = walks(grid, 1, steps, np.random.default_rng(HELD_OUT_SEED + 7))
    state = model.init_state(1)
    hits, peak = [], 0.0
    for lo in range(0, steps, 1000):
        y, *state = model.sequence(*w.inputs(lo=lo, hi=lo + 1000), *state)
        hits.append(y[0].argmax(-1).numpy() == w.target[0, lo:lo + 1000])
        peak = max(peak, float(state[0].abs().max()))
    hit, seen = np.concatenate(hits), w.visited[0]
    quarters = np.array_split(np.arange(steps), 4)
    return {"steps": steps, "visited_accuracy": [float(hit[q][seen[q]].mean()) for q in quarters],
            "largest_position": peak, "memory": model.memory}


def summarise(rows: list[dict]) -> dict:
    out = {"edge_agent_zero_shot": 1 / Grid().observations, "node_agent_zero_shot": 1.0}
    for pi, name in ((True, "tem_t"), (False, "no_path_integration")):
        z = [r["final"]["zero_shot_accuracy"] for r in rows if r["path_integration"] is pi]
        v = [r["final"]["test_accuracy"] for r in rows if r["path_integration"] is pi]
        if z:
            out[name] = {"zero_shot_mean": float(np.mean(z)), "zero_shot_range": [min(z), max(z)],
                         "visited_mean": float(np.mean(v)), "visited_range": [min(v), max(v)],
                         "seeds": [r["seed"] for r in rows if r["path_integration"] is pi]}
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        c = "tab:red" if r["path_integration"] else "tab:blue"
        first = r["seed"] == rows[0]["seed"]
        ax.plot([p["updates"] for p in r["curve"]], [p["zero_shot"] for p in r["curve"]],
                color=c, alpha=0.7, label=("TEM-t" if r["path_integration"] else
                                           "no path integration") if first else None)
    ax.axhline(1 / Grid().observations, color="grey", lw=0.8, ls="--", label="edge agent")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="node agent")
    ax.set_xlabel("gradient update")
    ax.set_ylabel("zero-shot accuracy (fresh environments)")
    ax.legend()
    write_figure(fig, path, 120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--out", type=Path, default=Path("out/paper-tem"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                    help="these seeds instead of the profile's (--merge joins results)")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                    help="train nothing: join these folders' results.json into --out")
    args = ap.parse_args(argv)
    profile = PROFILES[args.profile]
    try:
        if args.seeds is not None and min(args.seeds) < 0:
            raise InputError(f"--seeds must be 0 or more, got {min(args.seeds)}")
        rows = _merged(args.merge) if args.merge else _trained(args, profile)
    except InputError as exc:
        ap.exit(1, f"paper_tem: {exc}\n")
    summary = _write(args.out, rows, profile)
    plot(rows, args.out / "zero-shot.png")
    print(json.dumps(summary))
    print(f"wrote {args.out}/results.json, zero-shot.png")
    return 0


def _trained(args, profile: dict) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds if args.seeds is not None else profile["seeds"]:
        for pi in (False, True):  # in turn, so a slow spell hits both
            r = run(seed, pi, profile["epochs"])
            rows.append(r)
            _write(args.out, rows, profile)  # after every run: a long run stopped keeps it
            long = r.get("long_stream")
            print(f"seed {seed} {'TEM-t' if pi else 'no path integration'}: zero-shot "
                  f"{r['final']['zero_shot_accuracy']:.3f}, visited "
                  f"{r['final']['test_accuracy']:.3f} ({r['seconds']:.0f} s)"
                  + (f"; {long['steps']}-step stream: visited "
                     f"{', '.join(f'{a:.3f}' for a in long['visited_accuracy'])} by quarter, "
                     f"|e| at most {long['largest_position']:.2f}" if long else ""), flush=True)
    return rows


def _merged(folders: list[Path]) -> list[dict]:
    from wavedge.models.paper_wave_rnn import merged_runs

    return merged_runs(folders, lambda r: (r["seed"], r["path_integration"]),
                       lambda r: f"seed {r['seed']}")


def _write(out: Path, rows: list[dict], profile: dict) -> dict:
    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    recipe = asdict(default_recipe("grid_walks", "tem_t"))
    write_whole(out / "results.json", json.dumps(
        {"grid": asdict(Grid()), "recipe": {**recipe, "epochs": profile["epochs"]},
         "summary": summary, "runs": rows}, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
