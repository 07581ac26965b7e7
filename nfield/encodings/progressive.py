"""Coarse-to-fine positional encoding: NeRF's frequency bands faded in over training (Nerfies, BARF).

The band windows come from `band_window`; `windowed_frequency_features` applies them, with one
progress value for all points (here) or one per point (`SpatiallyAdaptiveProgressive`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nfield.encodings.frequency import band_window, frequency_features
from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError


def windowed_frequency_features(
    x: torch.Tensor, alpha: torch.Tensor, n_frequencies: int, include_input: bool, include_pi: bool
) -> torch.Tensor:
    """The `Frequency` encoding with band k scaled by its window w_k(alpha) (see `band_window`).

    Args:
        x: (N, d) coordinates in [-1, 1].
        alpha: () one progress value for every point, or (N,) one per point; in [0, n_frequencies].
        n_frequencies, include_input, include_pi: as in `FrequencyConfig`.

    Returns:
        (N, d * (2 * n_frequencies + include_input)), laid out exactly like `Frequency`; the input
        columns are never windowed.
    """
    n, d = x.shape
    weights = band_window(alpha.to(x.dtype), n_frequencies)  # (L,) or (N, L)
    bands = frequency_features(x, n_frequencies, include_pi).view(n, n_frequencies, 2 * d)
    features = (bands * weights[..., None]).view(n, -1)
    return torch.cat([x, features], dim=-1) if include_input else features


def check_schedule(name: str, start_fraction: float, end_fraction: float) -> None:
    """Raise `NfieldError` unless 0 <= start_fraction < end_fraction <= 1."""
    if not 0.0 <= start_fraction < end_fraction <= 1.0:
        raise NfieldError(f"{name}: need 0 <= start_fraction < end_fraction <= 1, got {start_fraction} and {end_fraction}")


def schedule_steps(name: str, total: int, start_fraction: float, end_fraction: float) -> tuple[float, float]:
    """(start, end) steps of a coarse-to-fine schedule over a run of `total` steps."""
    if total < 1:
        raise NfieldError(f"{name}.update: total must be a positive number of steps, got {total}")
    return start_fraction * total, end_fraction * total


def check_frequencies(name: str, n_frequencies: int) -> None:
    """Raise `NfieldError` unless n_frequencies is a positive integer."""
    if not (isinstance(n_frequencies, int) and n_frequencies > 0):
        raise NfieldError(f"{name}: n_frequencies must be a positive integer, got {n_frequencies!r}")


@dataclass(frozen=True)
class ProgressiveFrequencyConfig:
    n_frequencies: int = 10  # octaves 2^0 .. 2^(n-1), as in FrequencyConfig
    include_input: bool = True  # prepend x itself (never windowed)
    include_pi: bool = True  # sin(2^k pi x) as in the NeRF paper
    start_fraction: float = 0.0  # fraction of training at which band 0 starts to fade in
    end_fraction: float = 0.5  # fraction of training at which every band is fully on

    def __post_init__(self) -> None:
        check_frequencies("ProgressiveFrequency", self.n_frequencies)
        check_schedule("ProgressiveFrequency", self.start_fraction, self.end_fraction)


@ENCODINGS.register("ProgressiveFrequency", ProgressiveFrequencyConfig)
class ProgressiveFrequency(nn.Module):
    """`Frequency` encoding whose bands fade in coarse to fine over training.

    A global progress alpha in [0, L] (L = n_frequencies) rises linearly from 0 at step
    start_fraction * total to L at step end_fraction * total and stays there; band k is scaled by
    w_k(alpha) = (1 - cos(pi * clamp(alpha - k, 0, 1))) / 2. `update(step, total)` sets alpha from
    the step alone, so repeated calls and resumed runs agree exactly. alpha is a float32 buffer that
    starts at L, so a module that is never updated equals `Frequency`.

    Input (N, d) in [-1, 1]; output (N, d * (2 * n_frequencies + include_input)), laid out like
    `Frequency`.
    """

    alpha: torch.Tensor

    def __init__(self, in_dim: int, cfg: ProgressiveFrequencyConfig = ProgressiveFrequencyConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = in_dim * (2 * cfg.n_frequencies + int(cfg.include_input))
        self.register_buffer("alpha", torch.tensor(float(cfg.n_frequencies), dtype=torch.float32))

    def update(self, step: int, total: int) -> None:
        """Set alpha for `step` (0-based) of a run of `total` steps; a pure function of both."""
        start, end = schedule_steps("ProgressiveFrequency", total, self.cfg.start_fraction, self.cfg.end_fraction)
        progress = min(max((step - start) / (end - start), 0.0), 1.0)
        self.alpha.fill_(progress * self.cfg.n_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return windowed_frequency_features(x, self.alpha, cfg.n_frequencies, cfg.include_input, cfg.include_pi)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_frequencies={self.cfg.n_frequencies}, alpha={float(self.alpha):.3f}"
