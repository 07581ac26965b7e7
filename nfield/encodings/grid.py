"""Multiresolution feature grids with multilinear interpolation: instant-ngp's hash grid and a dense one.

Geometry (d = 2 or 3, L levels, F features per level). A point x in [-1, 1]^d is mapped to
u = (x + 1) / 2 in [0, 1]^d (points slightly outside are clamped to the box). Level l has scale
s_l = base_resolution * per_level_scale^l and r_l = ceil(s_l) + 1 vertices per axis. With
p = u * s_l, the point lies in cell c = clamp(floor(p), 0, r_l - 2) at offset p - c in [0, 1]^d,
and its level-l feature is the multilinear blend of the F-vectors stored at the cell's 2^d vertices.

Storage. A vertex v of a level with r_l^d <= T = 2^log2_hashmap_size vertices has its own row,
v_0 + v_1 r_l + v_2 r_l^2 (first axis fastest). Finer levels share T rows through instant-ngp's
spatial hash (v_0 * 1) xor (v_1 * 2654435761) xor (v_2 * 805459861) mod T, computed in int64, whose
low bits equal tiny-cuda-nn's uint32 arithmetic. `DenseGrid` stores every level densely. All levels'
rows live in one parameter table (total_rows, F), level after level, initialised U(-1e-4, 1e-4).
The geometry differs slightly from tiny-cuda-nn's (which uses scale s_l - 1 and a half-cell offset),
so tables are not interchangeable with tcnn checkpoints even though the keys and the hash are.

Two implementations of the same arithmetic, with bit-identical results (the PyTorch backend):

- When x does not require grad (the usual training step), a custom autograd function saves only x
  and recomputes vertex rows and weights in backward, scattering the table gradient with
  `index_add_`: the saved memory is O(N d) however many levels and corners there are. It loops over
  levels and the 2^d corners, so only (N, F) gathers are ever transient.
- When x requires grad (normals, eikonal losses), ordinary differentiable torch ops, so gradients
  w.r.t. x and second derivatives work. Autograd keeps every corner's rows, weights and gathered
  features, O(N L 2^d F), so use moderate batches there.

Both compute in float32 (float64 for a float64 module) even under autocast.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

_PRIMES = (1, 2654435761, 805459861)  # instant-ngp's spatial hash, one prime per axis
_MAX_TABLE_VALUES = 2**31  # 8 GiB of float32: any larger table is a configuration mistake


@dataclass(frozen=True)
class HashGridConfig:
    n_levels: int = 16  # resolution levels L
    n_features_per_level: int = 2  # F; the output has L * F columns
    log2_hashmap_size: int = 19  # T = 2^this rows per hashed level (levels with <= T vertices are dense)
    base_resolution: int = 16  # scale of the coarsest level, in cells per unit of u = (x + 1) / 2
    per_level_scale: float = 2.0  # scale ratio between consecutive levels


@dataclass(frozen=True)
class DenseGridConfig:
    n_levels: int = 8  # resolution levels L (the finest has about base * scale^(L-1) cells per axis)
    n_features_per_level: int = 2  # F; the output has L * F columns
    base_resolution: int = 16  # scale of the coarsest level, in cells per unit of u = (x + 1) / 2
    per_level_scale: float = 1.5  # scale ratio between consecutive levels (finest: 16 * 1.5^7 = 273)


@dataclass(frozen=True)
class GridLevel:
    """Where one level's vertices live in the shared table."""

    scale: float  # s_l: cells per unit of u
    resolution: int  # r_l = ceil(s_l) + 1 vertices per axis
    offset: int  # first row of this level in the table
    size: int  # rows: r_l^d when dense, T when hashed
    hashed: bool


def grid_levels(
    dim: int, n_levels: int, base_resolution: int, per_level_scale: float, hashmap_size: int | None
) -> tuple[GridLevel, ...]:
    """The L levels' geometry and table layout; `hashmap_size` None stores every level densely."""
    levels, offset = [], 0
    for index in range(n_levels):
        scale = base_resolution * per_level_scale**index
        resolution = math.ceil(scale) + 1
        dense_size = resolution**dim
        size = dense_size if hashmap_size is None else min(dense_size, hashmap_size)
        levels.append(GridLevel(scale, resolution, offset, size, hashed=size < dense_size))
        offset += size
    return tuple(levels)


