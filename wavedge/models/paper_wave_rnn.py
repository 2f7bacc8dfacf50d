"""The wave-encoder against its paper: the adding and copy tasks of Keller et al. (ICLR 2024).

    python -m wavedge.models.paper_wave_rnn --profile quick --out out/paper-wave-rnn

Both tasks as the authors' code defines them (repository ``akandykeller/Wave_RNNs``,
``copy/utils.py``, ``adding/utils.py`` and the ``*_task.py`` scripts; see
docs/paper-wave-rnn.md): the same generators, losses, readouts, optimiser (plain Adam, global
norm clipping), batch 128 and logging, drawn from a seeded generator instead of numpy's global
one. The Wave-RNN (``WaveRNN``: u-shift and V init, ReLU) against the iRNN (``IRNN``: identity
recurrence) of about the same parameter count, at lengths and budgets this CPU can run.

Writes ``results.json`` (every run's learning curve and final test numbers), ``results.md``
(the table the docs quote) and ``curves.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wavedge.errors import InputError
from wavedge.models import build_model
from wavedge.models.train import float32_arithmetic, device_name, torch_device
from wavedge.stopping import write_figure, write_whole

MEMORY = 10  # the copy task's digits to remember (the authors' mem_len)
SOLVED_MSE = 0.05  # adding: "solved" when the train loss is at most this at a log step


@dataclass(frozen=True)
class Copy:
    """``T + 10`` steps: digits 1-8 in steps 0-9, blank 0, the delimiter 9 at step ``T - 1``,
    and the 10 digits to recall in the last 10 steps (0 elsewhere); one-hot(10) in, 10 classes
    out at every step. The paper's T is the code's T minus 10 (seeds.md 1.4)."""

    T: int
    input_size: int = 10
    output_size: int = 10
    test_batch: int = 50  # the authors' batch_test

    @property
    def name(self) -> str:
        return f"copy T={self.T - MEMORY}"

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(n, self.T + MEMORY, dtype=torch.long)
        digits = torch.randint(1, 9, (n, MEMORY), generator=gen)
        x[:, :MEMORY] = digits
        x[:, -(MEMORY + 1)] = 9
        y = torch.zeros_like(x)
        y[:, -MEMORY:] = digits
        return nn.functional.one_hot(x, 10).float(), y

    def outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)  # the readout at every step

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the authors' objective: cross-entropy over every step, divided again by the batch
        # (their "Test MSE" is this on 50 sequences: CE / 50)
        ce = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())
        return ce / y.shape[0]

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict:
        # the authors' "Test MSE": the mean cross-entropy / 50 (their test batch), whatever
        # the number of test sequences (the final test uses 1,000)
        ce = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())
        recall = (out[:, -MEMORY:].argmax(-1) == y[:, -MEMORY:]).float().mean()
        return {"test_loss": float(ce) / self.test_batch, "recall": float(recall)}


@dataclass(frozen=True)
class Adding:
    """``T`` steps of ``[value ~ U(0, 1), marker]``, one marker in each half; the target is the
    sum of the two marked values, MSE on the last step's output."""

    T: int
    input_size: int = 2
    output_size: int = 1
    test_batch: int = 1000  # the authors' batch_test

    @property
    def name(self) -> str:
        return f"adding T={self.T}"

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.rand(n, self.T, generator=gen)
        half = self.T // 2
        first = torch.randint(0, half, (n,), generator=gen)
        second = torch.randint(half, self.T, (n,), generator=gen)
        markers = torch.zeros(n, self.T)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        return torch.stack([values, markers], dim=-1), (values * markers).sum(1)

    def outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # the readout of the final state only, the input drive inside each step, as the
        # authors do: 0.45 s per iteration here against 0.9 s for `sequence`, whose batched
        # drive and every-step readout move four 138 MB tensors through autograd
        h = model.init_state(x.shape[0])
        for x_t in x.unbind(1):
            out, *h = model.step(x_t, *h)
        return out

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out[:, 0], y)

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict:
        return {"test_loss": float(self.loss(out, y))}


# the paper's sizes: Table 1 (adding: n=100, c=27 against an iRNN n=100) and the copy task
# (n=100, c=6 against an iRNN n=100); both with the authors' inits
MODELS = {"copy": {"wave_rnn": {"channels": 6, "ring_size": 100}, "irnn": {"hidden_size": 100}},
          "adding": {"wave_rnn": {"channels": 27, "ring_size": 100},
                     "irnn": {"hidden_size": 100}}}
TASKS = {"copy": Copy, "adding": Adding}
ARCHS = ("wave_rnn", "irnn")


