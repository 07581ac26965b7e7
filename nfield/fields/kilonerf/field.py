"""KiloNeRF (Reiser et al. 2021): a regular grid of independent tiny MLPs, one per cell of the scene box.

Geometry. The box [lo, hi] is split into rx x ry x rz cells; the longest axis gets
`longest_axis_cells` cells and the others proportionally many (at least one), as in the paper.
A world point x lies in cell (i, j, k) = floor((x - lo) / (hi - lo) * r) (clamped to the last cell
on the upper faces), flattened as (i * ry + j) * rz + k; points outside the box belong to no cell
and have zero density. Each cell's network sees the point in the cell's local coordinates in
[-1, 1]^3, frequency-encoded.

Network per cell (the paper's), every hidden layer `n_neurons` wide: encoded position -> hidden ->
hidden -> (density, feature), then [feature, encoded direction] -> hidden -> RGB (sigmoid). Density uses instant-ngp's truncated
exponential. Every layer's parameters are stacked tensors (n_cells, in, out), never a list of
modules.

Evaluation groups the points by cell: sort by cell index, cut each occupied cell's points into
tiles of a fixed width, and run every layer as one batched matrix product over the tiles (cells
without points cost nothing). Other grouping strategies are selectable for comparison (see
`KiloNeRFField`). Every strategy equals evaluating each cell's MLP on its points (tested against a
per-cell loop, values and gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nfield.encodings.frequency import frequency_features
from nfield.errors import NfieldError
from nfield.fields.density import trunc_exp
from nfield.fields.kilonerf.layers import StackedLinear
from nfield.fields.kilonerf.strategies import check_strategy, group_by_cell
from nfield.fields.registry import FIELDS
from nfield.render.occupancy import OccupancyGrid

#: Cells above this many would not fit a sensible amount of memory (4M cells x ~5k weights).
MAX_CELLS = 2**22
#: Points per batched evaluation without autograd (rendering), so memory stays bounded (about 64 MB
#: of activations per layer) however many samples a chunk of rays produces.
INFERENCE_CHUNK = 2**18


@dataclass(frozen=True)
class KiloNeRFConfig:
    longest_axis_cells: int = 16  # cells along the box's longest axis; the others proportional
    position_frequencies: int = 10  # octaves of the local-position encoding (input included)
    direction_frequencies: int = 4  # octaves of the direction encoding (input included)
    n_neurons: int = 32  # neurons of every hidden layer (config.json before 0.3: "hidden")
    feature_dim: int = 32  # the feature passed from the position part to the colour part

    def __post_init__(self) -> None:
        for key in ("longest_axis_cells", "n_neurons", "feature_dim"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise NfieldError(f"KiloNeRFConfig.{key} must be a positive integer, got {value!r}")
        for key in ("position_frequencies", "direction_frequencies"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise NfieldError(f"KiloNeRFConfig.{key} must be a non-negative integer, got {value!r}")


def grid_resolution(longest_axis_cells: int, aabb: torch.Tensor) -> tuple[int, int, int]:
    """(rx, ry, rz): `longest_axis_cells` along the box's longest side, the others in proportion."""
    extent = (aabb[1] - aabb[0]).tolist()
    longest = max(extent)
    resolution = tuple(max(1, round(longest_axis_cells * side / longest)) for side in extent)
    n_cells = math.prod(resolution)
    if n_cells > MAX_CELLS:
        raise NfieldError(
            f"a {'x'.join(map(str, resolution))} KiloNeRF grid has {n_cells:,} cells; at most {MAX_CELLS:,} fit "
            f"(longest_axis_cells {int(longest_axis_cells * (MAX_CELLS / n_cells) ** (1 / 3))} or fewer for this box)"
        )
    return resolution


