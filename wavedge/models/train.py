"""Training recipes that run on a laptop CPU in minutes, on data shipped inside packages.

A recipe is a typed record (``Recipe``); ``RECIPES`` holds the defaults per (task, arch). The loss
is cross-entropy on every step from ``loss_from`` (a fraction of the sequence) to the end, since a
streaming classifier must answer at every step; with only 40 training recordings for BasicMotions
this, weight decay and input noise are what keep the model from overfitting.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from wavedge.errors import InputError
from wavedge.models import StepModel, build_model
from wavedge.models.checkpoint import annotate_from_meta, check_writable, save_checkpoint
from wavedge.models.data import Dataset, load_dataset
from wavedge.models.quant_aware import grid_error, int8_weight_grid
from wavedge.models.tasks import generator
from wavedge.resets import ResetPolicy


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run; stored in the checkpoint."""

    task: str
    arch: str
    model: dict = field(default_factory=dict)  # architecture keyword arguments
    epochs: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    input_noise: float = 0.0  # std of Gaussian noise added to normalised inputs while training
    loss_from: float = 0.5  # per-step loss on steps [loss_from * T, T)
    cosine: bool = True  # cosine learning-rate decay to 0 over the run
    # each training example is this many random sequences back to back, the state carried
    # across: the model learns to forget the previous activity and stays bounded on endless
    # streams (trained on single sequences from reset, a ReLU Wave-RNN's state can grow without
    # bound once it runs past the training length)
    stream_segments: int = 1
    # then this many epochs of quantisation-aware fine-tuning at quant_aware_lr: the weights
    # computed on their int8 grid, and left there (wavedge.models.quant_aware), so that int8
    # conversion does not change them
    quant_aware_epochs: int = 0
    quant_aware_lr: float = 3e-4
    seed: int = 0
    # how the family learns (StepModel.training_loss): "backprop" for every family, "pc"
    # (predictive coding) for the spike-and-slab RNN
    learning: str = "backprop"
    # recordings of unequal length are trained on random windows of this many samples (None:
    # the shortest training recording); equal-length recordings are used whole
    window: int | None = None
    # walks (wavedge.models.walk_logs): each training window's observation ids permuted at
    # random, a new environment each, so that the model learns to read its memory and not
    # the logged environments (10 logged walks in 5x5 grids: 0.74 on visited steps of fresh
    # environments without, 0.998 with; docs/tem.md)
    relabel: bool = False

    def validate(self) -> None:
        """``InputError`` for a setting no run can take (the CLI's flags land here), before
        training starts."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("quant_aware_epochs", 0),
                          ("seed", 0)):
            if getattr(self, name) < low:
                raise InputError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not (self.lr > 0 and self.quant_aware_lr > 0):
            raise InputError(f"learning rates must be positive, got {self.lr} and "
                             f"{self.quant_aware_lr}")


RECIPES: dict[tuple[str, str], Recipe] = {
    ("basic_motions", "wave_rnn"): Recipe("basic_motions", "wave_rnn",
                                          {"channels": 16, "ring_size": 64,
                                           "encoder_bias": False}, epochs=40,
                                          input_noise=0.3, stream_segments=4,
                                          quant_aware_epochs=20),
    ("basic_motions", "irnn"): Recipe("basic_motions", "irnn", {"hidden_size": 128}, epochs=40,
                                      input_noise=0.3, stream_segments=4),
    ("basic_motions", "gru"): Recipe("basic_motions", "gru", {"hidden_size": 128}, epochs=40,
                                     input_noise=0.3, stream_segments=4),
    ("digits", "wave_rnn"): Recipe("digits", "wave_rnn", {"channels": 16, "ring_size": 64},
                                   epochs=30, batch_size=32, loss_from=1.0, weight_decay=0.0,
                                   stream_segments=2),
    ("digits", "irnn"): Recipe("digits", "irnn", {"hidden_size": 128}, epochs=30,
                               batch_size=32, loss_from=1.0, weight_decay=0.0,
                               stream_segments=2),
    ("digits", "gru"): Recipe("digits", "gru", {"hidden_size": 128}, epochs=30, batch_size=32,
                              loss_from=1.0, weight_decay=0.0, stream_segments=2),
    # the spike-and-slab RNN learns by predictive coding (the paper's local rule); Adam at the
    # paper experiments' lr 0.01, no weight decay on (m, pi, xi), trained from reset as there
    ("digit_rows", "mpl"): Recipe("digit_rows", "mpl", {"hidden_size": 100}, epochs=10,
                                  batch_size=100, lr=1e-2, weight_decay=0.0, clip_norm=10.0,
                                  loss_from=1.0, learning="pc"),
    # a causal transformer over the last 32 samples with the value stream (docs/attention.md)
    ("basic_motions", "residual_attention"): Recipe(
        "basic_motions", "residual_attention", {"d_model": 32, "heads": 2, "layers": 2,
                                                "window": 32}, epochs=40, input_noise=0.3,
        stream_segments=4),
    # TEM-t on walks in a 5x5 grid world (docs/tem.md): an epoch is 50 batches of 16 fresh
    # walks of 200 steps; 30 epochs, 3 minutes on a 2-core CPU
    ("grid_walks", "tem_t"): Recipe("grid_walks", "tem_t", {"memory": 256}, epochs=30,
                                    batch_size=16, weight_decay=0.0, window=200),
}
# the user's own recordings (`wavedge train --data`): the BasicMotions recipes, which train on
# a few dozen short recordings; 10 int8-aware epochs (without them a 2,000-parameter Wave-RNN
# on a 3-axis accelerometer set lost 25 points at int8; with them, none)
for _arch in ("wave_rnn", "irnn", "gru", "residual_attention"):
    RECIPES[("recordings", _arch)] = replace(RECIPES[("basic_motions", _arch)],
                                             task="recordings", quant_aware_epochs=10)
# the user's logged walks: the grid world's recipe (wandered starts)
RECIPES[("walks", "tem_t")] = replace(RECIPES[("grid_walks", "tem_t")], task="walks",
                                      window=None, relabel=True)  # window: 200 or the longest
# what ``--data`` reads for the tasks that train on a user's file: the task -> its reader
# ``(spec, validation fraction, seed) -> data``, tried in order for an arch with a recipe
USER_DATA = {"recordings": "wavedge.models.data:recordings_dataset",
             "walks": "wavedge.models.walk_logs:logged_walks"}


def user_data(spec: str, arch: str, validation: float = 0.25, seed: int = 0) -> tuple:
    """``(task, data)``: the task that trains ``arch`` on a user's file and the file read
    as that task reads it (labelled recordings for a classifier, logged walks for TEM-t)."""
    import importlib

    task = next((t for t in USER_DATA if (t, arch) in RECIPES), None)
    if task is None:
        known = sorted(a for t, a in RECIPES if t in USER_DATA)
        raise InputError(f"--data: no recipe trains {arch!r} on your own data; {', '.join(known)} "
                         "do")
    module, _, name = USER_DATA[task].partition(":")
    return task, getattr(importlib.import_module(module), name)(spec, validation, seed)


def default_recipe(task: str, arch: str) -> Recipe:
    """The recipe for ``task`` (a generated task's options after ``?``: its module reads
    them from ``Recipe.task``) and ``arch``."""
    name, options, _ = task.partition("?")
    try:
        recipe = RECIPES[(name, arch)]
    except KeyError:
        known = ", ".join(f"{t}/{a}" for t, a in sorted(RECIPES))
        raise InputError(f"no recipe for task {name!r} with arch {arch!r}; known: "
                         f"{known}") from None
    if options and generator(name) is None:  # else dropped without a word
        raise InputError(f"task {task!r}: {name} is a dataset and takes no options after '?'")
    return replace(recipe, task=task)


def torch_device(name: str = "cpu") -> torch.device:
    """The device ``name`` names: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or ``auto`` (the
    first GPU torch sees, else the CPU); ``InputError`` in one line for one this torch cannot
    use, before anything is trained (torch itself says so at the first tensor moved, or, for a
    misspelling, in a paragraph)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else \
            "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device; give cpu, cuda, cuda:N, mps or "
                         "auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            build = f"a CPU build, {torch.__version__}" if torch.version.cuda is None else \
                f"built for CUDA {torch.version.cuda}, no GPU or driver found"
            raise InputError(f"--device {name}: this torch sees no CUDA GPU ({build}); "
                             "leave --device out to train on the CPU")
        if (device.index or 0) >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: this torch sees no Apple GPU (MPS)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name}: wavedge trains on cpu, cuda or mps")
    return device