@dataclass(frozen=True)
class Run:
    task: str
    T: int  # as the authors' code counts it
    iterations: dict  # per model: the iRNN is cheap enough to get a longer budget
    lr: float = 1e-3
    clip: float = 1.0  # one point of the authors' grid (lr {1e-2,1e-3,1e-4} x clip {0,1,10})
    log_every: int = 100


@dataclass(frozen=True)
class Profile:
    seeds: tuple[int, ...]
    runs: tuple[Run, ...] = field(default_factory=tuple)


# the iRNN is cheap per iteration (a 100 x 100 matmul per step against the 27-channel ring
# convolution), so it gets five times the wave-encoder's budget (the paper's iRNN solves
# at 14,000)
ADDING = Run("adding", 100, {"wave_rnn": 600, "irnn": 3000})
PROFILES = {
    # one seed, the short copy task and the adding task to the paper's wRNN "solved" point
    "quick": Profile((0,), (Run("copy", 20, {"wave_rnn": 1000, "irnn": 1000}),
                            Run("adding", 100, {"wave_rnn": 300, "irnn": 300}))),
    "full": Profile((0, 1, 2), (Run("copy", 20, {"wave_rnn": 3000, "irnn": 3000}),
                                Run("copy", 40, {"wave_rnn": 2000, "irnn": 2000}),
                                ADDING)),
    "adding": Profile((0, 1, 2), (ADDING,)),  # the full profile's adding runs alone
}


def parameters(model: nn.Module) -> dict:
    """Parameter counts with and without biases (the paper's tables count weights only)."""
    total = sum(p.numel() for p in model.parameters())
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    return {"with_biases": total, "weights_only": total - biases}


def train_one(run: Run, arch: str, seed: int, progress: bool = True,
              device: str = "cpu") -> dict:
    """One model on one task from one seed: the authors' loop (fresh batch per iteration,
    Adam, clipping, a fresh test batch at every log step), then a final test on 1,000 fresh
    sequences. On any ``device`` the batches are drawn on the CPU from the seed, so a GPU run
    sees the CPU run's data (and starts from its weights)."""
    task = TASKS[run.task](run.T)
    where = torch_device(device)
    torch.manual_seed(seed)
    model = build_model(arch, input_size=task.input_size, output_size=task.output_size,
                        **MODELS[run.task][arch]).to(where)
    with float32_arithmetic(where):
        return _train_one(run, task, model, arch, seed, progress, where)


def _train_one(run: Run, task, model: nn.Module, arch: str, seed: int, progress: bool,
               where: torch.device) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=run.lr)
    train_gen = torch.Generator().manual_seed(seed)
    test_gen = torch.Generator().manual_seed(10_000 + seed)
    curve, solved, t0 = [], None, time.perf_counter()
    for i in range(run.iterations[arch] + 1):
        x, y = (t.to(where) for t in task.batch(128, train_gen))
        loss = task.loss(task.outputs(model, x), y)
        opt.zero_grad()
        loss.backward()
        if run.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), run.clip)
        opt.step()
        if i % run.log_every == 0:
            point = {"iteration": i, "train_loss": loss.item(), **_test(model, task, test_gen)}
            curve.append(point)
            if run.task == "adding" and solved is None and point["train_loss"] <= SOLVED_MSE:
                solved = i
            if progress:
                print(f"  {task.name} {arch} seed {seed} it {i}: "
                      + ", ".join(f"{k} {v:.3g}" for k, v in point.items() if k != "iteration"),
                      flush=True)
    final = _test(model, task, test_gen, n=1000)
    return {"task": run.task, "name": task.name, "T_code": run.T, "arch": arch, "seed": seed,
            "iterations": run.iterations[arch], "lr": run.lr, "clip": run.clip,
            "parameters": parameters(model), "curve": curve, "final": final,
            "solved_iteration": solved, "seconds": round(time.perf_counter() - t0, 1),
            "device": device_name(where)}


def _test(model: nn.Module, task, gen: torch.Generator, n: int | None = None) -> dict:
    model.eval()
    with torch.no_grad():
        x, y = (t.to(next(model.parameters()).device) for t in
                task.batch(n or task.test_batch, gen))
        out = task.metrics(task.outputs(model, x), y)
    model.train()
    return out


