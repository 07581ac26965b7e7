"""Frequency encoding and band windows against closed forms computed in float64 numpy."""

import math

import numpy as np
import pytest
import torch

from nfield.encodings import ENCODINGS, Frequency, FrequencyConfig, band_window


def reference_frequency(x: np.ndarray, n_frequencies: int, include_input: bool, include_pi: bool) -> np.ndarray:
    columns = [x] if include_input else []
    for k in range(n_frequencies):
        f = (math.pi if include_pi else 1.0) * 2.0**k
        columns += [np.sin(f * x), np.cos(f * x)]
    return np.concatenate(columns, axis=1)


@pytest.mark.parametrize("include_input", [True, False])
@pytest.mark.parametrize("include_pi", [True, False])
def test_frequency_matches_closed_form(include_input, include_pi):
    torch.manual_seed(0)
    x = torch.rand(13, 3, dtype=torch.float64) * 2 - 1
    cfg = FrequencyConfig(n_frequencies=5, include_input=include_input, include_pi=include_pi)
    enc = Frequency(3, cfg)
    out = enc(x)
    assert out.shape == (13, enc.out_dim) == (13, 3 * (2 * 5 + include_input))
    np.testing.assert_allclose(out.numpy(), reference_frequency(x.numpy(), 5, include_input, include_pi), atol=1e-12)


def test_frequency_lowest_band_spans_domain_once():
    # With pi included, band 0 is sin(pi x): period 2, i.e. exactly one period over [-1, 1].
    x = torch.tensor([[-1.0], [-0.5], [0.0], [0.5], [1.0]], dtype=torch.float64)
    out = Frequency(1, FrequencyConfig(n_frequencies=1, include_input=False))(x)
    np.testing.assert_allclose(out[:, 0].numpy(), [0.0, -1.0, 0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[:, 1].numpy(), [-1.0, 0.0, 1.0, 0.0, -1.0], atol=1e-12)


def test_band_window_closed_form():
    alpha = torch.tensor([0.0, 0.25, 1.5, 2.7, 4.0, 9.0], dtype=torch.float64)
    w = band_window(alpha, 4)
    assert w.shape == (6, 4)
    expected = np.zeros((6, 4))
    for i, a in enumerate(alpha.tolist()):
        for k in range(4):
            t = min(max(a - k, 0.0), 1.0)
            expected[i, k] = (1 - math.cos(math.pi * t)) / 2
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-15)
    # Spot values: a band is off up to alpha = k, half on at k + 0.5, fully on from k + 1.
    assert w[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert w[2, 0] == 1.0 and w[2, 2] == 0.0 and abs(w[2, 1].item() - 0.5) < 1e-15
    assert w[4].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_frequency_registry_round_trip():
    cfg = FrequencyConfig(n_frequencies=3, include_input=False)
    data = ENCODINGS.to_dict(cfg)
    assert data == {"otype": "Frequency", "n_frequencies": 3, "include_input": False, "include_pi": True}
    enc = ENCODINGS.build(ENCODINGS.from_dict(data), 2)
    assert isinstance(enc, Frequency) and enc.out_dim == 12
