"""Parity of exported graphs with torch over long streams, state carried throughout.

The reference is the model's whole-sequence path (``sequence``) in torch float32; the graphs are
run through wavedge's own runtime exactly as a stream would run them: one sample (or one chunk)
per call, the state fed back from the previous call's outputs. Inputs and outputs are read by
name from the model's signature.

Per tensor: a float output or state's error is ``max |graph - torch| / max(1, max |torch|)``
over every step (outputs) or the final state: an absolute error for values up to 1, relative
above that (the ReLU state of a Wave-RNN is unbounded, and float32 rounding grows with it).
Integer and boolean tensors must be exactly equal: their error is the fraction of elements that
differ. ``error`` is the largest of them all, the number compared to the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from wavedge.errors import ExportError, reason
from wavedge.models import StepModel
from wavedge.resets import ResetPolicy
from wavedge.signature import Signature

Stream = dict  # {input name: np.ndarray [T, *shape]}


@dataclass(frozen=True)
class GraphError:
    """How far one exported graph is from torch on the check streams."""

    max_abs_y: float  # over the float outputs
    max_abs_state: float  # over the float state
    error: float  # the largest per-tensor error, the number compared to the tolerance
    argmax_agreement: float | None  # the first class-score or token output, else None
    steps: int
    tensors: dict = field(default_factory=dict)  # name -> error (exact tensors: mismatch rate)

    def to_json(self) -> dict:
        return {"max_abs_y": self.max_abs_y, "max_abs_state": self.max_abs_state,
                "error": self.error, "argmax_agreement": self.argmax_agreement,
                "steps": self.steps, "tensors": self.tensors}


class CheckStream(dict):
    """``{input name: [T, *shape]}``, and ``starts``: the steps at which the state is reset
    (always 0), from the model's reset policy."""

    starts: tuple[int, ...] = (0,)


