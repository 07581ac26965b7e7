"""NeRF positional encoding and the band windows shared by the coarse-to-fine encodings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError


def frequency_features(x: torch.Tensor, n_frequencies: int, include_pi: bool = True) -> torch.Tensor:
    """Sines and cosines of octave-spaced frequencies, grouped by band.

    Args:
        x: (N, d) coordinates.
        n_frequencies: number of octaves L; band k uses frequency 2^k (times pi if `include_pi`).
        include_pi: multiply by pi (the NeRF paper's convention).

    Returns:
        (N, L * 2 * d): band k occupies columns [2dk, 2d(k+1)) as [sin(f_k x_1..d), cos(f_k x_1..d)].
    """
    scale = math.pi if include_pi else 1.0
    freqs = scale * (2.0 ** torch.arange(n_frequencies, device=x.device, dtype=x.dtype))
    angles = x[:, None, :] * freqs[None, :, None]  # (N, L, d)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(x.shape[0], -1)


def band_window(alpha: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Smooth coarse-to-fine weights of each band for a progress value alpha in [0, n_bands].

    w_k(alpha) = (1 - cos(pi * clamp(alpha - k, 0, 1))) / 2  (Nerfies / BARF).
    Band k is off while alpha <= k, fades in as alpha goes from k to k + 1, and is fully on after.

    Args:
        alpha: any shape (...,); a scalar tensor for a global schedule, (N,) for per-point progress.
        n_bands: number of bands.

    Returns:
        (..., n_bands) weights in [0, 1].
    """
    k = torch.arange(n_bands, device=alpha.device, dtype=alpha.dtype)
    t = (alpha[..., None] - k).clamp(0.0, 1.0)
    return 0.5 * (1.0 - torch.cos(math.pi * t))


@dataclass(frozen=True)
class FrequencyConfig:
    n_frequencies: int = 10  # octaves 2^0 .. 2^(n-1)
    include_input: bool = True  # prepend x itself
    include_pi: bool = True  # sin(2^k pi x) as in the NeRF paper; False gives sin(2^k x)

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's ``Frequency`` encoding JSON.

        Raises:
            NfieldError: tiny-cuda-nn's encoding is sin/cos(2^k pi x) alone, without x or a pi-free variant.
        """
        if self.include_input or not self.include_pi:
            raise NfieldError(
                "tcnn: tiny-cuda-nn's Frequency encoding is sin/cos(2^k pi x) alone; set include_input=False, include_pi=True"
            )
        return {"otype": "Frequency", "n_frequencies": self.n_frequencies}


@ENCODINGS.register("Frequency", FrequencyConfig)
class Frequency(nn.Module):
    """NeRF positional encoding: x -> [x, sin(2^k pi x), cos(2^k pi x)] for k < n_frequencies.

    Conventions: pi is included by default, as in the NeRF paper (Mildenhall et al. 2020, eq. 4)
    with inputs in [-1, 1], so the lowest band has period 2 and spans the domain once. The
    reference NeRF code omits pi (``include_pi=False``); tiny-cuda-nn's ``Frequency`` includes pi
    but takes inputs in [0, 1], which halves every frequency relative to ours.

    Input (N, d) in [-1, 1]; output (N, d * (2 * n_frequencies + include_input)), ordered
    [x, band 0 sines, band 0 cosines, band 1 sines, ...].
    """

    def __init__(self, in_dim: int, cfg: FrequencyConfig = FrequencyConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = in_dim * (2 * cfg.n_frequencies + int(cfg.include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = frequency_features(x, self.cfg.n_frequencies, self.cfg.include_pi)
        return torch.cat([x, features], dim=-1) if self.cfg.include_input else features
