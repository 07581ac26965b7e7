"""Spherical harmonics: tiny-cuda-nn's constants, exact quadrature on the sphere, scipy's complex harmonics."""

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from nfield.encodings import ENCODINGS, SphericalHarmonics, SphericalHarmonicsConfig, spherical_harmonics
from nfield.errors import NfieldError


def _random_directions(n: int, seed: int = 0) -> torch.Tensor:
    d = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(d, dim=-1)


def _sphere_quadrature(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in z times a uniform grid in phi: exact for polynomials of degree < n on the sphere."""
    z, wz = np.polynomial.legendre.leggauss(n)
    phi = np.arange(2 * n) * (2 * np.pi / (2 * n))
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz**2)
    points = np.stack([r * np.cos(pp), r * np.sin(pp), zz], axis=-1).reshape(-1, 3)
    weights = (wz[:, None] * np.full(2 * n, 2 * np.pi / (2 * n))[None, :]).reshape(-1)
    return torch.from_numpy(points), torch.from_numpy(weights)


def test_known_values_match_tiny_cuda_nn_constants():
    d = _random_directions(50)
    x, y, z = d.unbind(-1)
    out = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=3))(d)
    assert out.shape == (50, 9)
    expected = torch.stack(
        [
            torch.full_like(x, 0.28209479177387814),
            -0.48860251190291987 * y,
            0.48860251190291987 * z,
            -0.48860251190291987 * x,
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * z**2 - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (x**2 - y**2),
        ],
        dim=-1,
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("degree", [1, 4, 8])
def test_orthonormal_under_exact_quadrature(degree):
    points, weights = _sphere_quadrature(2 * degree)  # Y_i Y_j has degree <= 2 (degree - 1)
    assert math.isclose(weights.sum().item(), 4 * math.pi, rel_tol=1e-12)
    y = spherical_harmonics(points, degree)
    gram = y.T @ (weights[:, None] * y)
    torch.testing.assert_close(gram, torch.eye(degree**2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_matches_scipy_complex_harmonics():
    # Real basis from the complex one (both with the Condon-Shortley phase):
    # Y_l0 = Y_l^0, Y_lm = sqrt(2) Re Y_l^m (m > 0), Y_lm = sqrt(2) Im Y_l^|m| (m < 0).
    d = _random_directions(200, seed=1)
    theta = np.arccos(d[:, 2].numpy())
    phi = np.arctan2(d[:, 1].numpy(), d[:, 0].numpy())
    columns = []
    for l in range(8):
        for m in range(-l, l + 1):
            complex_y = sph_harm_y(l, abs(m), theta, phi)
            if m == 0:
                columns.append(complex_y.real)
            else:
                columns.append(math.sqrt(2) * (complex_y.real if m > 0 else complex_y.imag))
    expected = np.stack(columns, axis=-1)
    np.testing.assert_allclose(spherical_harmonics(d, 8).numpy(), expected, rtol=0, atol=1e-10)


def test_addition_theorem_and_float32():
    # sum_m Y_lm(d)^2 = (2l + 1) / (4 pi) for every unit d, whatever the signs and order within a band.
    d = _random_directions(100, seed=2).float()
    out = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=6))(d)
    assert out.dtype == torch.float32
    for l in range(6):
        band = out[:, l * l : (l + 1) ** 2].pow(2).sum(-1)
        torch.testing.assert_close(band, torch.full_like(band, (2 * l + 1) / (4 * math.pi)), rtol=1e-5, atol=1e-6)


def test_registry_round_trip_and_errors():
    data = ENCODINGS.to_dict(SphericalHarmonicsConfig(degree=5))
    assert data == {"otype": "SphericalHarmonics", "degree": 5}
    enc = ENCODINGS.build(ENCODINGS.from_dict(data), 3)
    assert isinstance(enc, SphericalHarmonics) and enc.out_dim == 25
    for bad in (0, 9, 2.0, True):
        with pytest.raises(NfieldError, match="degree must be an integer in"):
            SphericalHarmonicsConfig(degree=bad)
    with pytest.raises(NfieldError, match="3-D unit directions"):
        SphericalHarmonics(2)
