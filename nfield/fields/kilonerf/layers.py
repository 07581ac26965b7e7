"""The layer of a grid of tiny MLPs: `StackedLinear`, one independent linear layer per cell."""

from __future__ import annotations

import math

import torch
from torch import nn


class StackedLinear(nn.Module):
    """`n_cells` independent linear layers (in_dim -> out_dim) in stacked tensors, each initialised
    like `nn.Linear` (uniform in +-1/sqrt(in_dim))."""

    def __init__(self, n_cells: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n_cells, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_cells, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """x (C, P, in_dim) padded points of the cells `cells` (C,) -> (C, P, out_dim)."""
        return torch.baddbmm(self.bias[cells][:, None, :], x, self.weight[cells])