def _unit_box(x: torch.Tensor) -> torch.Tensor:
    """(N, d) coordinates in [-1, 1] -> u in [0, 1]^d, clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def _vertex_rows(vertex: list[torch.Tensor], level: GridLevel) -> torch.Tensor:
    """Table rows (N,) int64 of integer vertex coordinates (d tensors of shape (N,))."""
    if level.hashed:
        code = vertex[0] * _PRIMES[0]
        for coordinate, prime in zip(vertex[1:], _PRIMES[1:]):
            code = code ^ (coordinate * prime)
        index = code & (level.size - 1)
    else:
        index = vertex[-1]
        for coordinate in reversed(vertex[:-1]):
            index = index * level.resolution + coordinate
    return index + level.offset


def _level_corners(u: torch.Tensor, level: GridLevel) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The 2^d corners of each point's cell at one level.

    Args:
        u: (N, d) points in [0, 1]^d.

    Yields:
        (rows, weights): (N,) int64 table rows and (N,) multilinear weights, one corner at a time;
        the weights are differentiable w.r.t. u.
    """
    p = u * level.scale
    cell = p.detach().floor().clamp(0, level.resolution - 2)
    frac = p - cell
    weights_by_bit = (1.0 - frac, frac)
    cell = cell.long()
    for corner in itertools.product((0, 1), repeat=u.shape[1]):
        weight = weights_by_bit[corner[0]][:, 0]
        for axis in range(1, len(corner)):
            weight = weight * weights_by_bit[corner[axis]][:, axis]
        vertex = [cell[:, axis] + bit for axis, bit in enumerate(corner)]
        yield _vertex_rows(vertex, level), weight


