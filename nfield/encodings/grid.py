"""Multiresolution feature grids with multilinear interpolation: instant-ngp's hash grid and a dense one.

Geometry, the same as tiny-cuda-nn's ``HashGrid`` / ``DenseGrid`` encodings (d = 2 or 3, L levels,
F features per level, T = 2^log2_hashmap_size). A point x in [-1, 1]^d is mapped to
u = (x + 1) / 2, clamped to [0, 1]^d. Level l has, in float32 arithmetic,

    scale_l = exp2(l * log2(per_level_scale)) * base_resolution - 1      (cells per unit of u)
    r_l     = ceil(scale_l) + 1                                           (vertices per axis)

and with p = u * scale_l + 0.5 (the half-cell offset staggers the levels) the point lies in the
cell c = floor(p) at offset p - c in [0, 1)^d; its level-l feature is the multilinear blend of the
F-vectors stored at the cell's 2^d vertices c + b, b in {0, 1}^d.

Storage. Level l owns S_l rows of one (total_rows, F) parameter table, level after level:
S_l = min(next multiple of 8 of r_l^d, T) for `HashGrid` (no minimum for `DenseGrid`). A level with
r_l^d <= T stores vertex v at row (v_0 + v_1 r_l + v_2 r_l^2) mod S_l (first axis fastest; the
half-cell offset can reach v_i = r_l at the top of the box, which wraps around, as in
tiny-cuda-nn); finer levels share T rows through the spatial hash
(v_0 * 1 xor v_1 * 2654435761 xor v_2 * 805459861) mod T in uint32 arithmetic. Rows start out
U(-1e-4, 1e-4). The output is level-major: columns [l F, (l + 1) F) are level l. A table is
therefore tiny-cuda-nn's parameter vector reshaped to (total_rows, F), and loads into the
``tinycudann.Encoding`` of the config's ``tcnn_config()`` JSON and back (`nfield.backends.tcnn`).
Grids saved before this layout (nfield 0.1) are refused with a one-line error: their geometry differs.

Backends (the ``backend`` key; see `nfield.backends`): ``auto`` runs the Triton kernels of
`nfield.kernels.grid_encoding` on CUDA and the PyTorch reference elsewhere; ``tcnn`` runs
tiny-cuda-nn on the same table. The PyTorch reference has two paths with bit-identical results:

- When x does not require grad (the usual training step), a custom autograd function saves only x
  and recomputes vertex rows and weights in backward, scattering the table gradient with
  `index_add_`: the saved memory is O(N d) however many levels and corners there are.
- When x requires grad (normals, eikonal losses), ordinary differentiable torch ops, so gradients
  w.r.t. x and second derivatives work. Autograd keeps every corner's rows, weights and gathered
  features, O(N L 2^d F), so use moderate batches there.

The Triton path gives the same first and second derivatives from kernels (forward, backward to
the table and to x, and the backward of the x-gradient that an eikonal loss needs). Every path
computes in float32 (float64 for a float64 module on the reference) even under autocast; tables
may be float32 or float16 (the kernels accumulate in float32).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from nfield.backends import check_backend, choose_backend, record_backend
from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

_PRIMES = (1, 2654435761, 805459861)  # instant-ngp's spatial hash, one prime per axis
_MAX_TABLE_VALUES = 2**31  # 8 GiB of float32: any larger table is a configuration mistake
_MAX_DENSE_PARAMS = 2**31 - 1  # tiny-cuda-nn caps a level's dense size here before padding
LAYOUT_VERSION = 2  # 1: nfield 0.1's geometry (scale_l = base * b^l, no offset); 2: tiny-cuda-nn's
GRID_BACKENDS = ("torch", "triton", "tcnn")


@dataclass(frozen=True)
class HashGridConfig:
    n_levels: int = 16  # resolution levels L
    n_features_per_level: int = 2  # F; the output has L * F columns
    log2_hashmap_size: int = 19  # T = 2^this rows per hashed level (levels with <= T vertices are dense)
    base_resolution: int = 16  # vertices per axis of the coarsest level (scale base - 1 cells per unit of u)
    per_level_scale: float = 2.0  # scale ratio between consecutive levels
    backend: str = "auto"  # auto, torch, triton or tcnn (see nfield.backends)

    def __post_init__(self) -> None:
        check_backend("HashGridConfig", self.backend, GRID_BACKENDS)
        _check_levels("HashGrid", self)
        size = self.log2_hashmap_size
        if not (isinstance(size, int) and 3 <= size <= 30):
            raise NfieldError(f"HashGrid: log2_hashmap_size must be an integer in [3, 30], got {size!r}")

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's ``HashGrid`` encoding JSON: these keys, linear interpolation (the same geometry and table)."""
        return {"otype": "HashGrid", **_level_keys(self), "interpolation": "Linear"}


