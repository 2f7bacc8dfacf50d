"""A model's typed signature: its named inputs, outputs and state tensors, declared once.

Every model declares one (``StepModel.signature``, torch side); export writes it into the
manifest (version 2, ``signature``) and everything downstream reads it from there by name and
dtype: graph building, the parity check, both runtime backends, ``Stream`` and its output
heads, bench, the bridge. Pure Python + numpy: the board reads it without torch.

- **inputs**: one tensor per step each (``shape`` per sample, no batch or time axis), with a
  ``role`` (sensor, observation, action, token, noise) and optional in-graph ``normalise``
  (per channel mean and std, the graph's first operation). A ``noise`` input is standard
  normal noise the model samples with (a stochastic network's draws, as an input so that
  streams are reproducible): the stream fills it itself (zeros, the deterministic mean
  network, unless asked to sample) and a caller may give it. Integer inputs may declare ``range``
  (``[low, high)``, e.g. a vocabulary), which the stream checks before feeding them.
- **outputs**: one tensor per step each, with a ``kind`` the runtime has a head for
  (``OUTPUT_KINDS``). A Gaussian prediction is two outputs: ``gaussian_mean`` naming its
  ``variance`` output (kind ``variance``).
- **state**: carried from call to call as ``state_in.<name>`` / ``state_out.<name>``, any of
  ``DTYPES``, reset to a scalar ``reset_value`` or a whole ``reset`` tensor.

The step contract follows the order declared here: ``step(*inputs, *state) -> (*outputs,
*state)``; a graph's tensors are ``graph_inputs()`` and ``graph_outputs()``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from wavedge.errors import ManifestError

DTYPES = ("float32", "int32", "int64", "bool")
INPUT_ROLES = ("sensor", "observation", "action", "token", "noise", "other")
OUTPUT_KINDS = ("class_scores", "gaussian_mean", "variance", "regression", "token_logits",
                "embedding", "activations")


def state_input_name(name: str) -> str:
    return f"state_in.{name}"


def state_output_name(name: str) -> str:
    return f"state_out.{name}"


@dataclass(frozen=True)
class Normalise:
    """In-graph per-channel normalisation ``(x - mean) / std`` over the input's last axis."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict:
        return {"kind": "normalise", "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std], "in_graph": True}


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    role: str = "sensor"
    channels: tuple[str, ...] = ()  # names along the last axis (sensor inputs)
    normalise: Normalise | None = None
    range: tuple[int, int] | None = None  # integer inputs: allowed values [low, high)
    # float inputs: the raw values accepted, per element of the last axis, (lows, highs);
    # anything outside is a bad sample (export sets it from the training data, with a margin)
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
               "role": self.role}
        if self.channels:
            out["channels"] = list(self.channels)
        out["preprocessing"] = self.normalise.to_json() if self.normalise else None
        if self.range is not None:
            out["range"] = list(self.range)
        if self.bounds is not None:
            out["bounds"] = {"low": list(self.bounds[0]), "high": list(self.bounds[1])}
        return out


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: tuple[int, ...]
    kind: str = "class_scores"
    dtype: str = "float32"
    labels: tuple[str, ...] = ()  # class_scores: one name per class
    variance: str | None = None  # gaussian_mean: the name of its variance output

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
               "kind": self.kind}
        if self.labels:
            out["labels"] = list(self.labels)
        if self.variance:
            out["variance"] = self.variance
        return out


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: name, shape for one stream (no batch axis), dtype, and its
    reset: ``reset_value`` everywhere, or the whole ``reset`` tensor (nested lists)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    reset_value: float | int | bool = 0.0
    reset: tuple | None = None
    # float state: the largest magnitude a healthy stream reaches (export: 10x the largest seen
    # on the check stream); beyond it the runtime resets the state and counts it
    limit: float | None = None

    @property
    def input_name(self) -> str:
        return state_input_name(self.name)

    @property
    def output_name(self) -> str:
        return state_output_name(self.name)

    def reset_array(self, batch: int = 1) -> np.ndarray:
        """The reset state of ``batch`` streams as numpy, ``[batch, *shape]``."""
        one = (np.asarray(self.reset, dtype=self.dtype).reshape(self.shape)
               if self.reset is not None else np.full(self.shape, self.reset_value, self.dtype))
        return np.repeat(one[None], batch, axis=0)

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
               "reset_value": self.reset_value, "input": self.input_name,
               "output": self.output_name}
        if self.reset is not None:
            out["reset"] = np.asarray(self.reset).reshape(self.shape).tolist()
        if self.limit is not None:
            out["limit"] = self.limit
        return out


