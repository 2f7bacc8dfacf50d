"""Output heads: what each output kind of a signature means to a user, chosen by kind.

A head turns a model's raw outputs at one step into a record (what ``jsonl:`` writes and
``csv:`` flattens), a line (``stdout:``), a bridge prediction (``link:``) and, where the source
carries truth, a score against it (the run summary). ``HEADS`` maps each output kind to its
head; an output of kind ``variance`` belongs to the ``gaussian_mean`` that names it.

| kind | record | truth |
|---|---|---|
| class_scores (+ variance) | class_id, label, score (softmax), logits (and logit_variance) | label agreement |
| gaussian_mean (+ variance) | mean, variance | squared error of the mean |
| regression, embedding, activations | the values | squared error (regression) |
| token_logits | token, prob, top_ids, top_probs (top 5; never the whole vocabulary) | token agreement |
"""

from __future__ import annotations

import math

import numpy as np

from wavedge.errors import ManifestError
from wavedge.signature import OutputSpec, Signature

TOP_K = 5
FEW_CLASSES = 32  # up to here a class head's top is computed in Python floats (ClassHead.top)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _floats(v: np.ndarray) -> list:
    return [round(a, 6) for a in np.asarray(v, np.float64).reshape(-1).tolist()]


class Head:
    """One output (or a Gaussian's pair) of a signature. ``reads`` are the output indices."""

    kind = ""
    truth = None  # what ``score_truth`` measures: "agreement", "squared_error" or None

    def __init__(self, spec: OutputSpec, signature: Signature) -> None:
        self.output_names = [o.name for o in signature.outputs]
        self.spec, self.name = spec, spec.name
        self.reads = (self.output_names.index(spec.name),)

    def record(self, values: list[np.ndarray]) -> dict:
        return {self.name: _floats(values[self.reads[0]])}

    def columns(self) -> list[str]:
        return [f"{self.name}_{i}" for i in range(int(np.prod(self.spec.shape)))]

    def row(self, record: dict) -> list:
        return list(record[self.name])

    def text(self, values: list[np.ndarray]) -> str:
        v = np.asarray(values[self.reads[0]]).reshape(-1)
        more = f" ... ({v.size} values)" if v.size > 4 else ""
        return f"{self.name} " + " ".join(f"{a:.4g}" for a in v[:4]) + more

    @property
    def bridge_kind(self) -> str:
        """The PREDICTION frame's kind (``firmware_bridge.messages.PREDICTION_KINDS``)."""
        return self.spec.kind

    def bridge(self, values: list[np.ndarray]) -> tuple[int, float, tuple[float, ...]]:
        """(index, score, vector) of a PREDICTION frame."""
        return 0, 0.0, tuple(float(a) for a in np.asarray(values[self.reads[0]]).reshape(-1))

    def bridge_floats(self) -> int:
        return int(np.prod(self.spec.shape))

    def score_truth(self, values: list[np.ndarray], truth: str):
        return None


class ClassHead(Head):
    kind = "class_scores"
    truth = "agreement"

    def __init__(self, spec, signature) -> None:
        super().__init__(spec, signature)
        self.labels = spec.labels
        # a predictive variance of the logits rides along (e.g. mpl): its output's index
        self.var_at = self.output_names.index(spec.variance) if spec.variance else None
        if self.var_at is not None:
            self.reads = (self.reads[0], self.var_at)

    def class_id(self, values) -> int:
        return int(values[self.reads[0]].argmax())

    def _name(self, c: int) -> str:
        return self.labels[c] if self.labels else str(c)

    def label(self, values) -> str:
        return self._name(self.class_id(values))

    def top(self, values) -> tuple[int, float]:
        """The class (the first of equal logits, as argmax) and its softmax probability. For
        up to ``FEW_CLASSES`` classes in Python floats: numpy's cost per call was most of a
        result's record (3 classes: 19 us a record, 6.3 us so); beyond, numpy's."""
        logits = values[self.reads[0]].reshape(-1)
        if logits.size > FEW_CLASSES:
            c = int(logits.argmax())
            return c, float(softmax(logits)[c])
        v = logits.tolist()
        c = max(range(len(v)), key=v.__getitem__)
        return c, 1.0 / sum(math.exp(x - v[c]) for x in v)

    def score(self, values) -> float:
        return self.top(values)[1]

    def record(self, values) -> dict:
        c, p = self.top(values)
        out = {"class_id": c, "label": self._name(c), "score": round(p, 6),
               "logits": _floats(values[self.reads[0]])}
        if self.var_at is not None:
            out["logit_variance"] = _floats(values[self.var_at])
        return out

    def columns(self) -> list[str]:
        labels = self.labels or [str(i) for i in range(self.spec.shape[-1])]
        extra = [f"logit_var_{name}" for name in labels] if self.var_at is not None else []
        return ["class_id", "label", "score", *(f"logit_{name}" for name in labels), *extra]

    def row(self, record: dict) -> list:
        return [record["class_id"], record["label"], record["score"], *record["logits"],
                *record.get("logit_variance", ())]

    def text(self, values) -> str:
        c, p = self.top(values)
        line = f"{self._name(c):<12} {p:6.3f}"
        if self.var_at is not None:  # the predicted class's logit, with its spread
            sd = float(np.sqrt(max(float(values[self.var_at].reshape(-1)[c]), 0.0)))
            line += f"  logit {float(values[self.reads[0]].reshape(-1)[c]):.3g}+-{sd:.2g}"
        return line

    @property
    def bridge_kind(self) -> str:
        return "class_scores_variance" if self.var_at is not None else self.kind

    def bridge(self, values):
        """(class, probability, the logits and, when the model declares it, their
        variances)."""
        return (*self.top(values), tuple(
            float(a) for k in self.reads for a in values[k].reshape(-1)))

    def bridge_floats(self) -> int:
        return len(self.reads) * int(np.prod(self.spec.shape))

    def score_truth(self, values, truth: str):
        return self.label(values) == truth


