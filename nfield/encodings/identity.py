"""The identity encoding: coordinates go to the network unchanged (plain MLPs, SIREN, SPDER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS


@dataclass(frozen=True)
class IdentityConfig:
    """No keys: the input is passed through."""

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's ``Identity`` encoding JSON."""
        return {"otype": "Identity"}


@ENCODINGS.register("Identity", IdentityConfig)
class Identity(nn.Module):
    """x -> x.  Input (N, in_dim) in [-1, 1]; output (N, in_dim)."""

    def __init__(self, in_dim: int, cfg: IdentityConfig = IdentityConfig()):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
