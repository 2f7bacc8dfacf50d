"""The step contract, for every model: T calls of ``step`` equal ``forward`` over T samples."""

from __future__ import annotations

import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch

from wavedge.models import ARCHITECTURES, WaveRNN, build_model
from wavedge.models.wave_rnn import ring_pad

CONFIGS = {
    "wave_rnn": [{"channels": 4, "ring_size": 16}, {"channels": 3, "ring_size": 10, "mlp_hidden": 8},
                 {"channels": 2, "ring_size": 8, "shift_init": False, "solo_init": False}],
    "irnn": [{"hidden_size": 32}, {"hidden_size": 16, "mlp_hidden": 8}],
    "gru": [{"hidden_size": 32}, {"hidden_size": 16, "mlp_hidden": 8}],
    # a window shorter than the 200 samples, so the caches wrap many times
    "residual_attention": [{"d_model": 16, "heads": 2, "layers": 2, "window": 7},
                           {"d_model": 12, "heads": 3, "layers": 3, "window": 64,
                            "value_residual": False}],
}


# the spike-and-slab RNN takes two inputs (tokens and noise), TEM-t two integer ids
# (observation and action): their contracts are in test_mpl.py and test_tem.py
TWO_INPUTS = {"mpl", "tem_t"}


def test_every_architecture_is_covered():
    assert set(CONFIGS) | TWO_INPUTS == set(ARCHITECTURES)


def _perturbed(arch: str, config: dict, d: int = 3, o: int = 5):
    torch.manual_seed(1)
    model = build_model(arch, input_size=d, output_size=o, **config)
    with torch.no_grad():  # move off the structured init so every weight matters
        for name, p in model.named_parameters():
            p.add_(0.02 * torch.randn_like(p))
            if name in ("ring.weight", "recurrent.weight"):
                p.mul_(0.8)  # keep the ReLU recurrence's gain below 1 so 200 steps stay finite
    return model.eval()


@pytest.mark.parametrize("arch,config", [(a, c) for a, cs in CONFIGS.items() for c in cs])
def test_step_equals_forward(arch, config):
    model = _perturbed(arch, config)
    x = torch.randn(2, 200, 3)
    with torch.no_grad():
        y_seq = model(x)
        state = model.init_state(2)
        ys = []
        for t in range(x.shape[1]):
            y, *state = model.step(x[:, t], *state)
            ys.append(y)
    y_step = torch.stack(ys, dim=1)
    assert y_seq.shape == (2, 200, 5)
    torch.testing.assert_close(y_step, y_seq, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,config", [(a, c[0]) for a, c in CONFIGS.items()])
def test_sequence_carries_state_across_calls(arch, config):
    """Two halves with the state handed over equal one whole sequence (what a stream does)."""
    model = _perturbed(arch, config)
    x = torch.randn(1, 120, 3)
    with torch.no_grad():
        y_all, *s_all = model.sequence(x, *model.init_state(1))
        y_a, *s = model.sequence(x[:, :50], *model.init_state(1))
        y_b, *s = model.sequence(x[:, 50:], *s)
    torch.testing.assert_close(torch.cat([y_a, y_b], dim=1), y_all, atol=1e-5, rtol=1e-5)
    for a, b in zip(s, s_all):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,config", [(a, c[0]) for a, c in CONFIGS.items()])
def test_state_spec_matches_init_state(arch, config):
    model = build_model(arch, input_size=3, output_size=5, **config)
    state = model.init_state(4)
    assert len(state) == len(model.state_spec)
    for spec, tensor in zip(model.state_spec, state):
        assert tuple(tensor.shape) == (4, *spec.shape)
        assert torch.all(tensor == spec.reset_value)
    rebuilt = build_model(arch, **model.config)
    assert rebuilt.config == model.config


def test_ring_pad_wraps_both_ends():
    h = torch.arange(5.0).view(1, 1, 5)
    assert ring_pad(h).flatten().tolist() == [4.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0]


def test_shift_init_moves_the_wave_one_neuron_per_step_to_lower_indices():
    model = WaveRNN(input_size=1, output_size=2, channels=2, ring_size=8).eval()
    h = torch.zeros(1, 2, 8)
    h[0, :, 5] = 1.0
    with torch.no_grad():
        for expected in (4, 3, 2, 1, 0, 7):  # wraps from 0 to n - 1
            _, h = model.step(torch.zeros(1, 1), h)
            assert h[0, 0].argmax().item() == expected and h[0, 0].sum().item() == 1.0
            assert torch.equal(h[0, 0], h[0, 1])


def test_solo_init_feeds_every_input_into_neuron_zero_only():
    model = WaveRNN(input_size=3, output_size=2, channels=4, ring_size=8).eval()
    with torch.no_grad():
        _, h = model.step(torch.tensor([[0.5, 1.0, 0.25]]), *model.init_state(1))
    assert torch.allclose(h[0, :, 0], torch.full((4,), 1.75))
    assert torch.all(h[0, :, 1:] == 0)
    # after the input stops, the bump travels: the ring remembers when the sample arrived
    with torch.no_grad():
        for _ in range(3):
            _, h = model.step(torch.zeros(1, 3), h)
    assert h[0, 0].argmax().item() == 8 - 3


def test_unknown_architecture_is_a_clear_error():
    from wavedge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="unknown architecture 'lstm'"):
        build_model("lstm", input_size=1, output_size=1)