def _blend(corners: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One level's feature: the sum of weight (N,) * gathered (N, F) over its corners, in corner order."""
    pairs = iter(corners)
    weight, gathered = next(pairs)
    total = weight[:, None] * gathered
    for weight, gathered in pairs:
        total = total.addcmul(weight[:, None], gathered)
    return total


def _interpolate_streaming(x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """Grid features, gathering one corner at a time so that only (N, F) gathers are transient.

    Args:
        x: (N, d) points in [-1, 1].
        table: (total_rows, F) all levels' vertex features.
        levels: the table layout.

    Returns:
        (N, L * F) level-major features.
    """
    u = _unit_box(x)
    features = []
    for level in levels:
        features.append(_blend((weight, table.index_select(0, rows)) for rows, weight in _level_corners(u, level)))
    return torch.cat(features, dim=1)


def _interpolate_differentiable(x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """`_interpolate_streaming` with ordinary differentiable ops, bit for bit the same result.

    All corners of all levels are gathered by one `index_select`, whose backward scatters into a
    single table-sized gradient rather than one per corner (autograd keeps every gather anyway).
    """
    u = _unit_box(x)
    corners = [list(_level_corners(u, level)) for level in levels]
    rows = [level_rows for level in corners for level_rows, _ in level]
    gathered = iter(table.index_select(0, torch.cat(rows)).view(len(rows), len(x), table.shape[1]).unbind(0))
    return torch.cat([_blend((weight, next(gathered)) for _, weight in level) for level in corners], dim=1)


class _GridInterpolation(torch.autograd.Function):
    """`_interpolate_streaming` for an x that needs no gradient, saving only x for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.levels = levels
        ctx.table_shape = table.shape
        return _interpolate_streaming(x, table, levels)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        assert not ctx.needs_input_grad[0], "the custom grid function is only used when x needs no gradient"
        (x,) = ctx.saved_tensors
        n_features = ctx.table_shape[1]
        grad_table = grad_out.new_zeros(ctx.table_shape)
        u = _unit_box(x)
        for index, level in enumerate(ctx.levels):
            grad_level = grad_out[:, index * n_features : (index + 1) * n_features]
            for rows, weight in _level_corners(u, level):
                grad_table.index_add_(0, rows, weight[:, None] * grad_level)
        return None, grad_table, None


class _FeatureGrid(nn.Module):
    """The implementation behind `HashGrid` and `DenseGrid`; `log2_hashmap_size` None = all levels dense."""

    def __init__(self, in_dim: int, cfg: HashGridConfig | DenseGridConfig, log2_hashmap_size: int | None):
        super().__init__()
        name = type(self).__name__
        if in_dim not in (2, 3):
            raise NfieldError(f"{name} works on 2-D or 3-D coordinates, got in_dim={in_dim}")
        for key in ("n_levels", "n_features_per_level", "base_resolution"):
            value = getattr(cfg, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise NfieldError(f"{name}: {key} must be a positive integer, got {value!r}")
        if not (isinstance(cfg.per_level_scale, (int, float)) and cfg.per_level_scale >= 1.0):
            raise NfieldError(f"{name}: per_level_scale must be a number >= 1, got {cfg.per_level_scale!r}")
        if log2_hashmap_size is not None and not (isinstance(log2_hashmap_size, int) and 1 <= log2_hashmap_size <= 30):
            raise NfieldError(f"{name}: log2_hashmap_size must be an integer in [1, 30], got {log2_hashmap_size!r}")
        hashmap_size = None if log2_hashmap_size is None else 2**log2_hashmap_size
        self.levels = grid_levels(in_dim, cfg.n_levels, cfg.base_resolution, cfg.per_level_scale, hashmap_size)
        rows = self.levels[-1].offset + self.levels[-1].size
        values = rows * cfg.n_features_per_level
        if values > _MAX_TABLE_VALUES:
            fix = "use fewer or coarser levels" + (" or a smaller log2_hashmap_size" if hashmap_size else ", or HashGrid")
            raise NfieldError(f"{name}: the feature table would hold {values:,} values (limit 2^31); {fix}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = cfg.n_levels * cfg.n_features_per_level
        self.params = nn.Parameter(torch.empty(rows, cfg.n_features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def n_params(self) -> int:
        """Number of trainable values (the table's rows times F)."""
        return self.params.numel()

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Vertices per axis r_l of each level, coarse to fine."""
        return tuple(level.resolution for level in self.levels)

    @property
    def hashed_levels(self) -> tuple[int, ...]:
        """Indices of the levels stored through the spatial hash (the others are dense)."""
        return tuple(index for index, level in enumerate(self.levels) if level.hashed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(self.params.dtype, torch.float32)
        x, table = x.to(dtype), self.params.to(dtype)
        if x.requires_grad:
            return _interpolate_differentiable(x, table, self.levels)
        return _GridInterpolation.apply(x, table, self.levels)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, n_levels={self.cfg.n_levels}, "
            f"n_features_per_level={self.cfg.n_features_per_level}, resolutions={list(self.resolutions)}, "
            f"hashed_levels={list(self.hashed_levels)}, n_params={self.n_params}, backend=torch"
        )


@ENCODINGS.register("HashGrid", HashGridConfig)
class HashGrid(_FeatureGrid):
    """instant-ngp's multiresolution hash encoding (Müller et al. 2022), PyTorch backend.

    Levels with at most 2^log2_hashmap_size vertices are stored densely, finer ones through the
    spatial hash (see the module docstring for the exact geometry and hash).

    Input (N, d) in [-1, 1], d = 2 or 3; output (N, n_levels * n_features_per_level), level-major
    (columns [l F, (l + 1) F) are level l), float32 under autocast.
    """

    def __init__(self, in_dim: int, cfg: HashGridConfig = HashGridConfig()):
        super().__init__(in_dim, cfg, cfg.log2_hashmap_size)


@ENCODINGS.register("DenseGrid", DenseGridConfig)
class DenseGrid(_FeatureGrid):
    """Multiresolution dense feature grid: `HashGrid` with every level stored densely.

    Level l has (ceil(base_resolution * per_level_scale^l) + 1)^d rows, so keep the finest level
    modest: the defaults (8 levels from 16, growing 1.5x to 273 cells) hold 0.27M values in 2-D and
    59M in 3-D; with tiny-cuda-nn's hash-grid keys (16 levels from 16, doubling) the table would not
    fit and construction raises `NfieldError`.

    Input (N, d) in [-1, 1], d = 2 or 3; output (N, n_levels * n_features_per_level), level-major,
    float32 under autocast.
    """

    def __init__(self, in_dim: int, cfg: DenseGridConfig = DenseGridConfig()):
        super().__init__(in_dim, cfg, None)