class GaussianHead(Head):
    kind = "gaussian_mean"
    truth = "squared_error"

    def __init__(self, spec, signature) -> None:
        super().__init__(spec, signature)
        self.reads = (self.output_names.index(spec.name), self.output_names.index(spec.variance))

    def record(self, values) -> dict:
        return {"mean": _floats(values[self.reads[0]]),
                "variance": _floats(values[self.reads[1]])}

    def columns(self) -> list[str]:
        n = int(np.prod(self.spec.shape))
        return [f"mean_{i}" for i in range(n)] + [f"variance_{i}" for i in range(n)]

    def row(self, record: dict) -> list:
        return [*record["mean"], *record["variance"]]

    def text(self, values) -> str:
        m = values[self.reads[0]].reshape(-1)
        sd = np.sqrt(np.maximum(values[self.reads[1]].reshape(-1), 0.0))
        shown = " ".join(f"{a:.4g}+-{b:.2g}" for a, b in zip(m[:4], sd[:4]))
        return f"{self.name} {shown}" + (f" ... ({m.size} values)" if m.size > 4 else "")

    def bridge(self, values):
        return 0, 0.0, tuple(float(a) for a in (*values[self.reads[0]].reshape(-1),
                                                *values[self.reads[1]].reshape(-1)))

    def bridge_floats(self) -> int:
        return 2 * int(np.prod(self.spec.shape))

    def score_truth(self, values, truth: str):
        return _squared_error(values[self.reads[0]], truth)


class ValuesHead(Head):
    """regression, embedding and activations: the values as they are."""

    kind = "regression"

    def __init__(self, spec, signature) -> None:
        super().__init__(spec, signature)
        self.truth = "squared_error" if spec.kind == "regression" else None

    def score_truth(self, values, truth: str):
        if self.spec.kind != "regression":
            return None
        return _squared_error(values[self.reads[0]], truth)


class TokenHead(Head):
    kind = "token_logits"
    truth = "agreement"

    def _top(self, values):
        logits = values[self.reads[0]].reshape(-1)
        k = min(TOP_K, logits.size)
        ids = np.argpartition(-logits, k - 1)[:k]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        return ids, softmax(logits)[ids]

    def record(self, values) -> dict:
        ids, probs = self._top(values)
        return {"token": int(ids[0]), "prob": round(float(probs[0]), 6),
                "top_ids": [int(i) for i in ids], "top_probs": _floats(probs)}

    def columns(self) -> list[str]:
        k = min(TOP_K, int(np.prod(self.spec.shape)))
        return ["token", "prob", *(f"top{i}_id" for i in range(k)),
                *(f"top{i}_prob" for i in range(k))]

    def row(self, record: dict) -> list:
        return [record["token"], record["prob"], *record["top_ids"], *record["top_probs"]]

    def text(self, values) -> str:
        ids, probs = self._top(values)
        return f"token {int(ids[0]):>6} {float(probs[0]):6.3f}"

    def bridge(self, values):
        ids, probs = self._top(values)
        return int(ids[0]), float(probs[0]), tuple(float(p) for p in probs)

    def bridge_floats(self) -> int:
        return min(TOP_K, int(np.prod(self.spec.shape)))

    def score_truth(self, values, truth: str):
        return str(self._top(values)[0][0]) == truth


def _squared_error(pred: np.ndarray, truth: str) -> float | None:
    try:
        t = np.asarray([float(v) for v in str(truth).split(";")], np.float64)
    except ValueError:
        return None
    p = np.asarray(pred, np.float64).reshape(-1)
    if t.size != p.size:
        return None
    return float(np.mean((p - t) ** 2))


HEADS: dict[str, type[Head]] = {"class_scores": ClassHead, "gaussian_mean": GaussianHead,
                                "regression": ValuesHead, "embedding": ValuesHead,
                                "activations": ValuesHead, "token_logits": TokenHead}


def heads_for(signature: Signature) -> list[Head]:
    """One head per output (a variance rides with its mean); the first is the primary one.
    Raises ``ManifestError`` for an output kind without a head."""
    out = []
    for spec in signature.outputs:
        if spec.kind == "variance":
            continue
        cls = HEADS.get(spec.kind)
        if cls is None:
            raise ManifestError(f"output {spec.name!r}: kind {spec.kind!r} has no head in this "
                                f"runtime (it serves {', '.join(HEADS)})")
        out.append(cls(spec, signature))
    if not out:
        raise ManifestError("the signature has no output a head can serve")
    return out
