"""NGLOD's sparse-octree feature volume (Takikawa et al. 2021, "Neural Geometric Level of Detail").

Geometry. Level l = 0 .. L-1 of the octree splits [-1, 1]^3 into r_l = 2^(base_lod + l) cells per
axis. A point x maps to u = (x + 1) / 2 in [0, 1]^3 (points outside are clamped to the box) and, with
p = u r_l, lies in the cell c = clamp(floor(p), 0, r_l - 1) at offset p - c in [0, 1]^3. Cell (i, j, k)
(along x, y, z) has the linear key (i r_l + j) r_l + k; its corners lie on the (r_l + 1)^3 lattice with
keys (i (r_l + 1) + j) (r_l + 1) + k. Since r_{l+1} = 2 r_l, a cell's parent is c // 2.

Sparsity. Only occupied cells exist. `SparseOctree.from_points` occupies, at every level, the cells
containing surface points and their neighbours within `dilation` = d cells (Chebyshev distance).
That octree is nested, every occupied cell's parent occupied: a cell within d cells of a point's
cell has its parent within ceil(d / 2) <= d cells of the point's parent cell.
Each level stores its occupied cell keys and the keys of their corners as sorted int64 buffers. A
point's cell is found in a dense table of every cell's row (-1 where unoccupied; int32, for levels
of at most 128^3 cells) or, on finer levels, by `torch.searchsorted` into the cell keys; its corners'
rows come from a (8, n_cells) table of each cell's corner rows. Both tables are derived from the
keys (rebuilt on load, not saved).

Features. Every corner of level l owns an F-vector (one (n_corners_l, F) parameter per level). The
encoding of x is the sum over levels 0 .. lod of the trilinear blend of its level-l cell's 8 corner
vectors, where an unoccupied cell contributes zero. It is made of ordinary differentiable torch
ops, one (8 N, F) gather of all corners per level, so gradients w.r.t. x and second derivatives
(eikonal losses) work; it computes in float32 (float64 for a float64 module) even under autocast.

Checkpoints. An empty `OctreeFeatures(cfg)` resizes its octree buffers and feature tables to those
of an incoming state dict, so a model reloads from its weights file alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from nfield.errors import NfieldError

_MAX_LOD = 12  # finest supported level: 4096 cells per axis
DENSE_LOOKUP_CELLS = 2**21  # levels of at most this many cells (128^3) keep a dense cell -> row table (int32, 8 MB)
_CORNERS = tuple(itertools.product((0, 1), repeat=3))  # (bit_x, bit_y, bit_z) of the 8 corners of a cell


@dataclass(frozen=True)
class OctreeFeaturesConfig:
    base_lod: int = 2  # the coarsest level has 2^base_lod cells per axis
    n_lods: int = 5  # levels l = 0 .. n_lods-1 with r_l = 2^(base_lod + l) cells per axis over [-1, 1]^3
    feature_dim: int = 32  # F features stored per octree corner per level; the output has F columns
    feature_std: float = 0.01  # features initialised N(0, feature_std^2)
    dilation: int = 1  # a cell containing surface also marks its neighbours within this many cells, at every level

    def __post_init__(self) -> None:
        for key, minimum in (("base_lod", 0), ("n_lods", 1), ("feature_dim", 1), ("dilation", 0)):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
                raise NfieldError(f"OctreeFeaturesConfig: {key} must be an integer >= {minimum}, got {value!r}")
        std = self.feature_std
        if not (isinstance(std, (int, float)) and not isinstance(std, bool) and math.isfinite(std) and std >= 0):
            raise NfieldError(f"OctreeFeaturesConfig: feature_std must be a finite number >= 0, got {std!r}")
        finest = self.base_lod + self.n_lods - 1
        if finest > _MAX_LOD:
            raise NfieldError(
                f"OctreeFeaturesConfig: the finest level would have 2^{finest} cells per axis (at most 2^{_MAX_LOD}); "
                "lower base_lod or n_lods"
            )


def _describe(value: Any) -> str:
    """A value's shape if it is a tensor, else its type, for error messages."""
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _unit_box(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, 3) coordinates in [-1, 1] -> u in [0, 1]^3 of the given dtype, clamped."""
    return ((x.to(dtype) + 1.0) * 0.5).clamp(0.0, 1.0)


def _locate(u: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell (N, 3) int64 of each point u (N, 3) in [0, 1]^3 at r cells per axis, and its offset (N, 3) in it.

    The offset is differentiable w.r.t. u; the cell is not.
    """
    p = u * resolution
    cell = p.detach().floor().clamp(0, resolution - 1)
    return cell.long(), p - cell


