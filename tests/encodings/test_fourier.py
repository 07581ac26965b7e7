"""Random Fourier features: closed forms on a known B, B's distribution, gradients and checkpoints."""

import math

import numpy as np
import pytest
import torch

from nfield.encodings import (
    ENCODINGS,
    GaussianFourier,
    GaussianFourierConfig,
    LearnableFourier,
    LearnableFourierConfig,
)
from nfield.errors import NfieldError

CLASSES = [(GaussianFourier, GaussianFourierConfig), (LearnableFourier, LearnableFourierConfig)]


@pytest.mark.parametrize("cls, config", CLASSES)
def test_matches_closed_form_on_known_B(cls, config):
    enc = cls(2, config(n_features=3)).double()
    B = np.array([[1.0, 0.0], [0.5, -2.0], [0.25, 3.0]])
    with torch.no_grad():
        enc.B.copy_(torch.from_numpy(B))
    x = np.array([[0.0, 0.0], [0.5, -0.25], [-1.0, 1.0], [0.3, 0.7]])
    out = enc(torch.from_numpy(x)).detach().numpy()
    angles = 2 * math.pi * x @ B.T
    np.testing.assert_allclose(out, np.concatenate([np.cos(angles), np.sin(angles)], axis=1), atol=1e-12)
    assert enc.out_dim == 6
    # Hand-checked entries: x = (0.5, -0.25) against row 1 gives 2 pi (0.25 + 0.5) = 1.5 pi.
    assert abs(out[1, 1] - 0.0) < 1e-12 and abs(out[1, 4] - (-1.0)) < 1e-12


def test_features_are_cos_and_sin_of_the_same_angles():
    torch.manual_seed(1)
    enc = GaussianFourier(3, GaussianFourierConfig(n_features=16, sigma=2.0)).double()
    x = torch.rand(20, 3, dtype=torch.float64) * 2 - 1
    out = enc(x)
    cos, sin = out[:, :16], out[:, 16:]
    np.testing.assert_allclose((cos**2 + sin**2).numpy(), 1.0, atol=1e-12)
    angles = 2 * math.pi * (x @ enc.B.T)
    wrapped = torch.atan2(sin, cos) - angles
    np.testing.assert_allclose(torch.remainder(wrapped + math.pi, 2 * math.pi).numpy() - math.pi, 0.0, atol=1e-9)


def test_sigma_convention_is_half_of_tancik_on_unit_coordinates():
    # Tancik et al. encode v = (x + 1) / 2 in [0, 1] with B' = 2 B: the same features up to a
    # constant phase 2 pi B 1 per feature, so their sigma is twice ours.
    torch.manual_seed(2)
    enc = GaussianFourier(2, GaussianFourierConfig(n_features=8, sigma=5.0)).double()
    x = torch.rand(30, 2, dtype=torch.float64) * 2 - 1
    ours = torch.atan2(enc(x)[:, 8:], enc(x)[:, :8])
    theirs = 2 * math.pi * ((x + 1) / 2) @ (2 * enc.B).T
    phase = torch.remainder(theirs - ours, 2 * math.pi)
    expected = torch.remainder(2 * math.pi * enc.B.sum(dim=1), 2 * math.pi)
    diff = torch.remainder(phase - expected + math.pi, 2 * math.pi) - math.pi
    np.testing.assert_allclose(diff.numpy(), 0.0, atol=1e-8)


@pytest.mark.parametrize("cls, config", CLASSES)
def test_B_is_gaussian_with_std_sigma(cls, config):
    torch.manual_seed(3)
    enc = cls(3, config(n_features=20000, sigma=5.0))
    B = enc.B.detach().double()
    assert B.shape == (20000, 3)
    # 60000 samples: the std estimate is within ~1% (3 sigma) and the mean within ~0.07.
    assert abs(B.std().item() - 5.0) < 0.1
    assert abs(B.mean().item()) < 0.1
    # Gaussian, not uniform: about 68.3% within one sigma.
    assert abs((B.abs() < 5.0).double().mean().item() - 0.6827) < 0.01


def test_same_seed_same_B_and_different_seed_different_B():
    torch.manual_seed(4)
    a = GaussianFourier(2, GaussianFourierConfig(n_features=5))
    torch.manual_seed(4)
    b = GaussianFourier(2, GaussianFourierConfig(n_features=5))
    c = GaussianFourier(2, GaussianFourierConfig(n_features=5))
    assert torch.equal(a.B, b.B) and not torch.equal(a.B, c.B)


def test_learnable_B_gets_gradients_fixed_B_does_not():
    torch.manual_seed(5)
    x = torch.rand(10, 2) * 2 - 1
    fixed = GaussianFourier(2, GaussianFourierConfig(n_features=4))
    learned = LearnableFourier(2, LearnableFourierConfig(n_features=4))
    assert list(fixed.parameters()) == [] and not fixed.B.requires_grad
    assert [p for p in learned.parameters()] == [learned.B]
    x.requires_grad_()
    fixed(x).sum().backward()
    learned(x).sum().backward()
    assert fixed.B.grad is None and x.grad is not None
    assert learned.B.grad is not None and learned.B.grad.abs().sum() > 0


def test_learnable_B_gradient_matches_finite_differences():
    torch.manual_seed(6)
    enc = LearnableFourier(2, LearnableFourierConfig(n_features=3, sigma=1.0)).double()
    x = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
    B = enc.B.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda B: torch.func.functional_call(enc, {"B": B}, (x,)), (B,))


@pytest.mark.parametrize("cls, config", CLASSES)
def test_state_dict_round_trip_reproduces_outputs(cls, config):
    torch.manual_seed(7)
    enc = cls(3, config(n_features=8))
    state = enc.state_dict()
    assert list(state) == ["B"]
    torch.manual_seed(8)
    fresh = cls(3, config(n_features=8))
    x = torch.rand(6, 3) * 2 - 1
    assert not torch.allclose(fresh(x), enc(x))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), enc(x))


def test_angles_are_float32_under_autocast():
    torch.manual_seed(9)
    enc = GaussianFourier(3, GaussianFourierConfig(n_features=64, sigma=20.0))
    x = torch.rand(50, 3) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = enc(x)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, enc(x))


def test_registry_and_validation():
    for otype, cls in [("GaussianFourier", GaussianFourier), ("LearnableFourier", LearnableFourier)]:
        cfg = ENCODINGS.from_dict({"otype": otype, "n_features": 7, "sigma": 2.0})
        enc = ENCODINGS.build(cfg, 3)
        assert type(enc) is cls and enc.out_dim == 14 and ENCODINGS.to_dict(cfg)["otype"] == otype
    with pytest.raises(NfieldError, match="n_features"):
        GaussianFourier(2, GaussianFourierConfig(n_features=0))
    with pytest.raises(NfieldError, match="sigma"):
        LearnableFourier(2, LearnableFourierConfig(sigma=0.0))