@dataclass(frozen=True)
class DenseGridConfig:
    n_levels: int = 8  # resolution levels L (the finest has about base * scale^(L-1) vertices per axis)
    n_features_per_level: int = 2  # F; the output has L * F columns
    base_resolution: int = 16  # vertices per axis of the coarsest level
    per_level_scale: float = 1.5  # scale ratio between consecutive levels (finest: 274 vertices per axis)
    backend: str = "auto"  # auto, torch, triton or tcnn (see nfield.backends)

    def __post_init__(self) -> None:
        check_backend("DenseGridConfig", self.backend, GRID_BACKENDS)
        _check_levels("DenseGrid", self)

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's ``DenseGrid`` encoding JSON: these keys, linear interpolation (the same geometry and table)."""
        return {"otype": "DenseGrid", **_level_keys(self), "interpolation": "Linear"}


def _check_levels(name: str, cfg: HashGridConfig | DenseGridConfig) -> None:
    """Raise `NfieldError`, naming the module `name`, unless the level keys of `cfg` are valid."""
    for key in ("n_levels", "n_features_per_level", "base_resolution"):
        value = getattr(cfg, key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise NfieldError(f"{name}: {key} must be a positive integer, got {value!r}")
    if not (isinstance(cfg.per_level_scale, (int, float)) and cfg.per_level_scale >= 1.0):
        raise NfieldError(f"{name}: per_level_scale must be a number >= 1, got {cfg.per_level_scale!r}")


def _level_keys(cfg: HashGridConfig | DenseGridConfig) -> dict[str, Any]:
    """The keys of `cfg` that tiny-cuda-nn's grid encodings share (all but ``backend``)."""
    return {key: value for key, value in dataclasses.asdict(cfg).items() if key != "backend"}


@dataclass(frozen=True)
class GridLevel:
    """Where one level's vertices live in the shared table."""

    scale: float  # scale_l: cells per unit of u (a float32 value)
    resolution: int  # r_l = ceil(scale_l) + 1 vertices per axis
    offset: int  # first row of this level in the table
    size: int  # rows S_l; vertex indices are taken modulo this
    hashed: bool  # r_l^d > T: rows through the spatial hash


def level_scale(index: int, base_resolution: int, per_level_scale: float) -> float:
    """scale_l = exp2(l log2(per_level_scale)) base_resolution - 1, rounded as tiny-cuda-nn's float32 arithmetic."""
    log2_scale = np.float32(math.log2(per_level_scale))
    grown = np.exp2(np.float32(index) * log2_scale, dtype=np.float32)
    return float(grown * np.float32(base_resolution) - np.float32(1.0))


def grid_levels(
    dim: int, n_levels: int, base_resolution: int, per_level_scale: float, hashmap_size: int | None
) -> tuple[GridLevel, ...]:
    """The L levels' geometry and table layout; `hashmap_size` None stores every level densely."""
    levels, offset = [], 0
    for index in range(n_levels):
        scale = level_scale(index, base_resolution, per_level_scale)
        resolution = math.ceil(scale) + 1
        dense = resolution**dim
        padded = -(-min(dense, _MAX_DENSE_PARAMS) // 8) * 8
        hashed = hashmap_size is not None and dense > hashmap_size
        size = hashmap_size if hashed else padded
        levels.append(GridLevel(scale, resolution, offset, size, hashed))
        offset += size
    return tuple(levels)


def _unit_box(x: torch.Tensor) -> torch.Tensor:
    """(N, d) coordinates in [-1, 1] -> u in [0, 1]^d, clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


_CHUNK_CORNERS = 2**22  # corner rows gathered at once by the streaming path (N L 2^d per chunk)


def _runs(levels: tuple[GridLevel, ...]) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive levels that are all hashed or all dense (usually two)."""
    runs, start = [], 0
    for index in range(1, len(levels) + 1):
        if index == len(levels) or levels[index].hashed != levels[start].hashed:
            runs.append((start, index))
            start = index
    return runs


def _corner_product(per_axis: list[torch.Tensor], combine) -> torch.Tensor:
    """(L, 2^d, N) from d tensors (L, 2, N), one per axis: combine(...combine(a_0, a_1)..., a_{d-1})
    over every corner b in `itertools.product` order (b_0 slowest), by broadcasting."""
    d = len(per_axis)
    levels, _, n = per_axis[0].shape
    out = per_axis[0].view(levels, 2, *[1] * (d - 1), n)
    for axis in range(1, d):
        shape = [1] * d
        shape[axis] = 2
        out = combine(out, per_axis[axis].view(levels, *shape, n))
    return out.reshape(levels, 2**d, n)


def _run_rows(vertex: list[torch.Tensor], levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """Table rows (L', 2^d, N) of the corners of levels all hashed or all dense; vertex holds the
    d axes' integer coordinates (L', 2, N), bit 0 then bit 1."""
    device = vertex[0].device
    size = torch.tensor([level.size for level in levels], dtype=torch.int64, device=device)[:, None, None]
    offset = torch.tensor([level.offset for level in levels], dtype=torch.int64, device=device)[:, None, None]
    if levels[0].hashed:
        code = _corner_product([v * prime for v, prime in zip(vertex, _PRIMES)], torch.bitwise_xor)
        return (code & (size - 1)) + offset
    resolution = torch.tensor([level.resolution for level in levels], dtype=torch.int64, device=device)[:, None, None]
    strides = [resolution**axis for axis in range(len(vertex))]  # first axis fastest
    index = _corner_product([v * stride for v, stride in zip(vertex, strides)], torch.add)
    return index % size + offset


def _cell_corners(u: torch.Tensor, levels: tuple[GridLevel, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2^d corners of each point's cell at every level.

    Args:
        u: (N, d) points in [0, 1]^d.

    Returns:
        (rows, weights): (L, 2^d, N) int64 table rows and (L, 2^d, N) multilinear weights, corners
        b in `itertools.product` order (b_0 slowest); the weights are differentiable w.r.t. u. All
        levels and corners at once, by broadcasting one (L, 2, N) tensor per axis; level-major, so
        the gathers and scatters visit the table one level's rows at a time.
    """
    scales = torch.tensor([level.scale for level in levels], dtype=u.dtype, device=u.device)
    p = u.t()[None] * scales[:, None, None] + 0.5  # (L, d, N)
    cell = p.detach().floor()
    frac = p - cell
    cell = cell.long()
    weights = _corner_product([torch.stack((1.0 - frac[:, a], frac[:, a]), 1) for a in range(u.shape[1])], torch.mul)
    vertex = [torch.stack((cell[:, a], cell[:, a] + 1), 1) for a in range(u.shape[1])]
    runs = _runs(levels)
    rows = [_run_rows([v[start:stop] for v in vertex], levels[start:stop]) for start, stop in runs]
    return (rows[0] if len(rows) == 1 else torch.cat(rows)), weights


def _blend(weights: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    """(N, L * F) level-major features: the sum over corners of weights (L, C, N) times gathered
    (L, C, N, F), accumulated in corner order."""
    total = weights[:, 0, :, None] * gathered[:, 0]
    for corner in range(1, weights.shape[1]):
        total = total.addcmul(weights[:, corner, :, None], gathered[:, corner])
    return total.permute(1, 0, 2).reshape(total.shape[1], total.shape[0] * total.shape[2])


def _chunks(n: int, levels: tuple[GridLevel, ...], dim: int) -> Iterator[slice]:
    """Slices of at most _CHUNK_CORNERS / (L 2^d) points covering range(n)."""
    step = max(1, _CHUNK_CORNERS // (len(levels) * 2**dim))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def _gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(L, C, N, F) table rows of rows (L, C, N)."""
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[1])


def _interpolate_streaming(x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """Grid features, a chunk of points at a time so that the transient gathers stay bounded.

    Args:
        x: (N, d) points in [-1, 1].
        table: (total_rows, F) all levels' vertex features.
        levels: the table layout.

    Returns:
        (N, L * F) level-major features.
    """
    u = _unit_box(x)
    out = u.new_empty(len(u), len(levels) * table.shape[1], dtype=torch.promote_types(u.dtype, table.dtype))
    for part in _chunks(len(u), levels, u.shape[1]):
        rows, weights = _cell_corners(u[part], levels)
        out[part] = _blend(weights, _gather(table, rows))
    return out


def _interpolate_differentiable(x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """`_interpolate_streaming` with ordinary differentiable ops, bit for bit the same result.

    All corners of all levels are gathered by one `index_select`, whose backward scatters into a
    single table-sized gradient (autograd keeps every gather anyway).
    """
    rows, weights = _cell_corners(_unit_box(x), levels)
    return _blend(weights, _gather(table, rows))


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
        levels = ctx.levels
        for part in _chunks(len(u), levels, u.shape[1]):
            rows, weights = _cell_corners(u[part], levels)
            grad = grad_out[part].reshape(-1, len(levels), n_features).transpose(0, 1)[:, None]
            grad_table.index_add_(0, rows.reshape(-1), (weights[..., None] * grad).reshape(-1, n_features).to(grad_table.dtype))
        return None, grad_table, None


def interpolate_reference(x: torch.Tensor, table: torch.Tensor, levels: tuple[GridLevel, ...]) -> torch.Tensor:
    """The PyTorch reference of the grid encoding (the path the kernels are tested against).

    Args:
        x: (N, d) points in [-1, 1] (clamped to the box).
        table: (total_rows, F) the levels' rows.
        levels: the layout from `grid_levels`.

    Returns:
        (N, L * F) level-major features, differentiable w.r.t. the table, and w.r.t. x (to any
        order) when x requires grad.
    """
    if x.requires_grad or _in_functorch_transform():  # vmap (stacked signals) batches ordinary ops only
        return _interpolate_differentiable(x, table, levels)
    return _GridInterpolation.apply(x, table, levels)


def _in_functorch_transform() -> bool:
    """Whether a `torch.func` transform (vmap, grad) is tracing this call."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


class _FeatureGrid(nn.Module):
    """The implementation behind `HashGrid` and `DenseGrid`; `log2_hashmap_size` None = all levels dense."""

    def __init__(self, in_dim: int, cfg: HashGridConfig | DenseGridConfig, log2_hashmap_size: int | None):
        super().__init__()
        name = type(self).__name__
        if in_dim not in (2, 3):
            raise NfieldError(f"{name} works on 2-D or 3-D coordinates, got in_dim={in_dim}")
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
        self.backend = cfg.backend
        self.last_backend: str | None = None
        self.params = nn.Parameter(torch.empty(rows, cfg.n_features_per_level).uniform_(-1e-4, 1e-4))
        self.register_buffer("layout_version", torch.tensor(LAYOUT_VERSION, dtype=torch.int32))
        self._tcnn: nn.Module | None = None

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

    def set_backend(self, name: str) -> bool:
        """Run later calls on backend `name` (auto, torch, triton, tcnn; the table is shared by all); True."""
        check_backend(type(self).__name__, name, GRID_BACKENDS)
        self.backend = name
        return True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        version = state_dict.get(prefix + "layout_version")
        if prefix + "params" in state_dict and (version is None or int(version) != LAYOUT_VERSION):
            found = "nfield 0.1's" if version is None else f"version {int(version)}"
            raise NfieldError(
                f"{type(self).__name__} weights use {found} grid geometry, not tiny-cuda-nn's (layout {LAYOUT_VERSION}); "
                "retrain the run with this nfield"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, L * F), float32 (float64 for a float64 table on the reference), of x (N, d) in [-1, 1]."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise NfieldError(f"{type(self).__name__}: expected points of shape (N, {self.in_dim}), got {tuple(x.shape)}")
        table = self.params
        backend = choose_backend(type(self).__name__, self.backend, x.device, GRID_BACKENDS)
        if backend == "triton" and (table.dtype not in (torch.float32, torch.float16) or table.shape[1] not in (1, 2, 4, 8)):
            if self.backend == "triton":
                raise NfieldError(
                    f"{type(self).__name__}: the triton backend takes float32 or float16 tables with 1, 2, 4 or 8 features "
                    f"per level, got {table.dtype} with {table.shape[1]}"
                )
            backend = "torch"
        self.last_backend = backend
        record_backend(type(self).__name__, backend)
        if backend == "triton":
            from nfield.kernels.grid_encoding import grid_encode

            return grid_encode(x.float(), table, self.levels)
        if backend == "tcnn":
            from nfield.backends.tcnn import tcnn_grid_encode

            if self._tcnn is None:
                object.__setattr__(self, "_tcnn", _build_tcnn_encoding(self))
            return tcnn_grid_encode(self._tcnn, x, table)
        dtype = torch.promote_types(table.dtype, torch.float32)
        return interpolate_reference(x.to(dtype), table.to(dtype), self.levels)

    def extra_repr(self) -> str:
        ran = f" (last call: {self.last_backend})" if self.last_backend else ""
        return (
            f"in_dim={self.in_dim}, n_levels={self.cfg.n_levels}, "
            f"n_features_per_level={self.cfg.n_features_per_level}, resolutions={list(self.resolutions)}, "
            f"hashed_levels={list(self.hashed_levels)}, n_params={self.n_params}, backend={self.backend}{ran}"
        )


def _build_tcnn_encoding(grid: _FeatureGrid) -> nn.Module:
    from nfield.backends.tcnn import build_tcnn_encoding

    return build_tcnn_encoding(grid.in_dim, grid.cfg.tcnn_config(), grid.params.dtype, grid.params.device)


@ENCODINGS.register("HashGrid", HashGridConfig)
class HashGrid(_FeatureGrid):
    """instant-ngp's multiresolution hash encoding (Müller et al. 2022), tiny-cuda-nn's geometry.

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

    Level l has about (base_resolution * per_level_scale^l)^d rows, so keep the finest level
    modest: the defaults (8 levels from 16 vertices, growing 1.5x to 274) hold 0.27M values in
    2-D and 59M in 3-D; with tiny-cuda-nn's hash-grid keys (16 levels from 16, doubling) the table
    would not fit and construction raises `NfieldError`.

    Input (N, d) in [-1, 1], d = 2 or 3; output (N, n_levels * n_features_per_level), level-major,
    float32 under autocast.
    """

    def __init__(self, in_dim: int, cfg: DenseGridConfig = DenseGridConfig()):
        super().__init__(in_dim, cfg, None)