@dataclass(frozen=True)
class Signature:
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    state: tuple[StateSpec, ...] = ()
    sample_rate_hz: float | None = None

    # -- names, in the order of the step contract --------------------------------------------
    def graph_inputs(self) -> list[str]:
        return [i.name for i in self.inputs] + [s.input_name for s in self.state]

    def graph_outputs(self) -> list[str]:
        return [o.name for o in self.outputs] + [s.output_name for s in self.state]

    def graph_io(self, samples: int = 1, batch: int = 1) -> tuple[list, list]:
        """(name, shape, dtype) of a graph's inputs and outputs at ``samples`` per call and
        ``batch`` streams per call (a chunk graph has a time axis of ``samples`` on every
        input and output)."""
        t = () if samples == 1 else (samples,)
        ins = [(i.name, (batch, *t, *i.shape), i.dtype) for i in self.inputs]
        outs = [(o.name, (batch, *t, *o.shape), o.dtype) for o in self.outputs]
        ins += [(s.input_name, (batch, *s.shape), s.dtype) for s in self.state]
        outs += [(s.output_name, (batch, *s.shape), s.dtype) for s in self.state]
        return ins, outs

    def output(self, name: str) -> OutputSpec:
        return next(o for o in self.outputs if o.name == name)

    @property
    def sensor(self) -> InputSpec | None:
        """The first float input (what the line-oriented sources feed), or None."""
        return next((i for i in self.fed if i.dtype == "float32"), None)

    @property
    def row(self) -> tuple[str, ...]:
        """A line source's columns (CSV, JSON lines, serial, SENSOR frames), one per value of
        a sample: every fed input's values in order, each named by its channel, by the
        input's name where it is one value of several inputs, else ``<input>_<i>``. A flat
        row of these values is a sample (``Stream.push`` splits it)."""
        several = len(self.fed) > 1
        return tuple(name for i in self.fed for name in (
            i.channels or ((i.name,) if several and i.size == 1 else
                           tuple(f"{i.name}_{k}" for k in range(i.size)))))

    @property
    def fed(self) -> tuple[InputSpec, ...]:
        """The inputs a sample carries: all but the ``noise`` inputs, which the stream fills."""
        return tuple(i for i in self.inputs if i.role != "noise")

    @property
    def noise(self) -> tuple[InputSpec, ...]:
        """The ``noise`` inputs: a stochastic network's draws, which the stream fills."""
        return tuple(i for i in self.inputs if i.role == "noise")

    def with_noise(self, recording: dict, seed: int = 0) -> dict:
        """``recording`` (``{input name: [T, *shape]}``) with every ``noise`` input it lacks
        drawn standard normal (seeded): what a check or a calibration streams, so that the
        graphs' noise paths are exercised, not only the mean network."""
        missing = [i for i in self.noise if i.name not in recording]
        if not missing:
            return recording
        steps = len(next(iter(recording.values())))
        rng = np.random.default_rng(seed)
        return {**recording, **{i.name: rng.standard_normal((steps, *i.shape)).astype(
            np.float32) for i in missing}}

    def with_annotations(self, channels=None, labels=None, mean=None, std=None,
                         sample_rate_hz=None) -> "Signature":
        """A copy with the first input's channel names and normalisation and the first
        class-score output's labels set (what training learns about a classifier's data)."""
        inputs, outputs = list(self.inputs), list(self.outputs)
        if inputs:
            first = inputs[0]
            inputs[0] = replace(first, channels=tuple(channels) if channels else first.channels,
                                normalise=(Normalise(tuple(map(float, mean)),
                                                     tuple(map(float, std)))
                                           if mean is not None else first.normalise))
        for k, o in enumerate(outputs):
            if o.kind == "class_scores" and labels:
                outputs[k] = replace(o, labels=tuple(labels))
                break
        return replace(self, inputs=tuple(inputs), outputs=tuple(outputs),
                       sample_rate_hz=(sample_rate_hz if sample_rate_hz is not None
                                       else self.sample_rate_hz))

    # -- example data --------------------------------------------------------------------------
    def example_inputs(self, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``steps`` samples of every input, ``[steps, *shape]``, in raw units: floats drawn
        around the declared normalisation (N(0, 1) without one), integers uniform over their
        range (0-1 without one), booleans at random. For parity checks without a task and for
        benchmarks."""
        rng = np.random.default_rng(seed)
        out = {}
        for i in self.inputs:
            shape = (steps, *i.shape)
            if i.dtype == "float32":
                x = rng.standard_normal(shape)
                if i.normalise is not None:
                    x = np.asarray(i.normalise.mean) + np.asarray(i.normalise.std) * x
                out[i.name] = x.astype(np.float32)
            elif i.dtype == "bool":
                out[i.name] = rng.random(shape) < 0.5
            else:
                low, high = i.range or (0, 2)
                out[i.name] = rng.integers(low, high, shape).astype(i.dtype)
        return out

    # -- json -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"inputs": [i.to_json() for i in self.inputs],
                "outputs": [o.to_json() for o in self.outputs],
                "state": [s.to_json() for s in self.state],
                "sample_rate_hz": self.sample_rate_hz}

    @classmethod
    def from_json(cls, raw: object, where: str = "signature") -> "Signature":
        """Parse and check a manifest's ``signature``; ``ManifestError`` names the field."""
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected an object")
        inputs = tuple(_input(r, f"{where}.inputs[{k}]")
                       for k, r in enumerate(_list(raw, "inputs", where)))
        outputs = tuple(_output(r, f"{where}.outputs[{k}]")
                        for k, r in enumerate(_list(raw, "outputs", where)))
        state = tuple(_state(r, f"{where}.state[{k}]")
                      for k, r in enumerate(_list(raw, "state", where, empty=True)))
        rate = raw.get("sample_rate_hz")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or rate <= 0):
            raise ManifestError(f"{where}.sample_rate_hz: should be a positive number or null, "
                                f"got {rate!r}")
        sig = cls(inputs, outputs, state, rate)
        sig.check(where)
        return sig

    def check(self, where: str = "signature") -> None:
        """Names unique, every Gaussian mean's variance present; ``ManifestError``."""
        names = self.graph_inputs() + [o.name for o in self.outputs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ManifestError(f"{where}: tensor name(s) {dup} used more than once")
        for o in self.outputs:
            if o.kind == "gaussian_mean":
                var = next((v for v in self.outputs if v.name == o.variance), None)
                if var is None or var.kind != "variance" or var.shape != o.shape:
                    raise ManifestError(f"{where}: gaussian_mean output {o.name!r} names "
                                        f"variance {o.variance!r}, which is not a 'variance' "
                                        "output of the same shape")
            if o.kind == "class_scores" and o.labels and len(o.labels) != o.shape[-1]:
                raise ManifestError(f"{where}: output {o.name!r} has {o.shape[-1]} classes "
                                    f"but {len(o.labels)} labels")


def _list(raw: dict, key: str, where: str, empty: bool = False) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or (not value and not empty):
        raise ManifestError(f"{where}.{key}: should be a {'' if empty else 'non-empty '}list")
    return value


def _field(raw: object, key: str, kind, where: str, default=...):
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: should be an object")
    if key not in raw:
        if default is ...:
            raise ManifestError(f"{where}: missing field {key!r}")
        return default
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool
                                       and bool not in (kind if isinstance(kind, tuple) else ())):
        raise ManifestError(f"{where}.{key}: should be {getattr(kind, '__name__', kind)}, "
                            f"got {type(value).__name__}")
    return value


