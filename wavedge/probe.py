"""The intra-neuronal attention probe: are a unit's activation zones categorically homogeneous?

After Pichat et al. (2025, arXiv 2503.12992), who cut GPT-2 neurons' activation ranges into
zones and found the tokens in the highest zone alone somewhat more homogeneous. Their exact
parameters are not public; **this operationalisation is ours**:

- a unit is one element of a float tensor the model declares (an output or a state: for the
  wave-encoder the ring neurons are its state ``h``, the readout its class scores ``y``), read
  at every sample of labelled recordings streamed from the reset state, from the exported graph
  (no torch) or from a checkpoint;
- its values are cut into ``zones`` equal-count quantile zones (tied values stay together, so a
  ReLU unit that is mostly silent has its zeros in one zone and fewer zones);
- a zone's homogeneity is its label purity (the share of its samples with the zone's most common
  label); the baseline is the purity when the recordings' labels are permuted among the
  recordings (samples of one recording are not independent: permuting single samples would make
  every zone look significant), giving a z-score and a p-value per zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavedge.errors import InputError
from wavedge.stopping import write_figure


MIN_ZONE = 10  # samples a zone holds at the least


@dataclass(frozen=True)
class ProbeOptions:
    zones: int = 5
    permutations: int = 200
    units: tuple[str, ...] = ()  # tensor names; () = every float output and state
    skip: float = 0.0  # share of each recording's first samples left out (the warm-up)
    seed: int = 0

    def validate(self) -> None:
        """``InputError`` naming the first setting no probe can take."""
        for flag, ok, want in (("--zones", self.zones >= 2, "at least 2"),
                               ("--permutations", self.permutations >= 10, "at least 10"),
                               ("--skip", 0 <= self.skip < 1, "in [0, 1)"),
                               ("--seed", self.seed >= 0, "at least 0")):
            if not ok:
                raise InputError(f"probe: {flag} must be {want}, got {getattr(self, flag[2:])}")


@dataclass
class Activations:
    """Every probed tensor's values at each kept sample ``{name: [N, units]}``, the sample's
    label and its recording's index."""

    values: dict[str, np.ndarray]
    labels: np.ndarray
    recording: np.ndarray
    label_names: tuple[str, ...]


def probed_tensors(signature, wanted: tuple[str, ...]) -> list[str]:
    """The float outputs and states of ``signature`` (their graph names), or those ``wanted``."""
    have = [o.name for o in signature.outputs if o.dtype == "float32"]
    have += [s.name for s in signature.state if s.dtype == "float32"]
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise InputError(f"probe: no float output or state named {', '.join(unknown)}; the "
                         f"model has {', '.join(have)}")
    return list(dict.fromkeys(wanted)) or have  # a name given twice is probed once


def from_stream(model, recordings, names: list[str], skip: float) -> dict[str, list]:
    """Stream each recording through an exported graph from the reset state; the values of
    ``names`` (outputs by name, states by name) at each kept sample."""
    stream = model.stream("reject", guards=False)  # every sample read, none judged
    state_names = [s.name for s in model.signature.state]
    rows: dict[str, list] = {n: [] for n in names}
    for rec in recordings:
        stream.reset()
        first = int(skip * len(rec.x))
        for t, x in enumerate(rec.x):
            outputs = stream.push(x).outputs
            if t < first:
                continue
            state = dict(zip(state_names, stream.state))
            for n in names:
                rows[n].append(np.ravel(outputs[n] if n in outputs else state[n]))
    return rows


def from_torch(model, recordings, names: list[str], skip: float) -> dict[str, list]:
    """As ``from_stream``, from a torch model (its step loop, batch 1)."""
    import torch

    sig = model.signature
    order = [o.name for o in sig.outputs] + [s.name for s in sig.state]
    mean, std = _normalisation(sig)
    rows: dict[str, list] = {n: [] for n in names}
    # a stochastic model's noise is zero, as a stream runs it by default (the mean network)
    noise = [torch.zeros(1, *i.shape) for i in sig.noise]
    with torch.no_grad():
        for rec in recordings:
            state = model.init_state(1)
            first = int(skip * len(rec.x))
            for t, x in enumerate(torch.from_numpy((rec.x - mean) / std).float()):
                out = model.step(x[None], *noise, *state)
                state = out[len(sig.outputs):]
                if t >= first:
                    got = dict(zip(order, out))
                    for n in names:
                        rows[n].append(got[n].numpy().ravel())
    return rows


def _normalisation(sig):
    norm = sig.inputs[0].normalise  # the exported graph normalises in-graph; torch does not
    if norm is None:
        return np.float32(0.0), np.float32(1.0)
    return np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)


def sample_labels(recordings, skip: float, label_names) -> tuple[np.ndarray, np.ndarray]:
    labels, rec_ids = [], []
    for k, rec in enumerate(recordings):
        kept = rec.truth[int(skip * len(rec.x)):]
        if any(t is None for t in kept):
            raise InputError("probe: the data has no 'label' column (name one with "
                             "?label=COLUMN): zones are scored by label purity")
        labels += [label_names.index(t) for t in kept]
        rec_ids += [k] * len(kept)
    return np.asarray(labels), np.asarray(rec_ids)