def _keys(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Linear keys (M,) of integer coordinates (M, 3) on a size^3 lattice, x slowest."""
    return (coords[:, 0] * size + coords[:, 1]) * size + coords[:, 2]


def _coords(keys: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of `_keys`: (M,) keys -> (M, 3) integer coordinates."""
    return torch.stack([keys // (size * size), keys // size % size, keys % size], dim=1)


def _lookup(keys: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each query key (N,) sits in the sorted keys (K,): rows (N,) int64 and found (N,) bool.

    Rows of queries that are not found are arbitrary valid rows (0 when there are no keys at all).
    """
    if len(keys) == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    rows = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
    return rows, keys[rows] == query


def _unique_coords(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """The distinct rows of cell coordinates (M, 3) in [0, resolution), sorted by key: a 1-D unique
    of their keys (`torch.unique(coords, dim=0)` took 2.3 s on 2^20 points on a CPU)."""
    return _coords(torch.unique(_keys(coords, resolution)), resolution)


def _dilate(coords: torch.Tensor, radius: int, resolution: int) -> torch.Tensor:
    """Sorted unique keys of the cells within `radius` (Chebyshev) of the cells coords (M, 3), inside the grid."""
    keys = []
    for offset in itertools.product(range(-radius, radius + 1), repeat=3):
        neighbours = coords + torch.tensor(offset, device=coords.device)
        inside = ((neighbours >= 0) & (neighbours < resolution)).all(dim=1)
        keys.append(_keys(neighbours[inside], resolution))
    return torch.unique(torch.cat(keys))


def _dense_rows(cells: torch.Tensor, resolution: int) -> torch.Tensor:
    """(r^3,) int32: each cell's row in the sorted keys `cells`, -1 where unoccupied; empty (0,) for
    levels of more than `DENSE_LOOKUP_CELLS` cells."""
    if resolution**3 > DENSE_LOOKUP_CELLS:
        return torch.empty(0, dtype=torch.int32, device=cells.device)
    table = torch.full((resolution**3,), -1, dtype=torch.int32, device=cells.device)
    table[cells] = torch.arange(len(cells), dtype=torch.int32, device=cells.device)
    return table


def _free_levels(tables: list[torch.Tensor], base_lod: int) -> torch.Tensor:
    """(r_k^3,) int8 for level k = len(tables) - 1: -1 where the cell is occupied, else the coarsest
    level l <= k whose cell containing it is unoccupied; empty (0,) when a level has no dense table."""
    if any(len(table) == 0 for table in tables):
        return torch.empty(0, dtype=torch.int8, device=tables[0].device)
    finest = len(tables) - 1
    resolution = 2 ** (base_lod + finest)
    coords = _coords(torch.arange(resolution**3, device=tables[0].device), resolution)
    free = torch.where(tables[finest] >= 0, -1, finest).to(torch.int8)
    for level in reversed(range(finest)):  # coarser levels overwrite: the coarsest unoccupied one wins
        ancestors = _keys(coords >> (finest - level), 2 ** (base_lod + level))
        free = torch.where(tables[level][ancestors] < 0, level, free).to(torch.int8)
    return free


def _chebyshev_distances(table: torch.Tensor, resolution: int) -> torch.Tensor:
    """(r^3,) int8: each cell's Chebyshev distance, in cells, to the nearest occupied cell of a level
    (0 for occupied cells; capped at 127, and 127 everywhere when none is occupied), from its dense
    table; empty (0,) when the level has none. Grown one cell at a time by 3x3x3 max-pooling."""
    if len(table) == 0:
        return torch.empty(0, dtype=torch.int8, device=table.device)
    reached = (table >= 0).view(1, 1, resolution, resolution, resolution).float()
    distance = torch.full((resolution**3,), 127, dtype=torch.int8, device=table.device)
    for k in range(127):
        distance = torch.where((reached.view(-1) > 0) & (distance == 127), k, distance).to(torch.int8)
        if bool((reached > 0).all()) or not bool((reached > 0).any()):
            break
        reached = torch.nn.functional.max_pool3d(reached, 3, stride=1, padding=1)
    return distance


def _cell_corners(cells: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The corners of the cells with keys (M,) at r cells per axis.

    Returns:
        keys: (n_corners,) sorted unique corner keys on the (r + 1)^3 lattice.
        rows: (8, M) int64, the row in `keys` of each cell's 8 corners, in `_CORNERS` order.
    """
    coords = _coords(cells, resolution)
    corners = [_keys(coords + torch.tensor(bits, device=cells.device), resolution + 1) for bits in _CORNERS]
    keys, rows = torch.unique(torch.stack(corners), return_inverse=True)
    return keys, rows


class SparseOctree(nn.Module):
    """The occupied cells of a nested sparse octree over [-1, 1]^3 and their corners, level by level.

    Buffers (persistent, so they travel in the state dict), for each level l:
        cells_{l}: (n_cells_l,) int64 sorted unique keys of the occupied cells.
        corners_{l}: (n_corners_l,) int64 sorted unique keys of their corners.
    and, derived from them (not saved), cell_corners_{l}: (8, n_cells_l) int64, the rows in
    corners_{l} of each occupied cell's 8 corners, and cell_table_{l}: (r_l^3,) int32, every cell's
    row in cells_{l} or -1 (empty for levels of more than `DENSE_LOOKUP_CELLS` cells).
    See the module docstring for the keys. Build one with `from_points`; `empty` makes one to load
    a checkpoint into (loading resizes the buffers).

    Args:
        cfg: the levels (base_lod, n_lods); the other keys are not used here.
        cells: n_lods int64 tensors (n_cells_l,), each level's occupied cell keys, sorted and unique,
            nested (every cell's parent occupied) and either all empty or none.
    """

    def __init__(self, cfg: OctreeFeaturesConfig, cells: Sequence[torch.Tensor]):
        super().__init__()
        if len(cells) != cfg.n_lods:
            raise NfieldError(f"SparseOctree: expected cell keys for {cfg.n_lods} levels, got {len(cells)}")
        self.cfg = cfg
        for level, keys in enumerate(cells):
            r = 2 ** (cfg.base_lod + level)
            if not (keys.dtype == torch.int64 and keys.dim() == 1):
                raise NfieldError(f"SparseOctree: level {level}'s cell keys must be a 1-D int64 tensor")
            if len(keys) and not (keys[0] >= 0 and keys[-1] < r**3 and bool((keys[1:] > keys[:-1]).all())):
                raise NfieldError(f"SparseOctree: level {level}'s cell keys must be sorted, unique and in [0, {r}^3)")
            if level and not _lookup(cells[level - 1], _keys(_coords(keys, r) // 2, r // 2))[1].all():
                raise NfieldError(f"SparseOctree: level {level} has cells whose parent at level {level - 1} is unoccupied")
            self.register_buffer(f"cells_{level}", keys)
            corner_keys, corner_rows = _cell_corners(keys, r)
            self.register_buffer(f"corners_{level}", corner_keys)
            self.register_buffer(f"cell_corners_{level}", corner_rows, persistent=False)
            self.register_buffer(f"cell_table_{level}", _dense_rows(keys, r), persistent=False)
        self._build_free_levels()
        if 0 < sum(len(keys) == 0 for keys in cells) < len(cells):
            raise NfieldError("SparseOctree: some levels have no occupied cells; give every level cells, or none")

    @classmethod
    def from_points(cls, points: torch.Tensor, cfg: OctreeFeaturesConfig) -> SparseOctree:
        """The octree occupied around surface points.

        At every level, the cells containing a point and their neighbours within `cfg.dilation`
        cells are occupied; the parents of each level's cells are then occupied too (see the
        module docstring).

        Args:
            points: (N, 3) surface points in [-1, 1] (clamped into the box), N >= 1, all finite.
            cfg: the levels and the dilation.

        Returns:
            The octree, its buffers on the points' device.

        Example::

            >>> octree = SparseOctree.from_points(torch.rand(1000, 3) * 2 - 1, OctreeFeaturesConfig(n_lods=3))
            >>> octree.resolution(2)
            16
        """
        if not (isinstance(points, torch.Tensor) and points.dim() == 2 and points.shape[1] == 3):
            raise NfieldError(f"SparseOctree.from_points: points must be an (N, 3) tensor, got {_describe(points)}")
        if len(points) == 0:
            raise NfieldError("SparseOctree.from_points: no points given; the octree needs at least one surface point")
        if not torch.isfinite(points).all():
            raise NfieldError("SparseOctree.from_points: points contain NaN or infinite values")
        u = _unit_box(points.detach(), torch.promote_types(points.dtype, torch.float32))
        finest = 2 ** (cfg.base_lod + cfg.n_lods - 1)
        point_cells = _unique_coords(_locate(u, finest)[0], finest)
        fine_to_coarse = []
        for level in reversed(range(cfg.n_lods)):
            resolution = 2 ** (cfg.base_lod + level)
            fine_to_coarse.append(_dilate(point_cells, cfg.dilation, resolution))
            point_cells = _unique_coords(point_cells // 2, max(resolution // 2, 1))  # the cells one level coarser
        return cls(cfg, fine_to_coarse[::-1])

    @classmethod
    def empty(cls, cfg: OctreeFeaturesConfig) -> SparseOctree:
        """An octree with no occupied cells, to be filled by `load_state_dict`."""
        return cls(cfg, [torch.empty(0, dtype=torch.int64) for _ in range(cfg.n_lods)])

    @property
    def n_lods(self) -> int:
        return self.cfg.n_lods

    def resolution(self, level: int) -> int:
        """Cells per axis r_l = 2^(base_lod + level) of a level."""
        self._check_level(level)
        return 2 ** (self.cfg.base_lod + level)

    def n_cells(self, level: int) -> int:
        """Number of occupied cells of a level."""
        return len(self.cell_keys(level))

    def n_corners(self, level: int) -> int:
        """Number of distinct corners of a level's occupied cells (its feature table's rows)."""
        return len(self.corner_keys(level))

    def cell_keys(self, level: int) -> torch.Tensor:
        """(n_cells,) int64 sorted keys of a level's occupied cells."""
        self._check_level(level)
        return getattr(self, f"cells_{level}")

    def corner_keys(self, level: int) -> torch.Tensor:
        """(n_corners,) int64 sorted keys of a level's corners."""
        self._check_level(level)
        return getattr(self, f"corners_{level}")

    def cell_corner_rows(self, level: int) -> torch.Tensor:
        """(8, n_cells) int64: the rows in `corner_keys(level)` of each occupied cell's corners.

        Corner b = 4 b_x + 2 b_y + b_z sits at the cell's integer coordinates plus (b_x, b_y, b_z).
        """
        self._check_level(level)
        return getattr(self, f"cell_corners_{level}")

    def dense_table(self, level: int) -> torch.Tensor:
        """(r^3,) int32: each cell's row in `cell_keys(level)`, -1 where unoccupied; empty (0,) for
        levels of more than `DENSE_LOOKUP_CELLS` cells (those are searched)."""
        self._check_level(level)
        return getattr(self, f"cell_table_{level}")

    def _build_free_levels(self) -> None:
        """The `free_levels` and `cell_distances` tables of every level (non-persistent buffers,
        derived from the keys)."""
        tables = [self.dense_table(level) for level in range(self.n_lods)]
        for level in range(self.n_lods):
            table = _free_levels(tables[: level + 1], self.cfg.base_lod) if self.n_cells(0) else tables[level].to(torch.int8)
            self.register_buffer(f"free_levels_{level}", table, persistent=False)
            distances = _chebyshev_distances(tables[level], self.resolution(level))
            self.register_buffer(f"cell_distances_{level}", distances, persistent=False)

    def cell_distances(self, level: int) -> torch.Tensor:
        """(r^3,) int8 over the cells of `level`: each cell's Chebyshev distance in cells to the
        nearest occupied cell of the level (0 if occupied, at most 127); empty (0,) for levels
        without a dense table. A cell at distance k >= 1 sits in an empty cube of 2k - 1 cells a side."""
        self._check_level(level)
        return getattr(self, f"cell_distances_{level}")

    def free_levels(self, level: int) -> torch.Tensor:
        """(r^3,) int8 over the cells of `level`: -1 where occupied, else the coarsest level (0 ..
        `level`) whose cell containing it is unoccupied, the largest empty cell around it; empty (0,)
        when a level 0 .. `level` has no dense table. One lookup per point for empty-space skipping."""
        self._check_level(level)
        return getattr(self, f"free_levels_{level}")

    def find_cells(self, cells: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (N,) int64 in `cell_keys(level)` of integer cell coordinates (N, 3), and whether each
        is occupied (N,) bool (rows of unoccupied cells are arbitrary valid rows)."""
        r = self.resolution(level)
        keys = _keys(cells, r)
        table = self.dense_table(level)
        if len(table):
            found = table[keys]
            return found.clamp_min(0).long(), found >= 0
        return _lookup(self.cell_keys(level), keys)

    def cell_occupied(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """(N,) bool: whether the level's cell containing each point x (N, 3) is occupied (x clamped into the box)."""
        cell, _ = _locate(_unit_box(x.detach(), torch.promote_types(x.dtype, torch.float32)), self.resolution(level))
        return self.find_cells(cell, level)[1]

    def empty_cell_bounds(self, x: torch.Tensor, max_level: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The largest empty box of cells around each point, for skipping empty space.

        Two empty boxes hold a point p in an unoccupied cell c of level `max_level` = k: the
        coarsest unoccupied octree cell containing p (coarse to fine: the octree is nested), and
        the cube of level-k cells within d - 1 of c, d being c's Chebyshev distance in cells to the
        nearest occupied cell of level k (`cell_distances`), clipped to the grid; the one holding
        more cells is returned. Each is a
        table lookup (`free_levels`, `cell_distances`); levels without dense tables fall back to a
        search of every level, and the octree cell alone.

        Args:
            x: (N, 3) points.
            max_level: the finest level considered (default the finest); a field queried at LOD k
                has surface only in cells occupied at level k, so it skips with ``max_level=k``.

        Returns:
            lo: (N, 3) and hi: (N, 3), the box [lo, hi] in [-1, 1] coordinates, or the point's
                finest-level cell where `empty` is False (for points outside [-1, 1]^3: the finest
                cell of the point clamped into the box).
            empty: (N,) bool, True where x lies inside [-1, 1]^3 in an unoccupied cell of `max_level`.
        """
        x = x.detach()
        dtype = torch.promote_types(x.dtype, torch.float32)
        inside = (x.abs() <= 1).all(dim=1)
        finest = self.n_lods - 1 if max_level is None else max_level
        self._check_level(finest)
        u = _unit_box(x, dtype)
        resolution = self.resolution(finest)
        cell = _locate(u, resolution)[0]
        free_levels, distances = self.free_levels(finest), self.cell_distances(finest)
        if len(free_levels):  # one lookup each; no compaction, so no host synchronisation
            key = _keys(cell, resolution)
            free_level, distance = free_levels[key].long(), distances[key].long()
            empty = inside & (free_level >= 0)
        else:  # every level, searched; the octree cell alone
            free = torch.stack([~self.find_cells(_locate(u, self.resolution(lv))[0], lv)[1] for lv in range(finest + 1)])
            empty = inside & free[-1]
            free_level = finest + 1 - free.sum(dim=0)  # free levels are the finest ones
            distance = torch.ones_like(free_level)
        # in cells of level `finest`: the octree cell, 2^(finest - level) a side; the cube, 2 d - 1 a
        # side clipped to the grid; the one of more cells wins
        octree_side = torch.where(empty, torch.ldexp(torch.ones_like(free_level), finest - free_level.clamp_min(0)), 1)[:, None]
        octree_lo = torch.div(cell, octree_side, rounding_mode="floor") * octree_side
        reach = (distance - 1).clamp_min(0)[:, None]
        cube_lo, cube_hi = (cell - reach).clamp_min(0), (cell + reach + 1).clamp_max(resolution)
        cube = (empty & ((cube_hi - cube_lo).prod(dim=1) > octree_side[:, 0] ** 3))[:, None]
        lo_cells = torch.where(cube, cube_lo, octree_lo)
        hi_cells = torch.where(cube, cube_hi, octree_lo + octree_side)
        return lo_cells.to(dtype) / resolution * 2 - 1, hi_cells.to(dtype) / resolution * 2 - 1, empty

    def _check_level(self, level: int) -> None:
        if not (isinstance(level, int) and not isinstance(level, bool) and 0 <= level < self.n_lods):
            raise NfieldError(f"SparseOctree: level must be an integer in [0, {self.n_lods - 1}], got {level!r}")

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        for name, buffer in self.named_buffers(recurse=False):
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != buffer.shape:
                setattr(self, name, buffer.new_empty(incoming.shape))  # the checkpoint's octree replaces ours
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        for level in range(self.n_lods):
            corner_keys, corner_rows = _cell_corners(self.cell_keys(level), self.resolution(level))
            if not torch.equal(corner_keys, self.corner_keys(level)):
                error_msgs.append(f"{prefix}corners_{level} are not the corners of {prefix}cells_{level}")
            setattr(self, f"cell_corners_{level}", corner_rows)
            setattr(self, f"cell_table_{level}", _dense_rows(self.cell_keys(level), self.resolution(level)))
        self._build_free_levels()

    def extra_repr(self) -> str:
        counts = [self.n_cells(level) for level in range(self.n_lods)]
        return f"base_lod={self.cfg.base_lod}, n_lods={self.n_lods}, dilation={self.cfg.dilation}, n_cells={counts}"


class OctreeFeatures(nn.Module):
    """NGLOD's sparse-octree feature volume: the sum over levels of trilinearly blended corner features.

    Input (N, 3) in [-1, 1] (clamped into the box); output (N, feature_dim), float32 under autocast.
    Level l contributes the trilinear blend of the features at the 8 corners of the point's level-l
    cell if that cell is occupied, else zero (see the module docstring).

    Args:
        cfg: the levels, feature size and initialisation.
        octree: the occupied cells, e.g. `SparseOctree.from_points(surface_points, cfg)`; None makes
            an empty module whose octree and features come from `load_state_dict`.

    Parameters:
        features: a `ParameterList` of one (n_corners_l, feature_dim) table per level, initialised
            N(0, feature_std^2) from torch's default RNG.

    Example::

        >>> cfg = OctreeFeaturesConfig(n_lods=3, feature_dim=8)
        >>> encoding = OctreeFeatures(cfg, SparseOctree.from_points(torch.rand(500, 3) * 2 - 1, cfg))
        >>> encoding(torch.zeros(4, 3)).shape
        torch.Size([4, 8])
    """

    in_dim = 3

    def __init__(self, cfg: OctreeFeaturesConfig = OctreeFeaturesConfig(), octree: SparseOctree | None = None):
        super().__init__()
        if octree is None:
            octree = SparseOctree.empty(cfg)
        elif (octree.cfg.base_lod, octree.cfg.n_lods) != (cfg.base_lod, cfg.n_lods):
            raise NfieldError(
                f"OctreeFeatures: the octree has base_lod={octree.cfg.base_lod}, n_lods={octree.cfg.n_lods} "
                f"but the config asks for base_lod={cfg.base_lod}, n_lods={cfg.n_lods}; build both from one config"
            )
        self.cfg = cfg
        self.out_dim = cfg.feature_dim
        self.octree = octree
        device = octree.cell_keys(0).device
        self.features = nn.ParameterList(
            torch.randn(octree.n_corners(level), cfg.feature_dim, device=device) * cfg.feature_std for level in range(cfg.n_lods)
        )

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        """Features (N, feature_dim) of points x (N, 3): the sum of levels 0 .. lod (default: the finest)."""
        finest = self.cfg.n_lods - 1
        lod = finest if lod is None else lod
        if not (isinstance(lod, int) and not isinstance(lod, bool) and 0 <= lod <= finest):
            raise NfieldError(f"OctreeFeatures: lod must be an integer in [0, {finest}], got {lod!r}")
        if self.octree.n_cells(0) == 0:
            raise NfieldError("OctreeFeatures: the octree is empty; build it with SparseOctree.from_points or load a checkpoint")
        dtype = torch.promote_types(self.features[0].dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            u = _unit_box(x, dtype)
            total = self._level_features(u, 0)
            for level in range(1, lod + 1):
                total = total + self._level_features(u, level)
        return total

    def level_features(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Level `level`'s contribution alone, (N, feature_dim), at points x (N, 3); `forward` sums these."""
        self.octree._check_level(level)
        dtype = torch.promote_types(self.features[0].dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            return self._level_features(_unit_box(x, dtype), level)

    def _level_features(self, u: torch.Tensor, level: int) -> torch.Tensor:
        """One level's contribution (N, F) at points u (N, 3) in [0, 1]^3; zero rows in unoccupied cells."""
        return self._blend(u, level, self.features[level].to(u.dtype))[0]

    def _blend(self, u: torch.Tensor, level: int, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trilinear blend (N, F) of a per-corner `table` (n_corners_level, F) of `level` at points
        u (N, 3) in [0, 1]^3 (zero rows in unoccupied cells), and whether each cell is occupied (N,).

        The 8 corners' rows come in one (8 N, F) gather, blended with their trilinear weights
        (corner b = 4 b_x + 2 b_y + b_z weighs w_x[b_x] w_y[b_y] w_z[b_z])."""
        r = self.octree.resolution(level)
        cell, frac = _locate(u, r)
        cell_rows, occupied = self.octree.find_cells(cell, level)
        sides = torch.stack([1.0 - frac, frac]) * occupied.to(u.dtype)[:, None]  # (2, N, 3); unoccupied: all weights zero
        weights = sides[:, None, None, :, 0] * sides[None, :, None, :, 1] * sides[None, None, :, :, 2]  # (2, 2, 2, N)
        corner_rows = self.octree.cell_corner_rows(level).index_select(1, cell_rows)  # (8, N)
        features = table.index_select(0, corner_rows.reshape(-1)).view(len(_CORNERS), len(u), -1)  # (8, N, F)
        weights = weights.reshape(len(_CORNERS), len(u), 1)
        total = features[0] * weights[0]
        for corner in range(1, len(_CORNERS)):  # multiply-adds beat a batched product on the CPU (4.5 vs 9 ms at 60k points)
            total = total.addcmul(features[corner], weights[corner])
        return total, occupied

    def forward_summed(self, x: torch.Tensor, lod: int, summed: torch.Tensor) -> torch.Tensor:
        """`forward(x, lod)` from `summed_corner_features(lod)`: one level's gathers where x lies in an
        occupied cell of `lod` (the same values up to float32 rounding), `forward` itself elsewhere.

        Args:
            x: (N, 3) points; the result is differentiable w.r.t. x (not the features).
            lod: the level of detail.
            summed: (n_corners_lod, F) `summed_corner_features(lod)` of the current features.

        Returns:
            (N, F) features.
        """
        dtype = torch.promote_types(self.features[0].dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            total, occupied = self._blend(_unit_box(x, dtype), lod, summed.to(dtype))
        missing = torch.nonzero(~occupied).squeeze(1)
        if len(missing):  # unoccupied cells of lod: their coarser levels' contributions, the long way
            total = total.index_put((missing,), self.forward(x[missing], lod))
        return total

    @torch.no_grad()
    def summed_corner_features(self, lod: int) -> torch.Tensor:
        """Levels 0..lod summed onto the corners of level `lod`: (n_corners_lod, F).

        Inside an occupied cell of level `lod` every coarser level's contribution is one trilinear
        polynomial (the levels nest, and the cell's ancestors are occupied), so the sum over levels
        is trilinear there too: the trilinear blend of this table's 8 corner rows equals `forward`
        at every point of an occupied cell of `lod` (up to float32 rounding), at one level's cost.
        Built level by level: each level's own corner features plus the previous level's sums
        interpolated at its corners, through an occupied cell holding each corner (whose parent is
        occupied). `forward_summed` evaluates with it.
        """
        self.octree._check_level(lod)
        summed = self.features[0].detach().float()
        for level in range(1, lod + 1):
            resolution = self.octree.resolution(level)
            corner_rows = self.octree.cell_corner_rows(level)  # (8, n_cells)
            n_cells = corner_rows.shape[1]
            # one (cell, corner) pair owning each corner: any of them gives the same value
            pairs = torch.arange(8 * n_cells, device=corner_rows.device)
            owner = torch.empty(self.octree.n_corners(level), dtype=torch.long, device=corner_rows.device)
            owner[corner_rows.t().reshape(-1)] = pairs
            cell = _coords(self.octree.cell_keys(level)[owner // 8], resolution)
            bits = torch.tensor(_CORNERS, device=cell.device)[owner % 8]
            parent = cell // 2
            local = ((cell + bits) - 2 * parent).to(summed.dtype) * 0.5  # the corner in its parent cell: 0, 1/2 or 1
            parent_rows, _ = self.octree.find_cells(parent, level - 1)
            parent_corners = self.octree.cell_corner_rows(level - 1).index_select(1, parent_rows)  # (8, n_corners)
            sides = torch.stack([1.0 - local, local])  # (2, n_corners, 3)
            interpolated = torch.zeros(len(owner), summed.shape[1], dtype=summed.dtype, device=summed.device)
            for index, (bx, by, bz) in enumerate(_CORNERS):
                weight = sides[bx, :, 0] * sides[by, :, 1] * sides[bz, :, 2]
                interpolated.addcmul_(summed.index_select(0, parent_corners[index]), weight[:, None])
            summed = self.features[level].detach().float() + interpolated
        return summed

    def level_parameter_counts(self) -> list[int]:
        """Stored feature values n_corners_l * feature_dim of each level, coarse to fine."""
        return [table.numel() for table in self.features]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for level, table in enumerate(self.features):
            incoming = state_dict.get(f"{prefix}features.{level}")
            if isinstance(incoming, torch.Tensor) and incoming.shape != table.shape:
                # The checkpoint's octree replaces ours (SparseOctree resizes its buffers likewise).
                self.features[level] = nn.Parameter(table.new_empty(incoming.shape), requires_grad=table.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return (
            f"base_lod={self.cfg.base_lod}, n_lods={self.cfg.n_lods}, feature_dim={self.cfg.feature_dim}, "
            f"level_parameter_counts={self.level_parameter_counts()}"
        )
