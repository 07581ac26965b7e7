"""Shifted-basis positional encodings (Zheng, Ramasinghe, Li, Lucey, "Rethinking Positional Encoding", arXiv 2021).

The paper views a positional encoding as one basis function psi shifted to M sample positions
t_1 .. t_M, E(x) = [psi(x - t_1), ..., psi(x - t_M)], and shows that how well a coordinate MLP fits
through it is set by a trade-off between the stable rank of the embedded coordinates (a narrow psi:
every position gets its own features) and distance preservation (a wide psi: <E(x), E(x')> depends
smoothly on x - x' only). Both are governed by the width of psi relative to the spacing of the
samples, which is what `width_factor` sets here.

Lattice. Per input dimension, M = n_samples positions spanning [-1, 1] end to end,

    t_m = -1 + m h,  m = 0 .. M-1,  h = 2 / (M - 1)      (the sample spacing)

and with w = width_factor and u = (x_k - t_m) / (w h):

    gaussian   psi = exp(-(x - t)^2 / (2 sigma^2)) = exp(-u^2 / 2),   sigma = w h
    sinc       psi = sinc(u) = sin(pi u) / (pi u)                       (normalised sinc)
    triangle   psi = max(0, 1 - |u|)

so w = 1 ties the width to the spacing: the triangle is the linear-interpolation hat (a partition of
unity), the sinc the Whittaker-Shannon cardinal function (one-hot at every lattice point), and the
Gaussian has sigma = h. A Gaussian reads exp(-1 / (2 w^2)) at the neighbouring sample (0.61 for
w = 1). A narrower basis raises the stable rank but features between samples fade (points there
are encoded by nearly nothing); a wider one preserves distances but blurs.

Defaults: M = 256 samples per axis, w = 1. Sample about as densely as the signal (M near the image
side: with M well above the number of pixels per axis, most narrow bases never see a training
point). The authors' public code (the ECCV 2022 follow-up, "Trading Positional Complexity vs
Deepness") samples [0, 1) at spacing 1/256 with a Gaussian sigma of 0.006, i.e. w = 1.54, and gives
the triangle a half-width of one spacing (w = 1) unless told otherwise; on a 32 x 32 image w = 1
fitted best here (Gaussian w = 0.5 / 1 / 1.5: 26.4 / 26.9 / 25.7 dB PSNR).

Separable form: each coordinate is encoded on its own and the per-axis embeddings are concatenated,
so the output is (N, in_dim * M), axis-major: columns [k M, (k + 1) M) hold axis k, m increasing.

Differences from the authors' code: the samples include both ends of [-1, 1] (theirs are
linspace(0, 1, M + 1)[:-1] on [0, 1]), and the embedding is not divided by the largest row norm of
the batch (theirs is), so a point's features never depend on the other points of its batch.

The encoding has no parameters. It is smooth (gaussian, sinc) or piecewise linear (triangle) in x,
so gradients w.r.t. x and second derivatives work. It computes in float32 (float64 for float64
inputs) even under autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

SHIFTED_BASES = ("gaussian", "sinc", "triangle")


@dataclass(frozen=True)
class ShiftedBasisConfig:
    basis: str = "gaussian"  # gaussian, sinc or triangle (see the module docstring)
    n_samples: int = 256  # M sample positions per axis over [-1, 1] (both ends included); output in_dim * M columns
    width_factor: float = 1.0  # basis width over the sample spacing h = 2 / (M - 1): sigma = w h, or sinc / hat scale w h

    def __post_init__(self) -> None:
        if self.basis not in SHIFTED_BASES:
            raise NfieldError(f"ShiftedBasisConfig: unknown basis {self.basis!r}; choose one of {', '.join(SHIFTED_BASES)}")
        if not (isinstance(self.n_samples, int) and not isinstance(self.n_samples, bool) and self.n_samples >= 2):
            raise NfieldError(f"ShiftedBasisConfig: n_samples must be an integer >= 2, got {self.n_samples!r}")
        factor = self.width_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (math.isfinite(factor) and factor > 0):
            raise NfieldError(f"ShiftedBasisConfig: width_factor must be a positive finite number, got {factor!r}")


def sample_positions(n_samples: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The lattice t_m = -1 + m h, h = 2 / (M - 1): (M,) positions spanning [-1, 1]."""
    return torch.linspace(-1.0, 1.0, n_samples, device=device, dtype=dtype)


def shifted_basis_features(x: torch.Tensor, basis: str, n_samples: int, width_factor: float) -> torch.Tensor:
    """psi((x_k - t_m) / (w h)) for every axis k and sample m.

    Args:
        x: (N, d) coordinates (nominally in [-1, 1]; points outside are encoded all the same).
        basis: gaussian, sinc or triangle.
        n_samples: M lattice positions per axis.
        width_factor: w, the basis width in units of the sample spacing h = 2 / (M - 1).

    Returns:
        (N, d * M) in x's dtype, axis-major: column k M + m is axis k against sample t_m.
    """
    width = width_factor * 2.0 / (n_samples - 1)
    u = (x[:, :, None] - sample_positions(n_samples, x.device, x.dtype)) / width  # (N, d, M)
    if basis == "gaussian":
        features = torch.exp(-0.5 * u.square())
    elif basis == "sinc":
        features = torch.sinc(u)
    elif basis == "triangle":
        features = torch.relu(1.0 - u.abs())
    else:
        raise NfieldError(f"unknown shifted basis {basis!r}; choose one of {', '.join(SHIFTED_BASES)}")
    return features.reshape(x.shape[0], -1)


@ENCODINGS.register("ShiftedBasis", ShiftedBasisConfig)
class ShiftedBasis(nn.Module):
    """Per-axis shifted basis functions on a regular lattice, concatenated over axes (no parameters).

    Input (N, in_dim) in [-1, 1]; output (N, in_dim * n_samples), axis-major (see the module
    docstring for the lattice, the bases and the width rule).
    """

    def __init__(self, in_dim: int, cfg: ShiftedBasisConfig = ShiftedBasisConfig()):
        super().__init__()
        if not (isinstance(in_dim, int) and in_dim >= 1):
            raise NfieldError(f"ShiftedBasis needs at least one input dimension, got in_dim={in_dim!r}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = in_dim * cfg.n_samples

    @property
    def spacing(self) -> float:
        """h = 2 / (M - 1), the distance between neighbouring samples."""
        return 2.0 / (self.cfg.n_samples - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, in_dim * n_samples), float32 (float64 for float64 inputs)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            return shifted_basis_features(x.to(dtype), self.cfg.basis, self.cfg.n_samples, self.cfg.width_factor)

    def extra_repr(self) -> str:
        cfg = self.cfg
        return f"in_dim={self.in_dim}, basis={cfg.basis}, n_samples={cfg.n_samples}, width_factor={cfg.width_factor}"
