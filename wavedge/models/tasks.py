"""Tasks: what export checks a model against. A task supplies held-out recordings (the parity
check streams them, state carried), calibration recordings (int8), and a quality metric with
its gate (every artefact measured through the runtime beside the torch model).

- ``ClassificationTask``: a bundled labelled dataset (``wavedge.models.data``); the metric is
  the accuracy of the prediction at each test recording's last sample, from reset.
- ``RecordingsTask``: the user's own recordings, the CSV that ``wavedge run`` replays plus a
  ``label`` column (class scores: final-sample accuracy) or ``target`` columns (regression or
  a Gaussian mean: mean squared error over every sample).
- ``GeneratedTask``: no data at all (an untrained or foreign model): inputs generated from the
  signature (``Signature.example_inputs``), parity only, no quality gate.

Recordings are lists of ``{input name: [T, *shape]}`` in raw units (the graphs normalise).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavedge.errors import InputError
from wavedge.signature import Signature



@dataclass
class Task:
    """The base: recordings only, no quality metric (``metric`` None: no gate runs)."""

    name: str
    description: str
    held_out: list[Recording]
    calibration: list[Recording]
    metric: str | None = None
    higher_is_better: bool = True
    targets: list = field(default_factory=list)  # one per held-out recording

    def score(self, outputs: list[dict[str, np.ndarray]]) -> float:
        """The metric over the held-out recordings, given each one's outputs from reset."""
        raise NotImplementedError

    def loss_points(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference``, in points: accuracy points, or the
        percentage by which an error grew."""
        if self.higher_is_better:
            return (reference - value) * 100.0
        return (value / max(reference, 1e-12) - 1.0) * 100.0


@dataclass
class ClassificationTask(Task):
    output: str = "y"

    def score(self, outputs) -> float:
        hits = [int(np.argmax(o[self.output][-1]) == t) for o, t in zip(outputs, self.targets)]
        return float(np.mean(hits))


@dataclass
class RegressionTask(Task):
    output: str = "y"

    def score(self, outputs) -> float:
        err = np.concatenate([(o[self.output] - t).reshape(-1) for o, t in
                              zip(outputs, self.targets)])
        return float(np.mean(err ** 2))


def classification_task(data, input_name: str = "x", output_name: str = "y") -> Task:
    """A bundled ``Dataset`` as a task: its test split held out, its training split for
    calibration."""
    return ClassificationTask(
        name=data.name, description=f"{data.name} test split", metric="accuracy of the "
        "prediction at the last sample of each recording, from reset",
        held_out=[{input_name: x} for x in data.x_test],
        calibration=[{input_name: x} for x in data.x_train],
        targets=[int(y) for y in data.y_test], output=output_name)


def generated_task(signature: Signature, steps: int = 2048, seed: int = 0) -> Task:
    rec = signature.example_inputs(steps, seed)
    return Task(name="generated", description=f"{steps} samples generated from the signature "
                "(floats about the declared normalisation, integers over their range), seed "
                f"{seed}", held_out=[rec], calibration=[rec])


def recordings_task(path: str | Path, signature: Signature) -> Task:
    """The user's recordings file as a task for a model whose first input is float sensor
    channels: a CSV with a header naming the channels (an optional ``sequence`` column splits
    recordings), and ``label`` (a class-score model) or ``target``/``target_<i>`` columns (a
    regression or Gaussian model). Raises ``InputError`` on the first bad row."""
    path = Path(path)
    sensor, head = signature.inputs[0], signature.outputs[0]
    if len(signature.inputs) != 1 or sensor.dtype != "float32" or not sensor.channels:
        raise InputError(f"{path}: recordings serve models with one float input with named "
                         "channels; give this model a task in Python (wavedge.models.tasks)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read recordings ({exc})") from None
    if len(rows) < 2:
        raise InputError(f"{path}: expected a header row and samples")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in sensor.channels if c not in header]
    if missing:
        raise InputError(f"{path}: header lacks channel(s) {missing} (the model takes "
                         f"{list(sensor.channels)})")
    cols = [header.index(c) for c in sensor.channels]
    classify = head.kind == "class_scores"
    if classify:
        tcols = [header.index("label")] if "label" in header else []
    else:
        names = ["target"] if head.shape == (1,) else [f"target_{i}" for i in
                                                       range(int(np.prod(head.shape)))]
        tcols = [header.index(n) for n in names if n in header]
        tcols = tcols if len(tcols) == len(names) else []
    if not tcols:
        want = "a 'label' column" if classify else f"target column(s) for output {head.name!r}"
        raise InputError(f"{path}: no {want}")
    seq = header.index("sequence") if "sequence" in header else None
    recs: dict = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            x = [float(row[c]) for c in cols]
            t = row[tcols[0]].strip() if classify else [float(row[c]) for c in tcols]
        except (ValueError, IndexError):
            raise InputError(f"{path}, line {line}: expected numbers in columns "
                             f"{list(sensor.channels)} and a target") from None
        if not np.isfinite(x).all() or (not classify and not np.isfinite(t).all()):
            raise InputError(f"{path}, line {line}: not finite")
        key = row[seq] if seq is not None else 0
        recs.setdefault(key, ([], []))
        recs[key][0].append(x)
        recs[key][1].append(t)
    held = [{sensor.name: np.asarray(x, np.float32)} for x, _ in recs.values()]
    common = dict(name=path.stem, held_out=held, calibration=held,
                  description=f"{path.name}: {len(held)} recording(s), raw sensor units")
    if classify:
        labels = list(head.labels) or [str(i) for i in range(head.shape[-1])]
        try:
            targets = [labels.index(t[-1]) for _, t in recs.values()]
        except ValueError as exc:
            raise InputError(f"{path}: label {str(exc).split()[0]} is not one of the model's "
                             f"labels {labels}") from None
        return ClassificationTask(**common, targets=targets, output=head.name,
                                  metric="accuracy of the prediction at the last sample of "
                                         "each recording, from reset")
    return RegressionTask(**common, higher_is_better=False, output=head.name,
                          targets=[np.asarray(t, np.float32).reshape(-1, *head.shape)
                                   for _, t in recs.values()],
                          metric=f"mean squared error of {head.name!r} over every sample, "
                                 "each recording from reset")
