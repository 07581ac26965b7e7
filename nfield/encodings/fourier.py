"""Random Fourier features (Tancik et al. 2020), with a fixed or a learned frequency matrix.

x -> [cos(2 pi B x), sin(2 pi B x)] with B (n_features, in_dim) drawn from N(0, sigma^2) at
construction from torch's default RNG (the trainer seeds it). B lives in the state dict, so a
checkpoint reloads the exact features.

Scale convention: sigma is in cycles per unit of our [-1, 1] coordinates. Tancik et al. use [0, 1]
coordinates v = (x + 1) / 2, so their sigma is twice ours: the default sigma = 5 here is their
sigma = 10 (moving the origin only changes the phase of each feature).

Precision: the angles are computed in float32 (float64 for a float64 module) even under autocast;
they reach hundreds of radians, which float16 cannot resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError


@dataclass(frozen=True)
class GaussianFourierConfig:
    n_features: int = 256  # rows of B; the output has 2 * n_features columns
    sigma: float = 5.0  # std of B's entries, in cycles per unit of our [-1, 1] coordinates

    def __post_init__(self) -> None:
        name = type(self).__name__.removesuffix("Config")  # the module it configures, for messages
        if not (isinstance(self.n_features, int) and self.n_features > 0):
            raise NfieldError(f"{name}: n_features must be a positive integer, got {self.n_features!r}")
        if not self.sigma > 0:
            raise NfieldError(f"{name}: sigma must be positive, got {self.sigma!r}")


@dataclass(frozen=True)
class LearnableFourierConfig(GaussianFourierConfig):
    """Same keys as `GaussianFourierConfig`; B starts from the same distribution and is trained."""


class _FourierFeatures(nn.Module):
    """The shared implementation; `learnable` makes B a parameter instead of a buffer."""

    B: torch.Tensor

    def __init__(self, in_dim: int, cfg: GaussianFourierConfig, learnable: bool):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = 2 * cfg.n_features
        frequencies = cfg.sigma * torch.randn(cfg.n_features, in_dim)
        if learnable:
            self.B = nn.Parameter(frequencies)
        else:
            self.register_buffer("B", frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(self.B.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            angles = (2.0 * math.pi) * (x.to(dtype) @ self.B.to(dtype).T)  # (N, n_features)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_features={self.cfg.n_features}, sigma={self.cfg.sigma}"


@ENCODINGS.register("GaussianFourier", GaussianFourierConfig)
class GaussianFourier(_FourierFeatures):
    """Random Fourier features [cos(2 pi B x), sin(2 pi B x)] with a fixed B (a buffer).

    Input (N, in_dim) in [-1, 1]; output (N, 2 * n_features), all cosines then all sines.
    B: (n_features, in_dim), entries ~ N(0, sigma^2) in cycles per unit (see the module docstring).
    """

    def __init__(self, in_dim: int, cfg: GaussianFourierConfig = GaussianFourierConfig()):
        super().__init__(in_dim, cfg, learnable=False)


@ENCODINGS.register("LearnableFourier", LearnableFourierConfig)
class LearnableFourier(_FourierFeatures):
    """Random Fourier features [cos(2 pi B x), sin(2 pi B x)] whose B is trained (a parameter).

    Input (N, in_dim) in [-1, 1]; output (N, 2 * n_features), all cosines then all sines.
    B: (n_features, in_dim), initialised ~ N(0, sigma^2) in cycles per unit (see the module docstring).
    """

    def __init__(self, in_dim: int, cfg: LearnableFourierConfig = LearnableFourierConfig()):
        super().__init__(in_dim, cfg, learnable=True)