def check_stream(recordings: list[Stream], steps: int, multiple_of: int,
                 policy: ResetPolicy = ResetPolicy(), seed: int = 0) -> CheckStream:
    """Concatenate held-out recordings into one stream of ``steps`` samples per input.

    Recordings follow each other in a seeded random order, each pass reshuffled, repeated as
    needed; the state is reset where ``policy`` says (never: carried across every border, as
    on a board that never resets). ``steps`` is rounded up to a multiple of ``multiple_of`` so
    the chunk graph sees whole chunks; so are the runs between resets (a recording is cut to
    whole chunks, an ``every:N`` period rounded to them) when the policy resets.
    """
    steps = -(-steps // multiple_of) * multiple_of
    if not recordings:
        raise ExportError("no held-out recordings to check the export against")
    names = list(recordings[0])
    resets = policy.recording or policy.every
    if resets:
        shortest = min(len(r[names[0]]) for r in recordings)
        recordings = [{n: r[n][:len(r[n]) // multiple_of * multiple_of] for n in names}
                      for r in recordings if len(r[names[0]]) >= multiple_of]
        if not recordings:
            raise ExportError(f"every held-out recording is shorter than a chunk of "
                              f"{multiple_of}, so none can be checked from reset (the shortest "
                              f"has {shortest} samples: --chunk {max(2, shortest)})")
        if policy.every:
            policy = replace(policy, every=max(multiple_of,
                                               policy.every // multiple_of * multiple_of))
    total = sum(len(r[names[0]]) for r in recordings)
    rng = np.random.default_rng(seed)
    passes = -(-steps // max(1, total))
    order = np.concatenate([rng.permutation(len(recordings)) for _ in range(passes)])
    recs = [recordings[i] for i in order]
    parts, starts, at = [], [0], 0
    for i, a, b, reset in policy.pieces([len(r[names[0]]) for r in recs]):
        if reset and at:
            starts.append(at)
        parts.append({n: recs[i][n][a:b] for n in names})
        at += b - a
    out = CheckStream({n: np.ascontiguousarray(np.concatenate([p[n] for p in parts])[:steps])
                       for n in names})
    out.starts = tuple(s for s in starts if s < steps)
    return out


def segments(stream: Stream):
    """``(start, stop)`` of each run of ``stream`` between state resets."""
    starts = getattr(stream, "starts", (0,))
    steps = len(next(iter(stream.values())))
    return list(zip(starts, [*starts[1:], steps]))


def _as_torch(signature: Signature, stream: Stream) -> list[torch.Tensor]:
    from wavedge.models.base import TORCH_DTYPES

    out = []
    for spec in signature.inputs:
        if spec.role == "noise" and spec.name not in stream:  # as the runtime: the mean network
            out.append(torch.zeros(1, len(next(iter(stream.values()))), *spec.shape))
            continue
        x = torch.from_numpy(np.asarray(stream[spec.name], spec.dtype)).to(TORCH_DTYPES[spec.dtype])
        if spec.normalise is not None:
            x = (x - torch.tensor(spec.normalise.mean)) / torch.tensor(spec.normalise.std)
        out.append(x[None])
    return out


@torch.inference_mode()
def torch_outputs(model: StepModel, stream: Stream, state=None) -> tuple[list, list]:
    """Outputs (``[T, *shape]`` each) and final state of the torch model over one raw stream,
    from reset or from ``state``, normalised as the signature declares."""
    sig = model.signature
    state = model.init_state(1) if state is None else state
    res = model.sequence(*_as_torch(sig, stream), *state)
    n = len(sig.outputs)
    return [y[0].numpy() for y in res[:n]], [s.numpy() for s in res[n:]]


def probe_step(model: StepModel, where: str) -> None:
    """One step of ``model`` from reset on its signature's example inputs: a step that raises
    (a user's code can raise anything) or returns other tensors than the signature declares is
    one ``ExportError`` naming the tensor, before the export traces it (where it would be a
    torch traceback, or a graph check's message about a temporary file)."""
    sig = model.signature
    try:
        with torch.no_grad():
            res = model.sequence(*_as_torch(sig, sig.example_inputs(1)), *model.init_state(1))
    except Exception as exc:  # a user's step may raise anything
        raise ExportError(f"{where}: its step failed on the signature's example inputs: "
                          f"{type(exc).__name__}: {reason(exc)}") from None
    specs = [("output", o, (1, 1)) for o in sig.outputs] + [("state", s, (1,)) for s in sig.state]
    if not isinstance(res, (tuple, list)) or len(res) != len(specs):
        got = len(res) if isinstance(res, (tuple, list)) else "not a tuple of"
        raise ExportError(f"{where}: its step returns {got} tensors; the signature declares "
                          f"{len(sig.outputs)} output(s) then {len(sig.state)} state(s)")
    for (kind, spec, lead), t in zip(specs, res):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else None
        if shape != (*lead, *spec.shape):
            raise ExportError(f"{where}: {kind} {spec.name!r} comes out of the step with shape "
                              f"{shape[len(lead):] if shape else type(t).__name__} per sample; "
                              f"the signature declares {spec.shape}")


def torch_reference(model: StepModel, stream: Stream) -> tuple[list, list]:
    """``torch_outputs`` from reset, reset again at each of the stream's ``starts``; raises
    ``ExportError`` when the model itself diverges (an output or the state becomes inf/NaN):
    such a model cannot stream, whatever the export does."""
    runs = [torch_outputs(model, {n: v[a:b] for n, v in stream.items()})
            for a, b in segments(stream)]
    ys = [np.concatenate(parts) for parts in zip(*(r[0] for r in runs))]
    state = runs[-1][1]
    floats = [y for y in ys if y.dtype.kind == "f"] + [s for s in state if s.dtype.kind == "f"]
    bad = [~np.isfinite(y).reshape(len(y), -1).all(axis=1) for y in ys if y.dtype.kind == "f"]
    if any(b.any() for b in bad) or not all(np.isfinite(a).all() for a in floats):
        first = min((int(np.argmax(b)) for b in bad if b.any()), default=len(ys[0]))
        raise ExportError(f"the torch model diverges on the check stream: outputs are inf/NaN "
                          f"from step {first} of {len(ys[0])} (its recurrent state grows without "
                          "bound; train it on streams, see Recipe.stream_segments)")
    return ys, state


def batch_streams(stream: CheckStream, batch: int, multiple_of: int) -> list[CheckStream]:
    """``batch`` check streams from one, for a graph of ``batch`` streams per call: row ``b``
    is ``stream`` rotated by ``b`` times a ``batch``-th of its length (in whole chunks), reset
    where the original was and where the rotation joins its end to its start, so that every
    row sees different samples at every call and rows reset at different calls."""
    steps = len(next(iter(stream.values())))
    rows = []
    for b in range(batch):
        off = b * (steps // batch) // multiple_of * multiple_of
        row = CheckStream({n: np.ascontiguousarray(np.roll(v, -off, axis=0))
                           for n, v in stream.items()})
        row.starts = tuple(sorted({0, *((s - off) % steps for s in stream.starts)}))
        rows.append(row)
    return rows


def batch_reference(model: StepModel, rows: list[CheckStream]) -> tuple[list, list]:
    """``torch_reference`` of each row: outputs concatenated row after row, the final states
    stacked on the batch axis (what ``run_graph`` returns for the rows)."""
    refs = [torch_reference(model, r) for r in rows]
    return ([np.concatenate(ys) for ys in zip(*(r[0] for r in refs))],
            [np.concatenate(st) for st in zip(*(r[1] for r in refs))])


def run_graph(path: Path, backend: str, signature: Signature, stream: Stream | list,
              samples: int, maxima: dict | None = None) -> tuple[list, list]:
    """Run an exported graph over ``stream`` through wavedge's own runtime backend, as a
    stream does: one sample (or chunk) per call, the state fed back from the previous call
    (and reset at the stream's ``starts``). A list of streams runs a graph of that batch, one
    stream per row, each row reset at its own starts; the outputs come back row after row
    (``batch_reference``). ``maxima``: filled with the largest magnitude each float state
    reaches."""
    from wavedge.runtime.model import load_checked_graph

    rows = stream if isinstance(stream, list) else [stream]
    runner = load_checked_graph(path, backend, signature, samples, batch=len(rows)).runner()
    names = [i.name for i in signature.inputs]
    steps = len(rows[0][names[0]])
    ys: list[list] = [[[] for _ in rows] for _ in signature.outputs]
    starts = [set(getattr(r, "starts", (0,))) for r in rows]
    for i in range(0, steps, samples):
        for b, row_starts in enumerate(starts):
            if i in row_starts:
                for buf, spec in zip(runner.state, signature.state):
                    buf[b] = spec.reset_array(1)[0]
        for buf, name in zip(runner.inputs, names):
            buf[...] = np.stack([r[name][i:i + samples] for r in rows]).reshape(buf.shape)
        for acc, y, spec in zip(ys, runner.run(), signature.outputs):
            for b, row in enumerate(acc):
                row.append(y[b].reshape(-1, *spec.shape))
        if maxima is not None:  # the largest magnitude each float state reached
            for buf, spec in zip(runner.state, signature.state):
                if spec.dtype == "float32":
                    maxima[spec.name] = max(maxima.get(spec.name, 0.0), float(np.abs(buf).max()))
    return ([np.concatenate([np.concatenate(r) for r in y]) for y in ys],
            [s.copy() for s in runner.state])


def _tensor_error(got: np.ndarray, ref: np.ndarray) -> float:
    if ref.dtype.kind != "f":
        return float(np.mean(np.asarray(got) != ref))
    got = np.asarray(got, np.float64)
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.max(np.abs(got - ref), initial=0.0)) / max(
        1.0, float(np.max(np.abs(ref), initial=0.0)))


def compare(signature: Signature, ys: list, state: list, ref_ys: list,
            ref_state: list) -> GraphError:
    """Error of one graph's run against the reference, per output and per state."""
    tensors = {}
    abs_y = abs_s = 0.0
    for spec, y, r in zip(signature.outputs, ys, ref_ys):
        tensors[spec.name] = _tensor_error(y, r)
        if r.dtype.kind == "f":
            abs_y = max(abs_y, float(np.max(np.abs(np.asarray(y, np.float64) - r), initial=0)))
    for spec, s, r in zip(signature.state, state, ref_state):
        tensors[spec.output_name] = _tensor_error(s, r)
        if r.dtype.kind == "f":
            abs_s = max(abs_s, float(np.max(np.abs(np.asarray(s, np.float64) - r), initial=0)))
    agreement = None
    for spec, y, r in zip(signature.outputs, ys, ref_ys):
        if spec.kind in ("class_scores", "token_logits"):
            agreement = float(np.mean(y.argmax(-1) == r.argmax(-1)))
            break
    error = max(tensors.values())
    if not np.isfinite(error):
        abs_y = abs_s = float("inf")
        agreement = 0.0 if agreement is not None else None
    return GraphError(max_abs_y=abs_y, max_abs_state=abs_s, error=error,
                      argmax_agreement=agreement, steps=len(ys[0]), tensors=tensors)
