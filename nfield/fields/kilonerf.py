"""KiloNeRF (Reiser et al. 2021): a regular grid of independent tiny MLPs, one per cell of the scene box.

Geometry. The box [lo, hi] is split into rx x ry x rz cells; the longest axis gets
`longest_axis_cells` cells and the others proportionally many (at least one), as in the paper.
A world point x lies in cell (i, j, k) = floor((x - lo) / (hi - lo) * r) (clamped to the last cell
on the upper faces), flattened as (i * ry + j) * rz + k; points outside the box belong to no cell
and have zero density. Each cell's network sees the point in the cell's local coordinates in
[-1, 1]^3, frequency-encoded.

Network per cell (the paper's): encoded position -> hidden -> hidden -> (density, feature), then
[feature, encoded direction] -> hidden -> RGB (sigmoid). Density uses instant-ngp's truncated
exponential. Every layer's parameters are stacked tensors (n_cells, in, out), never a list of
modules.

Evaluation groups the points by cell: sort by cell index, pad each occupied cell's points to the
largest group, and run every layer as one batched matrix product over the occupied cells only
(cells without points cost nothing). The result equals evaluating each cell's MLP on its points
(tested against a per-cell loop, values and gradients).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nfield.encodings.frequency import frequency_features
from nfield.errors import NfieldError
from nfield.fields.density import trunc_exp

#: Cells above this many would not fit a sensible amount of memory (4M cells x ~5k weights).
MAX_CELLS = 2**22


@dataclass(frozen=True)
class KiloNeRFConfig:
    longest_axis_cells: int = 16  # cells along the box's longest axis; the others proportional
    position_frequencies: int = 10  # octaves of the local-position encoding (input included)
    direction_frequencies: int = 4  # octaves of the direction encoding (input included)
    hidden: int = 32  # neurons of every hidden layer
    feature_dim: int = 32  # the feature passed from the position part to the colour part

    def __post_init__(self) -> None:
        for key in ("longest_axis_cells", "hidden", "feature_dim"):
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


class KiloNeRFField(nn.Module):
    """A grid of tiny radiance MLPs over the world box `aabb` (2, 3); the same interface as
    `RadianceField`: ``density(x) -> (M,)`` and ``forward(x, d) -> (rgb (M, 3), sigma (M,))``."""

    def __init__(self, cfg: KiloNeRFConfig, aabb: torch.Tensor):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise NfieldError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max, got {aabb.tolist()}")
        self.cfg = cfg
        self.register_buffer("aabb", aabb.clone())
        self.resolution = grid_resolution(cfg.longest_axis_cells, aabb)
        self.n_cells = math.prod(self.resolution)
        position_dim = 3 * (1 + 2 * cfg.position_frequencies)
        self.direction_dim = 3 * (1 + 2 * cfg.direction_frequencies)
        n, h = self.n_cells, cfg.hidden
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
        x = x.float()
        cells = self.cell_index(x)
        rgb = x.new_zeros(len(x), 3)
        sigma = x.new_zeros(len(x))
        inside = torch.nonzero(cells >= 0).squeeze(1)
        if len(inside) == 0:
            return rgb, sigma
        groups = _CellGroups(cells[inside])
        local = self.local_coordinates(x[inside], cells[inside])
        encoded = torch.cat([local, frequency_features(local, self.cfg.position_frequencies)], dim=-1)
        h = groups.pad(encoded)
        for layer in self.position_layers[:-1]:
            h = torch.relu(layer(h, groups.cells))
        out = self.position_layers[-1](h, groups.cells)  # (C, P, 1 + feature_dim)
        sigma = sigma.index_put((inside,), trunc_exp(groups.unpad(out[..., 0])))
        if d is None:
            return rgb, sigma
        directions = d[inside].float()
        encoded_directions = torch.cat([directions, frequency_features(directions, self.cfg.direction_frequencies)], dim=-1)
        h = torch.cat([out[..., 1:], groups.pad(encoded_directions)], dim=-1)
        h = torch.relu(self.color_layers[0](h, groups.cells))
        colour = torch.sigmoid(self.color_layers[1](h, groups.cells))
        return rgb.index_put((inside,), groups.unpad(colour)), sigma

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _CellGroups:
    """Points grouped by cell: the occupied cells (C,), and for every point its group and its slot
    within the group, so (M, F) values pad to (C, P, F) and back."""

    def __init__(self, cells: torch.Tensor):
        order = torch.argsort(cells, stable=True)
        unique, counts = torch.unique_consecutive(cells[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group_sorted = torch.repeat_interleave(torch.arange(len(unique), device=cells.device), counts)
        slot_sorted = torch.arange(len(cells), device=cells.device) - starts[group_sorted]
        self.cells = unique
        self.width = int(counts.max())
        self.group = torch.empty_like(group_sorted).index_put_((order,), group_sorted)
        self.slot = torch.empty_like(slot_sorted).index_put_((order,), slot_sorted)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """(M, F) per point -> (C, P, F), zeros in the padding."""
        padded = values.new_zeros(len(self.cells), self.width, values.shape[-1])
        return padded.index_put((self.group, self.slot), values)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(C, P, ...) -> (M, ...) back in the points' order."""
        return padded[self.group, self.slot]


