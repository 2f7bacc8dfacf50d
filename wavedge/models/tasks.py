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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavedge.errors import InputError
from wavedge.recordings import load_table, one_label_each, target_columns
from wavedge.signature import Signature


@dataclass
class Task:
    """The base: recordings only, no quality metric (``metric`` None: no gate runs)."""

    name: str
    description: str
    held_out: list[dict]  # {input name: [T, *shape]} each, raw units
    calibration: list[dict]
    metric: str | None = None
    higher_is_better: bool = True
    calibration_description: str = ""  # what ``calibration`` is, for the manifest
    targets: list = field(default_factory=list)  # one per held-out recording

    def score(self, outputs: list[dict[str, np.ndarray]]) -> float:
        """The metric over the held-out recordings, given each one's outputs from reset."""
        raise NotImplementedError

    def labels(self, i: int) -> list | None:
        """Held-out recording ``i``'s true class at each sample (what ``export --recording``
        writes beside it), or None: a task without a class per sample."""
        return None

    def loss_points(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference``, in points: accuracy points, or the
        percentage by which an error grew."""
        if self.higher_is_better:
            return (reference - value) * 100.0
        return (value / max(reference, 1e-12) - 1.0) * 100.0


@dataclass
class ClassificationTask(Task):
    output: str = "y"

    def labels(self, i: int) -> list:
        rec = self.held_out[i]
        return [self.targets[i]] * len(next(iter(rec.values())))

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
        calibration_description=f"{data.name} training split",
        targets=[int(y) for y in data.y_test], output=output_name)


# tasks whose data a module makes or reads (no bundled dataset, no classifier's recordings):
# name -> the module, with ``train(recipe, out, progress, device, data) -> (model, meta)``,
# ``task(meta) -> Task`` and ``data_task(spec, signature, held_out_keys) -> Task`` (a user's
# file to check an export against): the grid world's walks, and a user's logged walks
GENERATORS = {"grid_walks": "wavedge.models.gridworld", "walks": "wavedge.models.walk_logs"}


def generator(name: str | None):
    """The module that generates task ``name``'s data (options after a ``?`` aside), or
    None."""
    import importlib

    name = (name or "").partition("?")[0]
    return importlib.import_module(GENERATORS[name]) if name in GENERATORS else None


def data_task(spec: str | Path, signature: Signature, task: str | None = None,
              held_out_keys: list | None = None) -> Task:
    """A user's file as the task to check a model against: read as the checkpoint's
    ``task`` reads its data (a generator's ``data_task``: walks for TEM-t), else as labelled
    recordings (``recordings_task``)."""
    maker = generator(task)
    if maker is not None:
        return maker.data_task(spec, signature, held_out_keys)
    return recordings_task(spec, signature, held_out_keys)


def generated_task(signature: Signature, steps: int = 2048, seed: int = 0) -> Task:
    rec = signature.example_inputs(steps, seed)
    return Task(name="generated", description=f"{steps} samples generated from the signature "
                "(floats about the declared normalisation, integers over their range), seed "
                f"{seed}", held_out=[rec], calibration=[rec])


def recordings_task(spec: str | Path, signature: Signature,
                    held_out_keys: list | None = None) -> Task:
    """The user's recordings file as a task for a model whose first input is float sensor
    channels: the table ``wavedge run`` replays (``wavedge.recordings``: a column map after
    ``?``, a sequence column splitting recordings of any length), with ``label`` (a
    class-score model) or ``target``/``target_<i>`` columns (a regression or Gaussian model).
    ``held_out_keys``: the recordings held out (the rest calibrate); default all of them, for
    both. Raises ``InputError`` on the first bad row."""
    sensor, head = signature.inputs[0], signature.outputs[0]
    if len(signature.inputs) != 1 or sensor.dtype != "float32" or not sensor.channels:
        raise InputError(f"{spec}: recordings serve models with one float input with named "
                         "channels; give this model a task in Python (wavedge.models.tasks)")
    targets = target_columns(signature)
    table = load_table(spec, sensor.channels, "recordings", targets, signature.sample_rate_hz)
    recs, path = table.recordings, table.path
    if any(t is None for r in recs for t in r.truth):
        want = "a 'label' column" if not targets else f"column(s) {', '.join(targets)}"
        raise InputError(f"{path}: no {want} (the truth of output {head.name!r}; name another "
                         "with ?label=COLUMN)" if not targets else f"{path}: no {want}")
    keys = set(held_out_keys) if held_out_keys is not None else None
    held = [r for r in recs if keys is None or str(r.key) in keys]
    calib = [r for r in recs if keys is None or str(r.key) not in keys] or held
    common = dict(name=path.stem, held_out=[{sensor.name: r.x} for r in held],
                  calibration=[{sensor.name: r.x} for r in calib],
                  description=f"{path.name}: {len(held)} recording(s)"
                              + (" held out" if keys is not None else ""),
                  calibration_description=f"{path.name}: {len(calib)} recording(s)"
                                          + (" not held out" if calib is not held else ""))
    if not targets:
        one_label_each(table, "recordings")  # the gate scores each one's last prediction
        labels = list(head.labels) or [str(i) for i in range(head.shape[-1])]
        unknown = sorted({r.truth[-1] for r in held} - set(labels))
        if unknown:
            raise InputError(f"{path}: label(s) {unknown} are not among the model's labels "
                             f"{labels}")
        return ClassificationTask(**common, targets=[labels.index(r.truth[-1]) for r in held],
                                  output=head.name,
                                  metric="accuracy of the prediction at the last sample of "
                                         "each recording")
    try:
        values = [np.asarray([[float(v) for v in t.split(";")] for t in r.truth], np.float32)
                  for r in held]
    except ValueError:
        raise InputError(f"{path}: target column(s) {', '.join(targets)} must hold numbers") \
            from None
    return RegressionTask(**common, higher_is_better=False, output=head.name,
                          targets=[v.reshape(-1, *head.shape) for v in values],
                          metric=f"mean squared error of {head.name!r} over every sample")
