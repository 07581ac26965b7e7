"""Real spherical harmonics of view directions, the direction encoding of instant-ngp.

Basis. For degree d the output holds the real spherical harmonics Y_lm of bands l = 0 .. d - 1,
l-major with m from -l to l (column l^2 + l + m), d^2 columns in all. With the associated Legendre
functions P_l^m including the Condon-Shortley phase (-1)^m and
K_lm = sqrt((2l + 1) / (4 pi) * (l - m)! / (l + m)!), a unit direction with polar angle theta
(z = cos theta) and azimuth phi (x + iy = sin theta e^{i phi}) has

    Y_l0 = K_l0 P_l^0(z)
    Y_lm = sqrt(2) K_lm P_l^m(z) cos(m phi)        m > 0
    Y_lm = sqrt(2) K_l|m| P_l^|m|(z) sin(|m| phi)   m < 0

an orthonormal basis of functions on the unit sphere. These are the signs and the order of
tiny-cuda-nn's ``SphericalHarmonics`` encoding: Y_00 = 0.2820948, (Y_1-1, Y_10, Y_11) =
0.4886025 * (-y, z, -x), Y_2-2 = 1.0925484 xy, ...

Evaluation is polynomial in (x, y, z), without trigonometry: sin^m(theta) e^{i m phi} = (x + iy)^m,
and P_l^m(z) / sin^m(theta) follows the standard three-term recurrence in l. Inputs are taken to
be unit vectors and are not normalised (as in tiny-cuda-nn); for other vectors the result is that
polynomial, not the harmonics of the direction.

Example::

    >>> import torch
    >>> enc = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=4))
    >>> enc(torch.tensor([[0.0, 0.0, 1.0]])).shape
    torch.Size([1, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

MAX_DEGREE = 8  # tiny-cuda-nn's limit: 64 output columns


def check_sh_degree(owner: str, key: str, value: object) -> None:
    """Raise `NfieldError` unless ``owner.key = value`` is an int degree in [1, MAX_DEGREE]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEGREE:
        raise NfieldError(f"{owner}.{key} must be an integer in [1, {MAX_DEGREE}] (d^2 output columns), got {value!r}")


def spherical_harmonics(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics of bands 0 .. degree - 1 (see the module docstring for the basis).

    Args:
        directions: (N, 3) unit vectors (x, y, z).
        degree: number of bands d >= 1.

    Returns:
        (N, d^2) values in the dtype of `directions`, column l^2 + l + m holding Y_lm.
    """
    x, y, z = directions.unbind(-1)
    # Re and Im of (x + iy)^m = sin^m(theta) (cos(m phi) + i sin(m phi)), m = 0 .. d - 1.
    cos_terms, sin_terms = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(1, degree):
        c, s = cos_terms[-1], sin_terms[-1]
        cos_terms.append(x * c - y * s)
        sin_terms.append(x * s + y * c)
    # legendre[l, m] = P_l^m(z) / sin^m(theta), a polynomial in z.
    legendre: dict[tuple[int, int], torch.Tensor] = {}
    for m in range(degree):
        double_factorial = math.prod(range(2 * m - 1, 0, -2))
        legendre[m, m] = torch.full_like(z, (-1) ** m * double_factorial)
        if m + 1 < degree:
            legendre[m + 1, m] = (2 * m + 1) * z * legendre[m, m]
        for l in range(m + 2, degree):
            legendre[l, m] = ((2 * l - 1) * z * legendre[l - 1, m] - (l + m - 1) * legendre[l - 2, m]) / (l - m)
    columns = []
    for l in range(degree):
        for m in range(-l, l + 1):
            a = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - a) / math.factorial(l + a))
            if m == 0:
                columns.append(norm * legendre[l, 0])
            else:
                azimuthal = cos_terms[a] if m > 0 else sin_terms[a]
                columns.append(math.sqrt(2.0) * norm * legendre[l, a] * azimuthal)
    return torch.stack(columns, dim=-1)


@dataclass(frozen=True)
class SphericalHarmonicsConfig:
    degree: int = 4  # bands l = 0 .. degree - 1, degree^2 output columns; 1 .. 8

    def __post_init__(self) -> None:
        check_sh_degree("SphericalHarmonicsConfig", "degree", self.degree)

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's ``SphericalHarmonics`` encoding JSON (the same basis, signs and column order)."""
        return {"otype": "SphericalHarmonics", "degree": self.degree}


@ENCODINGS.register("SphericalHarmonics", SphericalHarmonicsConfig)
class SphericalHarmonics(nn.Module):
    """Real spherical harmonics basis of a direction (tiny-cuda-nn's ``SphericalHarmonics``).

    Input (N, 3) unit direction vectors (their components lie in [-1, 1]; tiny-cuda-nn takes
    (d + 1) / 2 instead); output (N, degree^2), l-major with m from -l to l.
    """

    def __init__(self, in_dim: int, cfg: SphericalHarmonicsConfig = SphericalHarmonicsConfig()):
        super().__init__()
        if in_dim != 3:
            raise NfieldError(f"SphericalHarmonics encodes 3-D unit directions, got in_dim={in_dim}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = cfg.degree**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(x, self.cfg.degree)

    def extra_repr(self) -> str:
        return f"degree={self.cfg.degree}, out_dim={self.out_dim}"
