"""Meta predictive learning: a spike-and-slab RNN (Li, Qiu & Huang, Phys. Rev. E 2024,
arXiv 2309.04106; authors' code ``Qjbtiger/Meta-predictive-coding``).

Every weight is a distribution, ``w = 0`` with probability ``pi``, else Gaussian; only its
``(m, pi, xi)`` are trained. With the scaling of the authors' NumPy code (the toy language and
MNIST models), for a layer of ``n_in`` inputs:

    mean      mu  = m / n_in
    variance  var = rho - mu^2 = m^2 pi / (n_in^2 (1 - pi)) + xi / n_in       (never negative)

and the network only ever uses those two moments: a mean-field pass propagates the mean and
variance of each pre-activation (the central limit over the inputs),

    a_t  = mu_rec f(h_{t-1}) + mu_in x_t,    s_t = var_rec f(h_{t-1})^2 + var_in x_t^2
    h_t  = a_t + eps_t sqrt(s_t)                                   (f = ReLU, h_{-1} = 0)
    z_t  = mu_out f(h_t) + eps'_t sqrt(var_out f(h_t)^2)           (the logits)

The noise ``(eps, eps')`` is an explicit input of the step (``noise``, ``[hidden + outputs]``),
so a stream is reproducible and zero noise is the deterministic mean network; the step also
returns the logits' predictive variance ``var_out f(h_t)^2`` beside them. Training (predictive
coding, or BPTT for the baseline) is in ``wavedge.models.paper_mpl``.
"""

from __future__ import annotations

import torch
from torch import nn

from wavedge.models.base import StepModel
from wavedge.signature import InputSpec, OutputSpec, Signature, StateSpec

EPS = 1e-10  # inside the square roots: the authors' PTB code adds the same


class SpikeSlab(nn.Module):
    """One layer's weight distributions ``[out, in]``: trained ``m``, ``pi``, ``xi``."""

    def __init__(self, n_out: int, n_in: int, m: torch.Tensor, pi_high: float) -> None:
        super().__init__()
        self.n_in = n_in
        self.m = nn.Parameter(m.clone())
        self.pi = nn.Parameter(torch.rand(n_out, n_in) * pi_high)  # the authors' U(0, 0.5)
        self.xi = nn.Parameter(0.1 * torch.rand(n_out, n_in))

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n_in
        mu = self.m / n
        var = self.m ** 2 * self.pi / (n * n * (1 - self.pi)) + self.xi / n
        return mu, var

    def clamp_(self) -> None:
        """The constraints, after every update (as the authors: pi in [0, 0.99], xi >= 0)."""
        with torch.no_grad():
            self.pi.clamp_(0.0, 0.99)
            self.xi.clamp_(min=0.0)


class MetaPredictive(StepModel):
    """The spike-and-slab RNN: ``vocab`` > 0 takes tokens (int64 ``[1]``, one-hot in the graph), else
    ``input_size`` floats; ``output_size`` logits (with their variance) at every step."""

    arch = "mpl"

    def __init__(self, input_size: int = 0, output_size: int = 26, hidden_size: int = 100,
                 vocab: int = 0, pi_init: float = 0.5) -> None:
        super().__init__(vocab or input_size, output_size)
        self.hidden_size, self.vocab, self.pi_init = hidden_size, vocab, pi_init
        d, n, o = self.input_size, hidden_size, output_size
        # the authors' toy-model init: mu_in, mu_out ~ N(0, d/n), mu_rec = identity
        scale = (d / n) ** 0.5
        self.w_in = SpikeSlab(n, d, torch.randn(n, d) * scale * d, pi_init)
        self.w_rec = SpikeSlab(n, n, torch.eye(n) * n, pi_init)
        self.w_out = SpikeSlab(o, n, torch.randn(o, n) * scale * n, pi_init)

    @property
    def layers(self) -> dict[str, SpikeSlab]:
        return {"input": self.w_in, "recurrent": self.w_rec, "readout": self.w_out}

    @property
    def config(self) -> dict:
        return {"input_size": 0 if self.vocab else self.input_size,
                "output_size": self.output_size, "hidden_size": self.hidden_size,
                "vocab": self.vocab, "pi_init": self.pi_init}

    @property
    def signature(self) -> Signature:
        n, o = self.hidden_size, self.output_size
        x = (InputSpec("x", (1,), "int64", "token", range=(0, self.vocab)) if self.vocab
             else InputSpec("x", (self.input_size,)))
        sig = Signature(
            (x, InputSpec("noise", (n + o,), role="other")),
            (OutputSpec("y", (o,), "class_scores", variance="y_var"),
             OutputSpec("y_var", (o,), "variance")),
            (StateSpec("h", (n,)),))
        return sig.with_annotations(**self.annotations)

    def clamp_(self) -> None:
        for layer in self.layers.values():
            layer.clamp_()

    def drive(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input's contribution to the pre-activation's mean and variance."""
        mu, var = self.w_in.moments()
        if self.vocab:  # one-hot: the token's column (x^2 = x); tokens [..., 1]
            tok = x_t[..., 0]
            return mu.t()[tok], var.t()[tok]
        return x_t @ mu.t(), (x_t * x_t) @ var.t()

    def predict(self, h_prev: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor):
        """``(mean, variance)`` of the pre-activation ``h_t`` from ``h_{t-1}`` and ``x_t``,
        and ``h_t`` itself with the noise ``eps`` ``[B, hidden]``."""
        mu, var = self.w_rec.moments()
        r = torch.relu(h_prev)
        m_in, v_in = self.drive(x_t)
        mean = r @ mu.t() + m_in
        variance = (r * r) @ var.t() + v_in
        return mean, variance, mean + eps * torch.sqrt(variance + EPS)

    def readout(self, h: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (with the noise ``eps`` ``[B, outputs]``) and their variance."""
        mu, var = self.w_out.moments()
        r = torch.relu(h)
        variance = (r * r) @ var.t()
        return r @ mu.t() + eps * torch.sqrt(variance + EPS), variance

    def step(self, x_t: torch.Tensor, noise: torch.Tensor, h: torch.Tensor):
        n = self.hidden_size
        _, _, h = self.predict(h, x_t, noise[:, :n])
        y, y_var = self.readout(h, noise[:, n:])
        return y, y_var, h