@FIELDS.register("KiloNeRF", KiloNeRFConfig, renamed={"hidden": "n_neurons"})  # "hidden" before 0.3
class KiloNeRFField(nn.Module):
    """A grid of tiny radiance MLPs over the world box `aabb` (2, 3); the same interface as
    `RadianceField`: ``density(x) -> (M,)`` and ``forward(x, d) -> (rgb (M, 3), sigma (M,))``.

    `strategy` picks how points are grouped for the batched products (all give the same values
    and gradients; `scripts/bench_kilonerf.py` measures them):

    - ``tiled`` (default): sort by cell, cut each cell's points into tiles of `tile` points, one
      `baddbmm` over the tiles. Padding is under one tile per cell whatever the distribution.
    - ``padded``: sort by cell, pad every cell to the fullest one, one `baddbmm` over the cells.
      Cheap for even distributions; memory grows with (occupied cells x fullest cell).
    - ``segment``: sort by cell, grouped matrix products over the contiguous segments (at most
      `GROUPED_MM_MAX_GROUPS` cells per product).
    - ``gather``: every point multiplied by a per-point copy of its cell's weights.
    """

    def __init__(self, cfg: KiloNeRFConfig, aabb: torch.Tensor, strategy: str = "tiled", tile: int = 128):
        super().__init__()
        check_strategy(strategy)
        if not (isinstance(tile, int) and tile >= 1):
            raise NfieldError(f"KiloNeRF tile must be a positive integer, got {tile!r}")
        self.strategy, self.tile = strategy, tile
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise NfieldError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max, got {aabb.tolist()}")
        self.cfg = cfg
        self.register_buffer("aabb", aabb.clone())
        self.resolution = grid_resolution(cfg.longest_axis_cells, aabb)
        self.n_cells = math.prod(self.resolution)
        position_dim = 3 * (1 + 2 * cfg.position_frequencies)
        self.direction_dim = 3 * (1 + 2 * cfg.direction_frequencies)
        n, h = self.n_cells, cfg.n_neurons
        self.position_layers = nn.ModuleList(
            [StackedLinear(n, position_dim, h), StackedLinear(n, h, h), StackedLinear(n, h, 1 + cfg.feature_dim)]
        )
        self.color_layers = nn.ModuleList([StackedLinear(n, cfg.feature_dim + self.direction_dim, h), StackedLinear(n, h, 3)])

    # --- geometry ---------------------------------------------------------------------------------
    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """(M,) int64 flat cell index of each world point x (M, 3); -1 outside the box."""
        r = torch.tensor(self.resolution, device=x.device)
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])  # (M, 3) in [0, 1] inside the box
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        ijk = torch.minimum((u.clamp(0, 1) * r).floor().long(), r - 1)
        flat = (ijk[:, 0] * r[1] + ijk[:, 1]) * r[2] + ijk[:, 2]
        return torch.where(inside, flat, torch.full_like(flat, -1))

    def local_coordinates(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(M, 3) coordinates in [-1, 1]^3 of points x (M, 3) within their cells `cells` (M,) (>= 0)."""
        r = torch.tensor(self.resolution, device=x.device)
        ijk = torch.stack([cells // (r[1] * r[2]), (cells // r[2]) % r[1], cells % r[2]], dim=-1)
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * r - ijk  # in [0, 1] within the cell
        return u * 2 - 1

    # --- evaluation -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (M, 3) in [0, 1] and density (M,) >= 0 at world points x (M, 3) seen along unit
        directions d (M, 3); zero outside the box."""
        return self._evaluate(x, d)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """(M,) density at world points x (M, 3); zero outside the box."""
        return self._evaluate(x, None)[1]

    def _evaluate(self, x: torch.Tensor, d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_grad_enabled() and len(x) > INFERENCE_CHUNK:  # rendering: bounded memory per call
            parts = [
                self._evaluate_points(x[i : i + INFERENCE_CHUNK], None if d is None else d[i : i + INFERENCE_CHUNK])
                for i in range(0, len(x), INFERENCE_CHUNK)
            ]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._evaluate_points(x, d)

    def _evaluate_points(self, x: torch.Tensor, d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        cells = self.cell_index(x)
        rgb = x.new_zeros(len(x), 3)
        sigma = x.new_zeros(len(x))
        inside = torch.nonzero(cells >= 0).squeeze(1)
        if len(inside) == 0:
            return rgb, sigma
        groups = group_by_cell(self.strategy, cells[inside], self.tile)
        local = self.local_coordinates(x[inside], cells[inside])
        h = groups.pad(torch.cat([local, frequency_features(local, self.cfg.position_frequencies)], dim=-1))
        for layer in self.position_layers[:-1]:
            h = torch.relu(groups.linear(layer, h))
        out = groups.linear(self.position_layers[-1], h)  # (..., 1 + feature_dim)
        sigma = sigma.index_put((inside,), trunc_exp(groups.unpad(out[..., 0]).float()))
        if d is None:
            return rgb, sigma
        directions = d[inside].float()
        encoded_directions = torch.cat([directions, frequency_features(directions, self.cfg.direction_frequencies)], dim=-1)
        h = torch.cat([out[..., 1:], groups.pad(encoded_directions).to(out.dtype)], dim=-1)
        h = torch.relu(groups.linear(self.color_layers[0], h))
        colour = torch.sigmoid(groups.linear(self.color_layers[1], h).float())
        return rgb.index_put((inside,), groups.unpad(colour)), sigma

    def last_layers(self) -> list[StackedLinear]:
        """The output layers (density + feature, and RGB): the paper's L2-regularised layers."""
        return [self.position_layers[-1], self.color_layers[-1]]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, cells={self.n_cells}, strategy={self.strategy}, tile={self.tile}"


def cell_corners(field: KiloNeRFField) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_cells, 3) min corners and (3,) size of the field's cells, in world units."""
    device = field.aabb.device
    r = torch.tensor(field.resolution, device=device)
    cells = torch.arange(field.n_cells, device=device)
    ijk = torch.stack([cells // (r[1] * r[2]), (cells // r[2]) % r[1], cells % r[2]], dim=-1).float()
    size = (field.aabb[1] - field.aabb[0]) / r
    return field.aabb[0] + ijk * size, size


def occupied_cells(field: KiloNeRFField, grid: OccupancyGrid) -> torch.Tensor:
    """(n_cells,) bool: the KiloNeRF cells that overlap an occupied cell of the occupancy `grid`
    (any level), i.e. every cell the renderer can ever evaluate; the others need no training.

    Each occupied grid cell is probed on a lattice spaced no wider than a KiloNeRF cell (inset
    from its faces, so a cell merely touching another does not count), which hits every KiloNeRF
    cell the box overlaps.
    """
    levels, indices = torch.nonzero(grid.occupied, as_tuple=True)
    result = torch.zeros(field.n_cells, dtype=torch.bool, device=field.aabb.device)
    if len(indices) == 0:
        return result
    corners, size = grid.cell_corners(levels, indices)  # (G, 3), (G, 3)
    kilo_size = (field.aabb[1] - field.aabb[0]) / torch.tensor(field.resolution, device=field.aabb.device)
    per_axis = int(torch.ceil(size.max(dim=0).values / kilo_size).max()) + 1
    fractions = torch.linspace(1e-4, 1 - 1e-4, per_axis, device=corners.device)
    lattice = torch.stack(torch.meshgrid(fractions, fractions, fractions, indexing="ij"), dim=-1).reshape(-1, 3)
    for part in torch.arange(len(indices), device=corners.device).split(max(1, 2**20 // len(lattice))):
        points = corners[part, None] + lattice[None] * size[part, None]
        cells = field.cell_index(points.reshape(-1, 3))
        result[cells[cells >= 0]] = True
    return result


def occupied_bounds(grid: OccupancyGrid) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(3,) min and (3,) max corner of the occupied cells of `grid` (None when none is occupied)."""
    levels, indices = torch.nonzero(grid.occupied, as_tuple=True)
    if len(indices) == 0:
        return None
    corners, size = grid.cell_corners(levels, indices)
    return corners.amin(dim=0), (corners + size).amax(dim=0)