def occupied_cells(field: KiloNeRFField, occupied_at, samples_per_axis: int = 4) -> torch.Tensor:
    """(n_cells,) bool: the KiloNeRF cells in which `occupied_at` ((M, 3) world points -> (M,) bool,
    e.g. an occupancy grid's) is true at any of a samples_per_axis^3 lattice of points."""
    device = field.aabb.device
    r = torch.tensor(field.resolution, device=device)
    cells = torch.arange(field.n_cells, device=device)
    ijk = torch.stack([cells // (r[1] * r[2]), (cells // r[2]) % r[1], cells % r[2]], dim=-1).float()  # (C, 3)
    offsets = (torch.arange(samples_per_axis, device=device) + 0.5) / samples_per_axis
    lattice = torch.stack(torch.meshgrid(offsets, offsets, offsets, indexing="ij"), dim=-1).reshape(-1, 3)  # (S, 3)
    u = (ijk[:, None, :] + lattice[None]) / r  # (C, S, 3) in [0, 1]
    points = field.aabb[0] + u * (field.aabb[1] - field.aabb[0])
    return occupied_at(points.reshape(-1, 3)).reshape(field.n_cells, -1).any(dim=1)


def save_kilonerf(path, field: KiloNeRFField, occupied: torch.Tensor | None = None) -> None:
    """Write `field` as safetensors: every stacked parameter under its module name, the (n_cells,)
    `occupied_cells` mask when given, and a JSON header (format, grid resolution, box, layer sizes)
    in the file's metadata, so other renderers can load it."""
    from safetensors.torch import save_file

    tensors = {name: value.detach().cpu().contiguous() for name, value in field.state_dict().items()}
    if occupied is not None:
        tensors["occupied_cells"] = occupied.detach().cpu().to(torch.uint8)
    header = {
        "format": "nfield-kilonerf-1",
        "resolution": list(field.resolution),
        "aabb": field.aabb.tolist(),
        "config": dataclasses.asdict(field.cfg),
        "layers": {name: list(tensor.shape) for name, tensor in tensors.items() if name.endswith("weight")},
    }
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(temporary), metadata={"kilonerf": json.dumps(header)})
    os.replace(temporary, path)  # readers never see a half-written file


def load_kilonerf(path) -> tuple[KiloNeRFField, torch.Tensor | None]:
    """The field written by `save_kilonerf` (on the CPU) and its occupied-cells mask (or None)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["kilonerf"])
        tensors = load_file(str(path))
        field = KiloNeRFField(KiloNeRFConfig(**header["config"]), torch.tensor(header["aabb"]))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise NfieldError(
            f"{path}: not a KiloNeRF export ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    occupied = tensors.pop("occupied_cells", None)
    field.load_state_dict(tensors)
    return field, None if occupied is None else occupied.bool()
