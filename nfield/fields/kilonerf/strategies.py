"""How `KiloNeRFField` groups points by cell for its batched matrix products: the evaluation
strategies (``tiled``, ``padded``, ``segment``, ``gather``; see `KiloNeRFField`). Each takes the
points' (M,) cell indices and offers `pad` (per-point values into the strategy's layout), `linear`
(one `StackedLinear` layer, every cell with its own weights) and `unpad` (back to the points' order).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.fields.kilonerf.layers import StackedLinear

#: Cells per `grouped_mm` call of the ``segment`` strategy: it refuses 1024 or more groups on Hopper
#: GPUs, and a default grid has thousands of cells.
GROUPED_MM_MAX_GROUPS = 1000


class _Tiles:
    """Points grouped by cell in tiles of at most `tile` points (one tile per cell, as wide as the
    fullest cell, when `tile` is None): (M, F) values pad to (T, tile, F) and every layer is one
    `baddbmm` over the tiles with each tile's cell weights."""

    def __init__(self, cells: torch.Tensor, tile: int | None):
        order = torch.argsort(cells, stable=True)
        unique, counts = torch.unique_consecutive(cells[order], return_counts=True)
        width = int(counts.max()) if tile is None else tile
        tiles_per_cell = (counts + width - 1) // width
        first_tile = torch.cumsum(tiles_per_cell, 0) - tiles_per_cell
        starts = torch.cumsum(counts, 0) - counts
        arange = torch.arange(len(cells), device=cells.device)
        group_sorted = torch.repeat_interleave(torch.arange(len(unique), device=cells.device), counts)
        slot_sorted = arange - starts[group_sorted]  # the point's rank within its cell
        tile_sorted = first_tile[group_sorted] + slot_sorted // width
        self.tile_cells = torch.repeat_interleave(unique, tiles_per_cell)  # (T,) the cell of each tile
        self.width = width
        self.tile = torch.empty_like(tile_sorted).index_put_((order,), tile_sorted)
        self.slot = torch.empty_like(slot_sorted).index_put_((order,), slot_sorted % width)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """(M, F) per point -> (T, width, F), zeros in the padding."""
        padded = values.new_zeros(len(self.tile_cells), self.width, values.shape[-1])
        return padded.index_put((self.tile, self.slot), values)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(T, width, ...) -> (M, ...) back in the points' order."""
        return padded[self.tile, self.slot]

    def linear(self, layer: StackedLinear, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(layer.bias[self.tile_cells][:, None, :].to(h.dtype), h, layer.weight[self.tile_cells].to(h.dtype))


class _Segments:
    """Points sorted by cell, contiguous per cell, and every layer grouped matrix products over the
    cells' segments (`torch.nn.functional.grouped_mm`; in bfloat16 on CUDA, which it requires), one
    per run of at most `GROUPED_MM_MAX_GROUPS` consecutive cells."""

    def __init__(self, cells: torch.Tensor, tile: int | None):
        self.order = torch.argsort(cells, stable=True)
        self.point_cells = cells[self.order]
        self.cells, counts = torch.unique_consecutive(self.point_cells, return_counts=True)
        ends = torch.cumsum(counts, 0)  # (G,) one past each cell's last row
        self.inverse = torch.empty_like(self.order).index_put_((self.order,), torch.arange(len(cells), device=cells.device))
        # chunks of cells [g0, g1) own the sorted rows [r0, r1); offsets count from r0
        group_bounds = [*range(0, len(self.cells), GROUPED_MM_MAX_GROUPS), len(self.cells)]
        cuts = [g - 1 for g in group_bounds[1:-1]]  # the last cell of every chunk but the last
        row_bounds = [0, *(ends[cuts].tolist() if cuts else []), len(cells)]
        self.chunks = [
            (g0, g1, r0, r1, (ends[g0:g1] - r0).to(torch.int32))
            for g0, g1, r0, r1 in zip(group_bounds, group_bounds[1:], row_bounds, row_bounds[1:])
        ]

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        return values[self.order]

    def unpad(self, values: torch.Tensor) -> torch.Tensor:
        return values[self.inverse]

    def linear(self, layer: StackedLinear, h: torch.Tensor) -> torch.Tensor:
        dtype = torch.bfloat16 if h.is_cuda else h.dtype
        in_dim, out_dim = layer.weight.shape[1:]
        align = 8  # grouped_mm wants rows of a multiple of 16 bytes
        pad_in, pad_out = -in_dim % align, -out_dim % align
        weight = nn.functional.pad(layer.weight[self.cells], (0, pad_out, 0, pad_in)).to(dtype)
        a = nn.functional.pad(h, (0, pad_in)).to(dtype).contiguous()
        parts = [nn.functional.grouped_mm(a[r0:r1], weight[g0:g1], offs=offs) for g0, g1, r0, r1, offs in self.chunks]
        out = torch.cat(parts)[:, :out_dim]
        return out.to(h.dtype) + layer.bias[self.point_cells].to(h.dtype)


class _Gather:
    """Every point multiplied by its own cell's weights, gathered per point (chunked)."""

    CHUNK = 2**15  # points per gather: (CHUNK, in, out) weights at a time

    def __init__(self, cells: torch.Tensor, tile: int | None):
        self.cells = cells

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def unpad(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def linear(self, layer: StackedLinear, h: torch.Tensor) -> torch.Tensor:
        parts = [
            torch.baddbmm(layer.bias[c][:, None, :].to(p.dtype), p[:, None, :], layer.weight[c].to(p.dtype))[:, 0]
            for p, c in zip(h.split(self.CHUNK), self.cells.split(self.CHUNK))
        ]
        return torch.cat(parts)


class Grouping(Protocol):
    """Points grouped by cell: what every strategy offers (see the module's docstring)."""

    def pad(self, values: torch.Tensor) -> torch.Tensor: ...

    def unpad(self, values: torch.Tensor) -> torch.Tensor: ...

    def linear(self, layer: StackedLinear, h: torch.Tensor) -> torch.Tensor: ...


_GROUPINGS: dict[str, Callable[[torch.Tensor, int | None], Grouping]] = {
    "tiled": _Tiles,
    "padded": lambda cells, tile: _Tiles(cells, None),
    "segment": _Segments,
    "gather": _Gather,
}
#: How `KiloNeRFField` groups points for its batched matrix products (see `KiloNeRFField`).
STRATEGIES = tuple(_GROUPINGS)


def check_strategy(strategy: str) -> None:
    """`NfieldError` unless `strategy` is one of `STRATEGIES`."""
    if strategy not in _GROUPINGS:
        raise NfieldError(f"unknown KiloNeRF evaluation strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")


def group_by_cell(strategy: str, cells: torch.Tensor, tile: int) -> Grouping:
    """The points of (M,) cell indices `cells` (all >= 0) grouped by the strategy `strategy`, in tiles
    of `tile` points where it uses tiles."""
    check_strategy(strategy)
    return _GROUPINGS[strategy](cells, tile)
