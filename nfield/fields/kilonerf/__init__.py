"""KiloNeRF (Reiser et al. 2021): a regular grid of independent tiny MLPs, one per cell of the scene box.

- `field`: the configuration, the grid of cells and the field (`KiloNeRFField`), and the cell helpers
  (`cell_corners`, and `occupied_cells` / `occupied_bounds` against an occupancy grid).
- `layers`: `StackedLinear`, one independent linear layer per cell in stacked tensors.
- `strategies`: how the field groups points by cell for its batched matrix products.
- `export`: the portable safetensors export (`save_kilonerf`, `load_kilonerf`).
"""

from nfield.fields.kilonerf.export import load_kilonerf, save_kilonerf
from nfield.fields.kilonerf.field import (
    MAX_CELLS,
    KiloNeRFConfig,
    KiloNeRFField,
    cell_corners,
    grid_resolution,
    occupied_bounds,
    occupied_cells,
)
from nfield.fields.kilonerf.layers import StackedLinear
from nfield.fields.kilonerf.strategies import STRATEGIES

__all__ = [
    "MAX_CELLS",
    "STRATEGIES",
    "KiloNeRFConfig",
    "KiloNeRFField",
    "StackedLinear",
    "cell_corners",
    "grid_resolution",
    "load_kilonerf",
    "occupied_bounds",
    "occupied_cells",
    "save_kilonerf",
]