def summarise(results: list[dict]) -> list[dict]:
    """Per task and model: the final test loss (and recall) as mean, spread over seeds."""
    rows = []
    for key in dict.fromkeys((r["name"], r["arch"], r["iterations"]) for r in results):
        group = [r for r in results if (r["name"], r["arch"], r["iterations"]) == key]
        losses = np.array([r["final"]["test_loss"] for r in group])
        row = {"task": key[0], "arch": key[1], "seeds": [r["seed"] for r in group],
               "iterations": group[0]["iterations"], "parameters": group[0]["parameters"],
               "test_loss_median": float(np.median(losses)), "test_loss_min": float(losses.min()),
               "test_loss_max": float(losses.max()),
               "seconds_per_run": float(np.mean([r["seconds"] for r in group]))}
        if "recall" in group[0]["final"]:
            row["recall"] = [r["final"]["recall"] for r in group]
        if group[0]["task"] == "adding":
            row["solved_iteration"] = [r["solved_iteration"] for r in group]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | model | parameters (weights only) | iterations | test loss, median "
             "[min, max] | recall / solved at | s per run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = (" ".join(f"{v:.3f}" for v in r["recall"]) if "recall" in r else
                 " ".join("never" if v is None else str(v) for v in r.get("solved_iteration", [])))
        lines.append(f"| {r['task']} | {r['arch']} | {r['parameters']['with_biases']:,} "
                     f"({r['parameters']['weights_only']:,}) | {r['iterations']:,} "
                     f"| {r['test_loss_median']:.2g} [{r['test_loss_min']:.2g}, "
                     f"{r['test_loss_max']:.2g}] | {extra} | {r['seconds_per_run']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["name"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    colours = {"wave_rnn": "tab:blue", "irnn": "tab:orange"}
    for ax, name in zip(axes[0], names):
        for r in (r for r in results if r["name"] == name):
            its = [p["iteration"] for p in r["curve"]]
            ax.semilogy(its, [p["test_loss"] for p in r["curve"]], color=colours[r["arch"]],
                        alpha=0.8, lw=1, label=r["arch"] if r["seed"] == results[0]["seed"] else None)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("test loss (copy: CE / 50, adding: MSE)")
        ax.legend()
    fig.tight_layout()
    write_figure(fig, path, 110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--out", type=Path, default=Path("out/paper-wave-rnn"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="where torch trains: cpu (default), cuda, cuda:N, mps or auto")
    ap.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                    help="these seeds instead of the profile's (one process per seed runs "
                         "them side by side; --merge joins their results)")
    ap.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS),
                    help="the models to train (default both)")
    ap.add_argument("--iterations", type=int, metavar="N",
                    help="every run's budget instead of the profile's (the paper: 60000)")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                    help="train nothing: join these folders' results.json into --out")
    args = ap.parse_args(argv)
    try:
        results = _merged(args.merge) if args.merge else _trained(args)
    except InputError as exc:
        ap.exit(1, f"paper_wave_rnn: {exc}\n")
    if args.merge:
        _write(args, results)
    print(table(summarise(results)))
    plot(results, args.out / "curves.png")
    print(f"wrote {args.out}/results.json, results.md, curves.png")
    return 0


def _trained(args) -> list[dict]:
    torch_device(args.device)  # refused before the first run, not after it
    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"--iterations must be at least 1, got {args.iterations}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    profile, results = PROFILES[args.profile], []
    for run in profile.runs:
        if args.iterations is not None:
            run = replace(run, iterations={a: args.iterations for a in ARCHS})
        for seed in args.seeds if args.seeds is not None else profile.seeds:
            for arch in args.arch:
                results.append(train_one(run, arch, seed, device=args.device))
                _write(args, results)  # after every run: a long run stopped keeps what it did
    return results


def _merged(folders: list[Path]) -> list[dict]:
    return merged_runs(folders, lambda r: (r["name"], r["arch"], r["seed"]),
                       lambda r: f"{r['name']} {r['arch']} seed {r['seed']}")


def merged_runs(folders: list[Path], key, name) -> list[dict]:
    """Every run of the folders' results.json, in the order given (a folder twice, or a run
    in two folders, is refused: it would count one seed twice); ``key(run)`` tells runs
    apart, ``name(run)`` says which in the refusal. The paper experiments' ``--merge``."""
    results, seen = [], set()
    for folder in folders:
        try:
            runs = json.loads((folder / "results.json").read_text())["runs"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"--merge {folder}: no results.json of a run here ({exc})") \
                from None
        for r in runs:
            if key(r) in seen:
                raise InputError(f"--merge: {name(r)} is in two folders (the second: "
                                 f"{folder})")
            seen.add(key(r))
            results.append(r)
    return results


def _write(args, results: list[dict]) -> None:
    rows = summarise(results)
    made = {"merged": [str(f) for f in args.merge]} if args.merge else \
        {"profile": args.profile, "threads": args.threads}
    args.out.mkdir(parents=True, exist_ok=True)
    write_whole(args.out / "results.json", json.dumps(
        {**made, "summary": rows, "runs": results}, indent=1) + "\n")
    write_whole(args.out / "results.md", table(rows) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