def _shape(raw: dict, where: str) -> tuple[int, ...]:
    shape = _field(raw, "shape", list, where)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                            for d in shape):
        raise ManifestError(f"{where}.shape: should list one or more positive integers, got "
                            f"{shape!r}")
    return tuple(shape)


def _dtype(raw: dict, where: str) -> str:
    dtype = _field(raw, "dtype", str, where)
    if dtype not in DTYPES:
        raise ManifestError(f"{where}: dtype {dtype!r} is not one this runtime serves "
                            f"({', '.join(DTYPES)})")
    return dtype


def _input(raw: dict, where: str) -> InputSpec:
    shape, dtype = _shape(raw, where), _dtype(raw, where)
    role = _field(raw, "role", str, where, "sensor")
    if role not in INPUT_ROLES:
        raise ManifestError(f"{where}: role {role!r} is not one of {', '.join(INPUT_ROLES)}")
    channels = _names(raw, "channels", where)
    if channels and len(channels) != shape[-1]:
        raise ManifestError(f"{where}: {len(channels)} channel names for a last axis of "
                            f"{shape[-1]}")
    pre = _field(raw, "preprocessing", (dict, type(None)), where, None)
    norm = None
    if pre is not None:
        if pre.get("kind") != "normalise" or pre.get("in_graph") is not True:
            raise ManifestError(f"{where}.preprocessing: only in-graph 'normalise' is served, "
                                f"got {pre.get('kind')!r}")
        if dtype != "float32":
            raise ManifestError(f"{where}: a {dtype} input cannot be normalised")
        vals = {}
        for key in ("mean", "std"):
            v = pre.get(key)
            if not isinstance(v, list) or len(v) != shape[-1] or not all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
                raise ManifestError(f"{where}.preprocessing.{key}: should hold {shape[-1]} "
                                    f"numbers, got {v!r}")
            vals[key] = tuple(float(a) for a in v)
        if any(s <= 0 for s in vals["std"]):
            raise ManifestError(f"{where}.preprocessing.std must be positive")
        norm = Normalise(vals["mean"], vals["std"])
    rng = _field(raw, "range", (list, type(None)), where, None)
    if rng is not None and (len(rng) != 2 or not all(isinstance(a, int) for a in rng)
                            or rng[0] >= rng[1] or dtype in ("float32", "bool")):
        raise ManifestError(f"{where}.range: should be [low, high) integers of an integer "
                            f"input, got {rng!r}")
    return InputSpec(_field(raw, "name", str, where), shape, dtype, role, channels, norm,
                     tuple(rng) if rng else None, _bounds(raw, where, shape, dtype))


