"""A perceptual colour map for heat maps (error maps, progress maps) without plotting libraries."""

from __future__ import annotations

import torch

# Nine anchor colours approximating matplotlib's "inferno" (sRGB, 0-1), interpolated linearly.
_INFERNO = (
    (0.001, 0.000, 0.014),
    (0.087, 0.044, 0.224),
    (0.258, 0.039, 0.406),
    (0.416, 0.090, 0.433),
    (0.578, 0.148, 0.404),
    (0.735, 0.216, 0.330),
    (0.865, 0.317, 0.226),
    (0.955, 0.469, 0.099),
    (0.988, 0.998, 0.645),
)


def inferno(values: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] (any shape S; clipped) to colours, shape (*S, 3) float32 in [0, 1]."""
    table = torch.tensor(_INFERNO, dtype=torch.float32, device=values.device)
    position = values.float().clamp(0, 1) * (len(_INFERNO) - 1)
    low = position.floor().long().clamp(max=len(_INFERNO) - 2)
    t = (position - low)[..., None]
    return table[low] * (1 - t) + table[low + 1] * t