def zones_of(v: np.ndarray, zones: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-count quantile zones of ``v``, numbered 0 (lowest) up, ties kept in one zone and
    empty zones dropped; returns each sample's zone and each zone's ``[low, high]``."""
    edges = np.quantile(v, np.linspace(0, 1, zones + 1)[1:-1])
    raw = np.searchsorted(edges, v, side="left")
    occupied, zone = np.unique(raw, return_inverse=True)
    ranges = np.array([[v[zone == z].min(), v[zone == z].max()] for z in range(len(occupied))])
    return zone, ranges


def purity(zone: np.ndarray, labels: np.ndarray, n_zones: int, n_labels: int) -> np.ndarray:
    """Label purity of each zone for each row of ``labels`` ``[P, N]`` -> ``[P, zones]``."""
    p = labels.shape[0]
    idx = (np.arange(p)[:, None] * n_zones + zone[None, :]) * n_labels + labels
    counts = np.bincount(idx.ravel(), minlength=p * n_zones * n_labels)
    counts = counts.reshape(p, n_zones, n_labels)
    return counts.max(-1) / np.maximum(counts.sum(-1), 1)


def null_labels(acts: Activations, permutations: int, seed: int) -> np.ndarray:
    """``[P, N]`` sample labels with the recordings' labels permuted among the recordings
    (each recording keeps its own sequence of labels, moved to another recording's samples
    only when all recordings hold one label each, as in a classification table)."""
    rng = np.random.default_rng(seed)
    n_rec = int(acts.recording.max()) + 1
    per_rec = np.array([acts.labels[acts.recording == k][0] for k in range(n_rec)])
    one_each = all((acts.labels[acts.recording == k] == per_rec[k]).all() for k in range(n_rec))
    if not one_each:  # labels change within recordings: permute samples (a weaker null)
        return np.stack([rng.permutation(acts.labels) for _ in range(permutations)])
    return np.stack([rng.permutation(per_rec)[acts.recording] for _ in range(permutations)])


def score_units(acts: Activations, options: ProbeOptions) -> list[dict]:
    """One row per (tensor, unit, zone): range, size, purity, the null's mean and spread, z, p."""
    null = null_labels(acts, options.permutations, options.seed)
    k = len(acts.label_names)
    rows = []
    for name, values in acts.values.items():
        for unit in range(values.shape[1]):
            v = values[:, unit]
            if np.ptp(v) == 0:
                rows.append({"tensor": name, "unit": unit, "silent": True})
                continue
            zone, ranges = zones_of(v, options.zones)
            z_n = len(ranges)
            observed = purity(zone, acts.labels[None], z_n, k)[0]
            base = purity(zone, null, z_n, k)
            mu, sd = base.mean(0), base.std(0)
            for j in range(z_n):
                rows.append({
                    "tensor": name, "unit": unit, "zone": j, "from_top": z_n - 1 - j,
                    "low": float(ranges[j, 0]), "high": float(ranges[j, 1]),
                    "n": int((zone == j).sum()), "purity": float(observed[j]),
                    "null_mean": float(mu[j]), "null_std": float(sd[j]),
                    "z": float((observed[j] - mu[j]) / sd[j]) if sd[j] > 0 else None,
                    "p": float((1 + (base[:, j] >= observed[j]).sum()) / (1 + len(base)))})
    return rows


def summarise(rows: list[dict], zones: int) -> list[dict]:
    """Per tensor and zone position (counted from the top): how many units, their mean and
    median z, and the share significant at p < 0.05 (uncorrected)."""
    out = []
    for name in dict.fromkeys(r["tensor"] for r in rows):
        mine = [r for r in rows if r["tensor"] == name]
        silent = sum(1 for r in mine if r.get("silent"))
        for top in range(zones):
            at = [r for r in mine if r.get("from_top") == top and r["z"] is not None]
            if not at:
                continue
            z = np.array([r["z"] for r in at])
            out.append({"tensor": name, "from_top": top, "units": len(at), "silent": silent,
                        "mean_z": float(z.mean()), "median_z": float(np.median(z)),
                        "mean_purity": float(np.mean([r["purity"] for r in at])),
                        "mean_null": float(np.mean([r["null_mean"] for r in at])),
                        "significant": float(np.mean([r["p"] < 0.05 for r in at]))})
    return out


def verdict(summary: list[dict]) -> dict[str, str]:
    """Per tensor, the paper's claim checked: is the excess homogeneity only in the top zone?"""
    out = {}
    for name in dict.fromkeys(s["tensor"] for s in summary):
        mine = {s["from_top"]: s for s in summary if s["tensor"] == name}
        top, rest = mine.get(0), [s for k, s in mine.items() if k > 0]
        if top is None or not rest:
            out[name] = "too few zones to compare"
            continue
        best_rest = max(rest, key=lambda s: s["mean_z"])
        if top["mean_z"] > 2 and best_rest["mean_z"] <= 2:
            out[name] = "excess in the top zone only (as the paper reports)"
        elif top["mean_z"] > best_rest["mean_z"]:
            out[name] = "excess highest in the top zone, but present below it too"
        else:
            out[name] = (f"not concentrated in the top zone (zone {best_rest['from_top']} "
                         "from the top scores higher)")
    return out


def table(summary: list[dict]) -> str:
    lines = ["| tensor | zone (0 = top) | units | silent | purity | null | mean z | median z "
             "| p < 0.05 |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['tensor']} | {s['from_top']} | {s['units']} | {s['silent']} "
                     f"| {s['mean_purity']:.3f} | {s['mean_null']:.3f} | {s['mean_z']:.2f} "
                     f"| {s['median_z']:.2f} | {s['significant']:.2f} |")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> bool:
    """Mean z per zone position for each tensor (PNG); False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in dict.fromkeys(s["tensor"] for s in summary):
        mine = sorted((s for s in summary if s["tensor"] == name), key=lambda s: -s["from_top"])
        ax.plot([-s["from_top"] for s in mine], [s["mean_z"] for s in mine], "o-", label=name)
    ax.set_xticks(sorted({-s["from_top"] for s in summary}))
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(2, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("activation zone (0 = highest, -1 the next below, ...)")
    ax.set_ylabel("mean z of label purity\nvs permuted recordings")
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, 110)
    return True


@dataclass
class Report:
    source: str  # what the activations were read from
    data: str
    samples: int
    recordings: int
    label_names: tuple[str, ...]
    options: ProbeOptions
    rows: list[dict]
    summary: list[dict]
    verdict: dict[str, str]

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {"operationalisation": __doc__.split("\n\n")[1].strip().replace("\n", " "),
                "source": self.source, "data": self.data, "samples": self.samples,
                "recordings": self.recordings, "labels": list(self.label_names),
                "options": asdict(self.options), "summary": self.summary,
                "verdict": self.verdict, "zones": self.rows}


def run_probe(model_path: str | Path, data: str | None, options: ProbeOptions = ProbeOptions(),
              backend: str = "onnxruntime", precision: str = "fp32",
              untrained: bool = False) -> Report:
    """Probe a model directory (its exported graph, no torch) or a ``.pt`` checkpoint over
    ``data`` (a recordings table with a label column; default: the directory's recording).
    ``untrained``: a checkpoint's architecture at its initial weights instead (the control:
    what the zones hold before training, from the data alone)."""
    from wavedge.recordings import load_table

    options.validate()
    path = Path(model_path)
    model, sig = _open(path, backend, precision, untrained, options.seed)
    data = data or _default_recording(path)
    sensor = sig.inputs[0]
    if sig.fed != sig.inputs[:1] or sensor.dtype != "float32":
        raise InputError("probe: reads models with one float input from a recordings table")
    recs = load_table(data, sensor.channels or None, "probe data",
                      model_hz=sig.sample_rate_hz).recordings
    names = probed_tensors(sig, options.units)
    if not hasattr(model, "stream"):  # a torch model, from a checkpoint
        rows = from_torch(model, recs, names, options.skip)
        source = f"{path} (torch{', untrained: its initial weights' if untrained else ''})"
    else:
        rows = from_stream(model, recs, names, options.skip)
        source = f"{path} ({model.backend}, {model.precision})"
    label_names = tuple(sorted({str(t) for r in recs for t in r.truth if t is not None}))
    labels, rec_ids = sample_labels(recs, options.skip, label_names)
    if options.zones > len(labels) // MIN_ZONE:  # more zones than samples hung the scoring
        raise InputError(f"probe: --zones {options.zones} for {len(labels)} samples; at most "
                         f"{len(labels) // MIN_ZONE}, so that every zone holds {MIN_ZONE} or more")
    acts = Activations({n: np.stack(v) for n, v in rows.items()}, labels, rec_ids, label_names)
    scored = score_units(acts, options)
    summary = summarise(scored, options.zones)
    return Report(source, str(data), len(labels), len(recs), label_names, options, scored,
                  summary, verdict(summary))


def _open(path: Path, backend: str, precision: str, untrained: bool, seed: int):
    if path.suffix == ".pt":
        try:
            import torch

            from wavedge.models import build_model
            from wavedge.models.checkpoint import load_checkpoint
        except ImportError:
            raise InputError(f"probe: {path} is a torch checkpoint and torch is not installed "
                             "here; probe its exported model directory instead") from None
        model = load_checkpoint(path).model.eval()
        if untrained:
            torch.manual_seed(seed)
            fresh = build_model(model.arch, **model.config).eval()
            fresh.annotations = model.annotations  # the same data normalisation and labels
            model = fresh
        return model, model.signature
    if untrained:
        raise InputError("probe: --untrained rebuilds a checkpoint's architecture; give the "
                         ".pt checkpoint, not a model directory")
    from wavedge.runtime import load_model

    model = load_model(path, backend, precision)
    return model, model.signature


def _default_recording(path: Path) -> str:
    instead = "give DATA (a table with a label column)"
    if not path.is_dir():
        raise InputError(f"probe: {path} has no recording; {instead}")
    from wavedge.manifest import load_manifest

    return str(load_manifest(path).own_recording(instead))
