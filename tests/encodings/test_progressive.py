"""Coarse-to-fine frequency encoding against Frequency and hand-computed band windows."""

import math

import numpy as np
import pytest
import torch

from nfield.encodings import (
    ENCODINGS,
    Frequency,
    FrequencyConfig,
    ProgressiveFrequency,
    ProgressiveFrequencyConfig,
)
from nfield.errors import NfieldError


def points(n: int = 17, d: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, d, dtype=torch.float64) * 2 - 1


def test_untrained_and_fully_open_equal_frequency():
    x = points()
    cfg = ProgressiveFrequencyConfig(n_frequencies=5, start_fraction=0.1, end_fraction=0.6)
    enc = ProgressiveFrequency(2, cfg)
    plain = Frequency(2, FrequencyConfig(n_frequencies=5))
    assert enc.out_dim == plain.out_dim
    assert enc.alpha.dtype == torch.float32 and enc.alpha.shape == () and enc.alpha.item() == 5.0
    assert torch.equal(enc(x), plain(x))
    for step in (60, 61, 99):
        enc.update(step, 100)
        assert enc.alpha.item() == 5.0
        assert torch.equal(enc(x), plain(x))


def test_mid_schedule_matches_hand_computed_window():
    # start 10, end 50 of 100 steps; step 33 -> alpha = 4 * 23 / 40 = 2.3.
    x = points()
    cfg = ProgressiveFrequencyConfig(n_frequencies=4, include_pi=False, start_fraction=0.1, end_fraction=0.5)
    enc = ProgressiveFrequency(2, cfg)
    enc.update(33, 100)
    assert abs(enc.alpha.item() - 2.3) < 1e-6
    weights = [1.0, 1.0, (1 - math.cos(math.pi * 0.3)) / 2, 0.0]
    xn = x.numpy()
    expected = [xn]
    for k, w in enumerate(weights):
        expected += [w * np.sin(2.0**k * xn), w * np.cos(2.0**k * xn)]
    np.testing.assert_allclose(enc(x).numpy(), np.concatenate(expected, axis=1), atol=1e-6)


def test_band_is_exactly_zero_before_its_time():
    x = points()
    cfg = ProgressiveFrequencyConfig(n_frequencies=6, include_input=False, start_fraction=0.0, end_fraction=0.6)
    enc = ProgressiveFrequency(2, cfg)
    total = 60  # alpha = step / 6
    for k in range(6):
        enc.update(6 * k, total)  # alpha == k: band k still off
        bands = enc(x).view(len(x), 6, 4)
        assert torch.all(bands[:, k:] == 0.0)
        if k > 0:
            assert torch.all(bands[:, k - 1].abs().sum(dim=1) > 0)
        enc.update(6 * k + 1, total)  # alpha just above k: band k fades in
        assert torch.any(enc(x).view(len(x), 6, 4)[:, k] != 0.0)


def test_before_start_only_the_input_remains():
    x = points()
    enc = ProgressiveFrequency(2, ProgressiveFrequencyConfig(n_frequencies=3, start_fraction=0.2, end_fraction=0.4))
    for step in (0, 10, 20):
        enc.update(step, 100)
        assert enc.alpha.item() == 0.0
        out = enc(x)
        assert torch.equal(out[:, :2], x) and torch.all(out[:, 2:] == 0.0)


def test_update_is_a_pure_function_of_step():
    enc = ProgressiveFrequency(3, ProgressiveFrequencyConfig(n_frequencies=8, start_fraction=0.25, end_fraction=0.75))
    reference = ProgressiveFrequency(3, ProgressiveFrequencyConfig(n_frequencies=8, start_fraction=0.25, end_fraction=0.75))
    x = points(d=3)
    for step in (400, 400, 123, 999, 0, 600, 600):
        enc.update(step, 1000)
        reference.update(step, 1000)
        reference.update(step, 1000)
        expected = 8 * min(max((step - 250) / 500, 0.0), 1.0)
        assert abs(enc.alpha.item() - expected) < 1e-6
        assert torch.equal(enc(x), reference(x))


def test_state_dict_round_trip():
    x = points()
    enc = ProgressiveFrequency(2, ProgressiveFrequencyConfig(n_frequencies=4))
    enc.update(17, 100)
    state = enc.state_dict()
    assert list(state) == ["alpha"]
    fresh = ProgressiveFrequency(2, ProgressiveFrequencyConfig(n_frequencies=4))
    assert not torch.equal(fresh(x), enc(x))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), enc(x))


@pytest.mark.parametrize("start, end", [(0.5, 0.5), (0.6, 0.5), (-0.1, 0.5), (0.0, 1.5)])
def test_invalid_schedule_raises(start, end):
    with pytest.raises(NfieldError, match="start_fraction"):
        ProgressiveFrequency(2, ProgressiveFrequencyConfig(start_fraction=start, end_fraction=end))


def test_invalid_frequencies_and_total_raise():
    with pytest.raises(NfieldError, match="n_frequencies"):
        ProgressiveFrequency(2, ProgressiveFrequencyConfig(n_frequencies=0))
    with pytest.raises(NfieldError, match="total"):
        ProgressiveFrequency(2).update(0, 0)


def test_registry_builds_progressive():
    cfg = ENCODINGS.from_dict({"otype": "ProgressiveFrequency", "n_frequencies": 6, "end_fraction": 0.8})
    enc = ENCODINGS.build(cfg, 3)
    assert isinstance(enc, ProgressiveFrequency) and enc.out_dim == 3 * 13
    assert ENCODINGS.to_dict(cfg)["end_fraction"] == 0.8