def _bounds(raw: dict, where: str, shape: tuple, dtype: str):
    b = _field(raw, "bounds", (dict, type(None)), where, None)
    if b is None:
        return None
    lo, hi = b.get("low"), b.get("high")
    ok = dtype == "float32" and all(
        isinstance(v, list) and len(v) == shape[-1]
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v)
        for v in (lo, hi))
    if not ok or not all(a < c for a, c in zip(lo, hi)):
        raise ManifestError(f"{where}.bounds: should be {{'low': [...], 'high': [...]}} with "
                            f"{shape[-1]} numbers each, low < high, on a float input")
    return tuple(float(a) for a in lo), tuple(float(a) for a in hi)


def _names(raw: dict, key: str, where: str) -> tuple[str, ...]:
    names = _field(raw, key, list, where, [])
    if not all(isinstance(n, str) for n in names):
        raise ManifestError(f"{where}.{key}: should be strings, got {names[:4]!r}")
    return tuple(names)


def _output(raw: dict, where: str) -> OutputSpec:
    shape, dtype = _shape(raw, where), _dtype(raw, where)
    kind = _field(raw, "kind", str, where)
    if kind not in OUTPUT_KINDS:
        raise ManifestError(f"{where}: output kind {kind!r} has no head in this runtime "
                            f"(it serves {', '.join(OUTPUT_KINDS)})")
    if dtype != "float32" and kind != "activations":
        raise ManifestError(f"{where}: a {kind} output must be float32, got {dtype}")
    labels = _names(raw, "labels", where)
    return OutputSpec(_field(raw, "name", str, where), shape, kind, dtype, labels,
                      _field(raw, "variance", (str, type(None)), where, None))


def _state(raw: dict, where: str) -> StateSpec:
    name = _field(raw, "name", str, where)
    shape, dtype = _shape(raw, where), _dtype(raw, where)
    value = _field(raw, "reset_value", (int, float, bool), where, 0)
    reset = _field(raw, "reset", (list, type(None)), where, None)
    if reset is not None and np.asarray(reset).shape != shape:
        raise ManifestError(f"{where}.reset: shape {np.asarray(reset).shape} is not the "
                            f"state's {shape}")
    for key, want in (("input", state_input_name(name)), ("output", state_output_name(name))):
        if _field(raw, key, str, where, want) != want:
            raise ManifestError(f"{where}.{key}: should be {want!r}")
    limit = _field(raw, "limit", (int, float, type(None)), where, None)
    if limit is not None and not (limit > 0 and dtype == "float32"):
        raise ManifestError(f"{where}.limit: should be a positive number on a float state")
    return StateSpec(name, shape, dtype, value, None if reset is None else tuple(
        np.asarray(reset).reshape(-1).tolist()), limit)


__all__ = ["DTYPES", "INPUT_ROLES", "OUTPUT_KINDS", "InputSpec", "Normalise", "OutputSpec",
           "Signature", "StateSpec"]