def device_name(device: torch.device) -> str:
    """``cpu``, or the device and the GPU's name (``cuda:0 (NVIDIA H200)``), for the
    checkpoint's record of where it was trained."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def normalisation(x_train) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every training sample (std floored to avoid division by 0)."""
    flat = np.concatenate([np.asarray(x).reshape(-1, x.shape[-1]) for x in x_train]) \
        if isinstance(x_train, list) else x_train.reshape(-1, x_train.shape[-1])
    flat = flat.astype(np.float64)
    return flat.mean(axis=0).astype(np.float32), np.maximum(flat.std(axis=0), 1e-6).astype(np.float32)


def _batch(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, t0: int,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of streams, each ``stream_segments`` random sequences back to back.

    Returns inputs ``[B, S*T, D]``, per-step targets ``[B, S*T]`` (the class of the segment the
    step is in) and the mask of steps that count (``t0`` or more steps into their segment).
    """
    n, t, d = x.shape
    segments = max(1, recipe.stream_segments)
    idx = torch.randint(n, (recipe.batch_size, segments), generator=gen)
    xb = x[idx].reshape(recipe.batch_size, segments * t, d)
    yb = y[idx].repeat_interleave(t, dim=1)
    mask = (torch.arange(segments * t, device=x.device) % t >= t0).expand(recipe.batch_size, -1)
    return xb, yb, mask


def _ragged_batch(xs: list[torch.Tensor], y: torch.Tensor, recipe: Recipe, t0: int,
                  gen: torch.Generator, window: int):
    """``_batch`` for recordings of unequal length: a random ``window`` of each."""
    segments = max(1, recipe.stream_segments)
    idx = torch.randint(len(xs), (recipe.batch_size * segments,), generator=gen)
    parts = []
    for i in idx.tolist():
        start = int(torch.randint(len(xs[i]) - window + 1, (1,), generator=gen))
        parts.append(xs[i][start:start + window])
    xb = torch.stack(parts).reshape(recipe.batch_size, segments * window, -1)
    yb = y[idx].reshape(recipe.batch_size, segments).repeat_interleave(window, dim=1)
    mask = (torch.arange(segments * window, device=xb.device) % window >= t0).expand(
        recipe.batch_size, -1)
    return xb, yb, mask


@torch.inference_mode()
def stream_accuracy(model: StepModel, x: torch.Tensor, y: torch.Tensor, repeats: int = 5,
                    seed: int = 0) -> float:
    """Accuracy at the last step of each sequence when every sequence follows the previous
    one without a reset (``repeats`` shuffled passes in one long stream), as on a board."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(repeats)])
    if isinstance(x, list):
        ends = np.cumsum([len(x[i]) for i in order]) - 1
        logits = model.scores(torch.cat([x[i] for i in order])[None])[0, ends]
        return int((logits.argmax(-1) == y[order]).sum()) / len(order)
    t = x.shape[1]
    logits = model.scores(x[order].reshape(1, -1, x.shape[-1]))[0, t - 1::t]
    return int((logits.argmax(-1) == y[order]).sum()) / len(order)


@torch.inference_mode()
def final_step_accuracy(model: StepModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of sequences whose prediction at the last step is the true class."""
    model.eval()
    if isinstance(x, list):
        return sum(int(model.scores(xi[None])[0, -1].argmax() == yi)
                   for xi, yi in zip(x, y)) / len(y)
    return int((model.scores(x)[:, -1].argmax(-1) == y).sum()) / len(y)


def _fit(model: StepModel, recipe: Recipe, draw, gen: torch.Generator, epochs: int, lr: float,
         progress: bool, desc: str, steps_per_epoch: int, on_epoch=None) -> None:
    """``epochs`` of AdamW (cosine decay to 0 when the recipe says so) on the batches
    ``draw(gen)`` returns (inputs, per-step targets, the steps that count, and optionally the
    state the batch starts from; else each starts from reset), calling
    ``on_epoch(epochs done)`` after each when given. The batches and their noise are drawn by
    ``gen`` on the CPU wherever the model is, so a run on a GPU sees the CPU run's data and
    differs from it by rounding alone."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.param_groups(lr), lr=lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)) \
        if recipe.cosine else None
    bar = tqdm(range(epochs), desc=desc, disable=not progress, unit="epoch")
    for epoch in bar:
        model.train()
        total = 0.0  # a tensor on the model's device: read once an epoch, not a sync a batch
        for _ in range(steps_per_epoch):
            xb, yb, mask, *start = draw(gen)
            if recipe.input_noise > 0:
                xb = xb + recipe.input_noise * torch.randn(xb.shape, generator=gen).to(xb.device)
            with parametrize.cached():  # int8-grid weights: rounded once per batch, not per step
                loss = model.training_loss(xb, yb, mask, recipe.learning, gen,
                                           **({"state": start[0]} if start else {}))
            opt.zero_grad()
            loss.backward()
            if recipe.clip_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
            opt.step()
            model.after_update()
            total = total + loss.detach()
        if sched is not None:
            sched.step()
        if on_epoch is not None:
            on_epoch(epoch + 1)
        bar.set_postfix(loss=f"{float(total) / steps_per_epoch:.4f}")


def _normalised(x, mean: np.ndarray, std: np.ndarray, device: torch.device):
    if isinstance(x, list):
        return [torch.from_numpy((xi - mean) / std).to(device) for xi in x]
    return torch.from_numpy((x - mean) / std).to(device)


def _window(x_tr, recipe: Recipe) -> int:
    """Samples per training sequence: whole recordings when they are all one length, else
    ``recipe.window`` (at most the shortest recording)."""
    if not isinstance(x_tr, list):
        if recipe.window not in (None, x_tr.shape[1]):  # else ignored without a word
            raise InputError(f"window {recipe.window}: the training recordings are all "
                             f"{x_tr.shape[1]} samples long and train whole; a window is for "
                             "recordings of unequal length")
        return int(x_tr.shape[1])
    shortest = min(len(x) for x in x_tr)
    if recipe.window is not None and not 2 <= recipe.window <= shortest:
        raise InputError(f"window {recipe.window}: must be in [2, {shortest}] (the shortest "
                         "training recording)")
    return recipe.window or shortest


@contextlib.contextmanager
def float32_arithmetic(device: torch.device):
    """float32 arithmetic on a GPU, as on the CPU: cuDNN's convolutions and RNNs default to
    TF32 (10 bits of mantissa) on Ampere and later, and a recurrence carries each step's
    rounding into the next (ONNX Runtime's CUDA provider runs without TF32 for the same
    reason). torch's matmuls are float32 unless a user has asked otherwise."""
    cudnn = torch.backends.cudnn
    was = cudnn.allow_tf32
    cudnn.allow_tf32 = was and device.type != "cuda"
    try:
        yield
    finally:
        cudnn.allow_tf32 = was


def train(recipe: Recipe, out: str | Path | None = None, progress: bool = True,
          dataset=None, device: str = "cpu") -> tuple[StepModel, dict]:
    """Train ``recipe`` on ``device`` (``torch_device``) on ``dataset`` (what ``user_data``
    reads: a ``Dataset``, or logged walks for the ``walks`` task), else the task's bundled or
    generated data; write a checkpoint to ``out`` when given. Returns (model, meta), the model
    on the CPU.

    ``meta`` carries the test accuracy at the final step, the normalisation and the provenance
    that export copies into the manifest. The recipe, and so the weights up to rounding, do
    not depend on the device (``_fit``); ``meta["device"]`` says where it ran.
    """
    recipe.validate()
    where = torch_device(device)
    if out is not None:
        check_writable(out)
    maker = generator(recipe.task)
    if maker is not None:  # a task that makes or reads its own data (walks)
        with float32_arithmetic(where):
            return maker.train(recipe, out, progress, where, dataset)
    if recipe.relabel:  # else ignored without a word
        raise InputError(f"{recipe.task}: relabel permutes logged walks' observation ids; "
                         "recordings have none")
    data = dataset if dataset is not None else load_dataset(recipe.task)
    seed_everything(recipe.seed)
    mean, std = normalisation(data.x_train)
    x_tr, x_te = (_normalised(x, mean, std, where) for x in (data.x_train, data.x_test))
    y_tr, y_te = (torch.from_numpy(y).to(where) for y in (data.y_train, data.y_test))
    model = build_model(recipe.arch, input_size=len(mean), output_size=len(data.labels),
                        **recipe.model).to(where)  # initialised on the CPU: the CPU's weights
    with float32_arithmetic(where):
        return _train_on(model, recipe, data, (x_tr, y_tr, x_te, y_te), (mean, std), out,
                         progress, where)


def _train_on(model: StepModel, recipe: Recipe, data: Dataset, tensors, normal, out,
              progress: bool, where: torch.device) -> tuple[StepModel, dict]:
    x_tr, y_tr, x_te, y_te = tensors
    mean, std = normal
    window = _window(x_tr, recipe)
    t0 = int(recipe.loss_from * window) if recipe.loss_from < 1.0 else window - 1
    gen = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()

    def draw(g: torch.Generator):
        return _ragged_batch(x_tr, y_tr, recipe, t0, g, window) if isinstance(x_tr, list) \
            else _batch(x_tr, y_tr, recipe, t0, g)

    per_epoch = -(-len(x_tr) // recipe.batch_size)
    _fit(model, recipe, draw, gen, recipe.epochs, recipe.lr, progress,
         f"{data.name}/{recipe.arch}", per_epoch)
    if recipe.quant_aware_epochs > 0:
        with int8_weight_grid(model):
            _fit(model, recipe, draw, gen, recipe.quant_aware_epochs, recipe.quant_aware_lr,
                 progress, f"{data.name}/{recipe.arch} int8-aware", per_epoch)
    # training alone (each epoch ends reading its loss: the GPU has finished); the metrics
    # below had been counted in, and on sequential digits a never-reset stream of 144,000
    # one-sample steps was most of a GPU epoch's "training" time
    seconds = round(time.perf_counter() - started, 1)
    model.eval()
    meta = {
        "task": data.name,
        "dataset": data.description,
        "labels": list(data.labels),
        "channels": list(data.channels),
        "sample_rate_hz": data.sample_rate_hz,
        "sequence_length": window,
        "data": data.source,
        # trained on random recordings back to back, the state carried: it needs no reset;
        # trained on single recordings from reset: reset it at each
        "reset": ResetPolicy(recording=recipe.stream_segments == 1).to_json(),
        "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
        "recipe": asdict(recipe),
        "metrics": {
            "train_accuracy": final_step_accuracy(model, x_tr, y_tr),
            "test_accuracy": final_step_accuracy(model, x_te, y_te),
            "test_stream_accuracy": stream_accuracy(model, x_te, y_te),
            "n_train": len(x_tr), "n_test": len(x_te),
            "train_seconds": seconds,
            "n_parameters": model.n_parameters(),
            "int8_grid_error": round(grid_error(model), 4),
        },
        "torch_version": torch.__version__,
        "device": device_name(where),
    }
    m = meta["metrics"]
    meta["summary"] = (f"test accuracy {m['test_accuracy']:.3f} (final step, {m['n_test']} "
                       f"held-out recordings, from reset; {m['test_stream_accuracy']:.3f} "
                       f"never reset), train {m['train_accuracy']:.3f}")
    model.cpu()  # a checkpoint of CPU tensors, and the model returned where export reads it
    annotate_from_meta(model, meta)
    if out is not None:
        save_checkpoint(out, model, meta)
    return model, meta


__all__ = ["RECIPES", "Recipe", "default_recipe", "replace", "train"]
