"""Factorised feature planes: tri-planes (Chan et al., EG3D, CVPR 2022) and K-planes (Fridovich-Keil et al., CVPR 2023).

Instead of one dense d-dimensional feature grid, keep a learnable 2-D grid of F-vectors (a plane)
for every pair of input axes, C(d, 2) of them: 3 for (x, y, z) -- the tri-plane -- and 6 for
(x, y, z, t). A point x is projected onto each plane, the plane is sampled there by bilinear
interpolation, and the planes' features are combined, per scale s, by

    product   f_s(x) = prod_p  bilerp(P_{s,p}, x_{axes(p)})   (K-planes' Hadamard product, the default)
    sum       f_s(x) = sum_p   bilerp(P_{s,p}, x_{axes(p)})   (EG3D's tri-plane aggregation)

and the encoding is the concatenation over scales, [f_1(x), ..., f_S(x)] (K-planes samples 4 scales
and concatenates them). With the product a feature can vanish along any one axis, so planes
represent localised detail that a sum of planes cannot; the K-planes paper finds the product better.

Low dimensions. For 2-D input the only pair gives one plane, which is a dense grid (see `DenseGrid`).
The natural factorised analogue is to go down one order: one feature line per axis,

    lines     f_s(x) = prod_k  lerp(L_{s,k}, x_k)

so each feature channel is a rank-1 image u(x) v(y) (a CP decomposition, as in TensoRF-CP), and the
MLP after the encoding mixes the F * S rank-1 terms. ``factors`` chooses: "auto" takes lines
for in_dim <= 2 and planes for in_dim >= 3; "planes" forces planes (a multiresolution dense grid in
2-D); "lines" forces lines (a CP factorisation in 3-D). With lines, "sum" is additive separable,
u(x) + v(y), and is rarely what you want.

Geometry (``torch.nn.functional.grid_sample``, align_corners=True, padding_mode="border"). Scale s
has R_s = resolutions[s] vertices per axis; vertex a sits at x = -1 + 2 a / (R_s - 1), so the corner
vertices lie exactly on -1 and +1 and the vertex spacing is 2 / (R_s - 1); points outside [-1, 1]
read the border. The planes of scale s are one (P, F, R_s, R_s) parameter, P = C(d, 2): plane p
belongs to the axis pair (i, j), i < j, in `itertools.combinations` order ((0, 1), (0, 2), (1, 2)
for 3-D), and its entry [p, :, b, a] is the feature at x_i = -1 + 2 a / (R_s - 1),
x_j = -1 + 2 b / (R_s - 1) (axis i along the last dimension, as grid_sample reads (x, y)). Lines
are (d, F, 1, R_s) parameters: entry [k, :, 0, a] at x_k = -1 + 2 a / (R_s - 1).

Initialisation, from the K-planes code: every entry U(0.1, 0.5), so that products start away from
zero; for 4-D input with planes, the planes that involve the last axis (time) start at 1, so that
the product starts as the static (x, y, z) tri-plane product.

Parameters: sum_s C(d, k) * F * R_s^k, with k = 2 for planes and k = 1 for lines: the K-planes
default for 3-D (F = 32, R = 64, 128, 256, 512) holds 3 * 32 * (64^2 + 128^2 + 256^2 + 512^2)
= 33.4M values; 2-D lines with the same F and resolutions hold 2 * 32 * 960 = 61,440.
Output (N, S * F), scale-major: columns [s F, (s + 1) F) are scale s, in the order of `resolutions`.

Not included: K-planes' total-variation and time-smoothness regularisers on the planes.
Gradients w.r.t. the planes and x, and the second derivatives that eikonal losses need, come from
grid_sample's autograd. Under CUDA autocast grid_sample runs in float32.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

PLANE_COMBINES = ("product", "sum")
PLANE_FACTORS = ("auto", "planes", "lines")
INIT_RANGE = (0.1, 0.5)  # K-planes' uniform initialisation of every (spatial) plane
_MAX_VALUES = 2**31  # 8 GiB of float32: any larger set of planes is a configuration mistake


@dataclass(frozen=True)
class FeaturePlanesConfig:
    n_features: int = 32  # F features per plane (or line) per scale; the output has len(resolutions) * F columns
    resolutions: tuple[int, ...] = (64, 128, 256, 512)  # vertices per axis of each scale, coarse to fine (K-planes')
    combine: str = "product"  # product (K-planes, Hadamard) or sum (EG3D tri-plane) over the planes of a scale
    factors: str = "auto"  # auto (lines for in_dim <= 2, planes above), planes (every axis pair) or lines (every axis)

    def __post_init__(self) -> None:
        name = "FeaturePlanesConfig"
        if not (isinstance(self.n_features, int) and not isinstance(self.n_features, bool) and self.n_features >= 1):
            raise NfieldError(f"{name}: n_features must be a positive integer, got {self.n_features!r}")
        resolutions = self.resolutions
        if isinstance(resolutions, list):
            resolutions = tuple(resolutions)
            object.__setattr__(self, "resolutions", resolutions)
        valid = isinstance(resolutions, tuple) and len(resolutions) > 0
        if not (valid and all(isinstance(r, int) and not isinstance(r, bool) and r >= 2 for r in resolutions)):
            raise NfieldError(f"{name}: resolutions must be a non-empty tuple of integers >= 2, got {self.resolutions!r}")
        if self.combine not in PLANE_COMBINES:
            raise NfieldError(f"{name}: unknown combine {self.combine!r}; choose one of {', '.join(PLANE_COMBINES)}")
        if self.factors not in PLANE_FACTORS:
            raise NfieldError(f"{name}: unknown factors {self.factors!r}; choose one of {', '.join(PLANE_FACTORS)}")


def factor_dimension(in_dim: int, factors: str) -> int:
    """k: 2 for planes, 1 for lines (``auto``: lines for in_dim <= 2, planes above)."""
    if factors == "auto":
        return 1 if in_dim <= 2 else 2
    return 2 if factors == "planes" else 1


def plane_parameter_count(in_dim: int, cfg: FeaturePlanesConfig) -> int:
    """sum_s C(in_dim, k) * F * R_s^k, the number of learnable values."""
    k = factor_dimension(in_dim, cfg.factors)
    return math.comb(in_dim, k) * cfg.n_features * sum(r**k for r in cfg.resolutions)


@ENCODINGS.register("FeaturePlanes", FeaturePlanesConfig)
class FeaturePlanes(nn.Module):
    """Multiscale axis-aligned feature planes (or lines), bilinearly sampled and combined per scale.

    Input (N, in_dim) in [-1, 1]; output (N, len(resolutions) * n_features), scale-major.
    `planes[s]` is scale s's (P, F, R_s, R_s) planes or (P, F, 1, R_s) lines; `axes[p]` the input
    axes of factor p (see the module docstring for the layout and the combination rule).
    """

    axes_index: torch.Tensor

    def __init__(self, in_dim: int, cfg: FeaturePlanesConfig = FeaturePlanesConfig()):
        super().__init__()
        k = factor_dimension(in_dim, cfg.factors)
        if not (isinstance(in_dim, int) and in_dim >= k):
            what = "planes need at least 2 input dimensions" if k == 2 else "lines need at least 1 input dimension"
            raise NfieldError(f"FeaturePlanes: {what}, got in_dim={in_dim!r}")
        if plane_parameter_count(in_dim, cfg) > _MAX_VALUES:
            raise NfieldError(
                f"FeaturePlanes: {plane_parameter_count(in_dim, cfg):,} plane values for in_dim={in_dim}; "
                "lower n_features or resolutions"
            )
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = len(cfg.resolutions) * cfg.n_features
        self.factor_dim = k
        self.axes: tuple[tuple[int, ...], ...] = tuple(itertools.combinations(range(in_dim), k))
        self.register_buffer("axes_index", torch.tensor(self.axes, dtype=torch.long), persistent=False)
        self.planes = nn.ParameterList()
        for resolution in cfg.resolutions:
            shape = (len(self.axes), cfg.n_features) + ((resolution, resolution) if k == 2 else (1, resolution))
            table = torch.empty(shape).uniform_(*INIT_RANGE)
            if in_dim == 4 and k == 2:
                for p, axes in enumerate(self.axes):
                    if 3 in axes:
                        table[p] = 1.0  # K-planes' time planes start at 1
            self.planes.append(nn.Parameter(table))

    @property
    def n_parameters(self) -> int:
        """sum_s C(in_dim, k) * F * R_s^k (see `plane_parameter_count`)."""
        return plane_parameter_count(self.in_dim, self.cfg)

    def sample_grid(self, x: torch.Tensor) -> torch.Tensor:
        """grid_sample's (P, N, 1, 2) grid: factor p's (x_i, x_j), or (x_k, 0) for a line."""
        coords = x[:, self.axes_index]  # (N, P, k)
        if self.factor_dim == 1:
            coords = torch.cat([coords, torch.zeros_like(coords)], dim=-1)
        return coords.permute(1, 0, 2)[:, :, None, :].contiguous()

    def factor_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every scale's interpolated factor features before they are combined.

        Args:
            x: (N, in_dim) points in [-1, 1] (outside, the border is read).

        Returns:
            one (P, F, N) tensor per scale: factor p's bilinear (or linear) interpolation at x.
        """
        grid = self.sample_grid(x)
        features = []
        for table in self.planes:
            sampled = F.grid_sample(table, grid.to(table.dtype), mode="bilinear", padding_mode="border", align_corners=True)
            features.append(sampled[..., 0])
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, len(resolutions) * n_features)."""
        scales = []
        for sampled in self.factor_features(x):
            combined = sampled[0]
            for factor in sampled[1:]:
                combined = combined * factor if self.cfg.combine == "product" else combined + factor
            scales.append(combined.T)  # (N, F)
        return torch.cat(scales, dim=1)

    def extra_repr(self) -> str:
        kind = "planes" if self.factor_dim == 2 else "lines"
        cfg = self.cfg
        return (
            f"in_dim={self.in_dim}, {len(self.axes)} {kind} per scale, n_features={cfg.n_features}, "
            f"resolutions={cfg.resolutions}, combine={cfg.combine}, params={self.n_parameters:,}"
        )
