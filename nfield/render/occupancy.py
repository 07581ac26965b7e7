"""instant-ngp's occupancy grid: which cells of a scene's box hold density, so rays skip the rest.

`OccupancyGrid` keeps, per cell of one or more nested resolution^3 grids (cascades over the box
scaled by 2^l), a running estimate of the largest density in the cell, refreshed during training
from the field's density (`OccupancyGrid.update`), and whether the cell is occupied. Its `march`
samples rays with instant-ngp's fixed steps: intervals [t_k, t_k+1] of length step_size (world
units, or units of the rays' direction lengths), kept where their midpoints lie in occupied cells,
optionally dropped behind the point where a ray becomes opaque. The samples come packed
(`nfield.render.rays.RaySamples`). With backend ``auto`` on CUDA the steps are walked by the Triton
kernel of `nfield.kernels.ray_marching`; elsewhere by the PyTorch code here, in chunks of `_CHUNK`.

Example::

    >>> import torch
    >>> grid = OccupancyGrid(OccupancyGridConfig(resolution=4), torch.tensor([[0.0] * 3, [1.0] * 3]))
    >>> grid.occupied[0, 0] = True  # the cell [0, 1/4]^3
    >>> o, d = torch.tensor([[0.1, 0.1, -1.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    >>> grid.march(o, d, torch.zeros(1), torch.full((1,), 3.0), 0.125).t_starts.tolist()  # through that cell
    [1.0, 1.125]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nfield.backends import choose_backend, record_backend
from nfield.distributed import all_reduce_
from nfield.errors import NfieldError
from nfield.kernels import tensor_versions
from nfield.render.rays import RaySamples, ray_box_intersection
from nfield.render.volume import render_weights

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""(M, 3) points -> (M,) volume densities (an (M, 1) output is accepted too)."""

_CHUNK = 2**20  # the most points an occupancy grid evaluates or marches at a time


@dataclass(frozen=True)
class OccupancyGridConfig:
    resolution: int = 128  # cells per side of each level
    n_levels: int = 1  # instant-ngp cascades: level l covers the aabb scaled by 2^l about its centre
    ema_decay: float = 0.95  # per update, the decay of a cell's density estimate
    threshold: float = (
        0.01  # optical thickness (density x the grid's step_size) above which a cell is occupied (or the mean's, if lower)
    )
    update_every: int = 16  # training steps between updates
    warmup_steps: int = 256  # steps during which every cell is re-evaluated at each update
    frozen: bool = False  # keep the estimates as loaded (e.g. a teacher's grid): update does nothing


class OccupancyGrid(nn.Module):
    """instant-ngp's occupancy grid: which cells of (cascaded) boxes hold density, to skip the rest.

    Level l of `n_levels` is a resolution^3 grid over the aabb scaled by 2^l about its centre (the
    levels nest; a point belongs to the finest level containing it). Each cell keeps a running
    estimate of the largest density in it, refreshed by `update` from `density_fn`; a cell is
    occupied when its optical thickness over one march step, estimate x `step_size`, exceeds
    min(threshold, the mean's) (instant-ngp's rule: with its threshold 0.01, a cell whose samples
    would each absorb under 1% of the light is skipped). Cells are indexed
    x * R^2 + y * R + z within a level.

    The estimates and the occupancy are persistent buffers, so checkpoints restore them.

    Attributes:
        density: (L, R^3) float32 density estimates.
        occupied: (L, R^3) bool occupancy.
        aabb: (2, 3) the level-0 box.
        density_fn: (M, 3) points -> (M,) densities, the field the grid watches (e.g. its
            ``density`` method), given at construction; never registered as a submodule.
        step_size: the march step the renderer uses (world units, default 1: the threshold then
            applies to the density itself), given at construction with `density_fn`.

    Example::

        >>> density = lambda points: 10.0 * (points.norm(dim=-1) < 0.5)
        >>> grid = OccupancyGrid(OccupancyGridConfig(resolution=16), torch.tensor([[-1.0] * 3, [1.0] * 3]), density)
        >>> grid.update(step=0, total=1000)
        >>> grid.occupied_at(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]])).tolist()
        [True, False]
    """

    density: torch.Tensor
    occupied: torch.Tensor
    aabb: torch.Tensor

    def __init__(self, cfg: OccupancyGridConfig, aabb: torch.Tensor, density_fn: DensityFn | None = None, step_size: float = 1.0):
        super().__init__()
        if not (isinstance(cfg.resolution, int) and cfg.resolution >= 1 and isinstance(cfg.n_levels, int) and cfg.n_levels >= 1):
            raise NfieldError(
                f"OccupancyGrid: resolution and n_levels must be positive integers, got {cfg.resolution!r}, {cfg.n_levels!r}"
            )
        if not 0 <= cfg.ema_decay <= 1:
            raise NfieldError(f"OccupancyGrid: ema_decay must lie in [0, 1], got {cfg.ema_decay!r}")
        if not (isinstance(cfg.update_every, int) and cfg.update_every >= 1):
            raise NfieldError(f"OccupancyGrid: update_every must be a positive integer, got {cfg.update_every!r}")
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise NfieldError(f"OccupancyGrid: aabb must be (2, 3) min and max corners with min < max, got {aabb.tolist()}")
        if not step_size > 0:
            raise NfieldError(f"OccupancyGrid: step_size must be positive, got {step_size!r}")
        self.cfg = cfg
        self.density_fn: DensityFn | None = density_fn
        self.step_size = float(step_size)
        n_cells = cfg.resolution**3
        self.register_buffer("aabb", aabb.clone())
        self.register_buffer("density", torch.zeros(cfg.n_levels, n_cells))
        self.register_buffer("occupied", torch.zeros(cfg.n_levels, n_cells, dtype=torch.bool))

    def __setattr__(self, name: str, value) -> None:
        if name == "density_fn":  # a plain attribute even when it is a module, so its weights stay out of ours
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def extra_repr(self) -> str:
        return (
            f"resolution={self.cfg.resolution}, n_levels={self.cfg.n_levels}, occupied={self.occupied.float().mean().item():.3f}"
        )

    def _level_boxes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, 3) min corners and (L, 3) sizes of the levels' boxes."""
        centre, half = self.aabb.mean(dim=0), 0.5 * (self.aabb[1] - self.aabb[0])
        scale = 2.0 ** torch.arange(self.cfg.n_levels, device=self.aabb.device, dtype=self.aabb.dtype)[:, None]
        return centre - scale * half, 2 * scale * half

    def cell_corners(self, levels: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 3) min corners and (M, 3) sizes of cells given by (M,) levels and (M,) indices in their level."""
        resolution = self.cfg.resolution
        xyz = torch.stack([cells // resolution**2, cells // resolution % resolution, cells % resolution], dim=1)
        lo, size = self._level_boxes()
        cell_size = size[levels] / resolution
        return lo[levels] + xyz * cell_size, cell_size

    @torch.no_grad()
    def update(self, step: int, total: int) -> None:
        """Refresh the density estimates, every `update_every` steps (else, or when `frozen`, do nothing).

        At an update, one point per chosen cell, uniformly at random inside it, is evaluated with
        `density_fn` (no autograd): all cells during the first `warmup_steps` steps, afterwards a
        random quarter of each level's cells (drawn with replacement) plus all occupied cells. Then
        density = max(density * ema_decay, new) for every cell (new = 0 where not evaluated, the
        largest draw where a cell was drawn twice) and occupied = density x step_size >
        min(threshold, mean density x step_size).

        Args:
            step: the trainer's step, from 0.
            total: the run's total steps (unused: the schedule depends on the step only).
        """
        if self.cfg.frozen or step % self.cfg.update_every:
            return
        if self.density_fn is None:
            raise NfieldError("OccupancyGrid.update: the grid has no density_fn (points (M, 3) -> densities (M,)) to watch")
        n_cells = self.density.shape[1]
        fresh = torch.zeros_like(self.density)
        for level in range(self.cfg.n_levels):
            if step < self.cfg.warmup_steps:
                cells = torch.arange(n_cells, device=self.density.device)
            else:
                drawn = torch.randint(n_cells, (n_cells // 4,), device=self.density.device)
                cells = torch.cat([drawn, torch.nonzero(self.occupied[level]).squeeze(1)])
            for part in cells.split(_CHUNK):
                corners, cell_size = self.cell_corners(torch.full_like(part, level), part)
                densities = self.density_fn(torch.addcmul(corners, torch.rand_like(corners), cell_size))
                if not isinstance(densities, torch.Tensor) or densities.numel() != len(part):
                    raise NfieldError(f"OccupancyGrid: density_fn must return one density per point, for {len(part)} points")
                fresh[level].scatter_reduce_(0, part, densities.reshape(-1).float(), reduce="amax")
        all_reduce_(fresh, "max")  # data-parallel ranks: every rank's probes count, and the grids stay equal
        self.density.copy_(torch.maximum(self.density * self.cfg.ema_decay, fresh))
        thickness = self.density * self.step_size
        self.occupied.copy_(thickness > thickness.mean().clamp_max(self.cfg.threshold))

    def occupied_at(self, x: torch.Tensor) -> torch.Tensor:
        """Whether points lie in occupied cells (of the finest level containing each).

        Args:
            x: (M, 3) points.

        Returns:
            (M,) bool; False outside the coarsest level's box.
        """
        resolution = self.cfg.resolution
        centre, half = self.aabb.mean(dim=0), 0.5 * (self.aabb[1] - self.aabb[0])
        unit = (x.to(self.aabb.dtype) - centre) / half  # level l's box is [-2^l, 2^l]^3 here
        radius = unit.abs().amax(dim=-1)
        if self.cfg.n_levels == 1:
            level, inside = torch.zeros_like(radius, dtype=torch.long), radius <= 1.0
        else:
            level = torch.log2(radius.clamp_min(1.0)).ceil().long()
            inside = level < self.cfg.n_levels
            level = level.clamp_max(self.cfg.n_levels - 1)
            unit = unit / torch.exp2(level.to(unit.dtype))[:, None]
        xyz = ((unit + 1.0) * (0.5 * resolution)).long().clamp(0, resolution - 1)
        cell = ((level * resolution + xyz[:, 0]) * resolution + xyz[:, 1]) * resolution + xyz[:, 2]
        return self.occupied.view(-1)[cell] & inside

    @torch.no_grad()
    def march(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        step_size: float,
        sigma_fn: DensityFn | None = None,
        early_stop_eps: float = 1e-4,
        alpha_threshold: float = 0.0,
        backend: str = "auto",
    ) -> RaySamples:
        """instant-ngp's ray marching: fixed steps along each ray, keeping those in occupied cells.

        Each ray's [near, far] is cut into intervals [t_k, t_k+1], t_k = near + k * step_size (the
        last one ending at far), and an interval is kept when its midpoint lies in an occupied cell.
        Only the steps that can reach the bounding box of the occupied cells are visited. With
        `sigma_fn`, the kept intervals' densities (evaluated without autograd) also drop those
        behind the point where the ray's transmittance falls below `early_stop_eps` and those whose
        alpha is below `alpha_threshold`. Work is done `_CHUNK` intervals at a time, so memory
        stays bounded. With backend ``auto`` on CUDA (or ``triton``) the steps are walked by the
        Triton kernel of `nfield.kernels.ray_marching`, which writes the same packed samples in one
        pass over all rays, without the dense (rays x steps) tensors and with one host
        synchronisation (the sample count).

        Args:
            origins: (N, 3) ray origins.
            directions: (N, 3) ray directions (t, and step_size, are in units of their length).
            near: (N,) where marching starts along each ray.
            far: (N,) where it stops.
            step_size: the interval length.
            sigma_fn: optional (M, 3) points -> (M,) densities, for early termination.
            early_stop_eps: transmittance below which a ray stops (with sigma_fn).
            alpha_threshold: alpha below which an interval is dropped (with sigma_fn).
            backend: auto, torch or triton (`nfield.backends`); triton needs float32 rays.

        Returns:
            `RaySamples` of the kept intervals.

        Example::

            >>> grid = OccupancyGrid(OccupancyGridConfig(resolution=4), torch.tensor([[0.0] * 3, [1.0] * 3]))
            >>> grid.occupied[0, 0] = True  # the cell [0, 1/4]^3
            >>> o, d = torch.tensor([[0.1, 0.1, -1.0]]), torch.tensor([[0.0, 0.0, 1.0]])
            >>> grid.march(o, d, torch.zeros(1), torch.full((1,), 3.0), 0.125).t_starts.tolist()
            [1.0, 1.125]
        """
        if not step_size > 0:
            raise NfieldError(f"OccupancyGrid.march: step_size must be positive, got {step_size!r}")
        if (
            origins.dim() != 2
            or origins.shape[1] != 3
            or directions.shape != origins.shape
            or not near.shape == far.shape == origins.shape[:1]
        ):
            raise NfieldError(
                f"OccupancyGrid.march: origins and directions must be (N, 3) and near, far (N,), got "
                f"{tuple(origins.shape)}, {tuple(directions.shape)}, {tuple(near.shape)}, {tuple(far.shape)}"
            )
        chosen = choose_backend("OccupancyGrid.march", backend, origins.device, ("torch", "triton"))
        if chosen == "triton" and origins.dtype != torch.float32:
            if backend == "triton":
                raise NfieldError(f"OccupancyGrid.march: the triton backend takes float32 rays, got {origins.dtype}")
            chosen = "torch"
        record_backend("OccupancyGrid.march", chosen)
        empty = origins.new_zeros(0)
        nothing = RaySamples(torch.zeros(0, dtype=torch.long, device=origins.device), empty, empty)
        bounds = self.occupied_bounds()
        if bounds is None:
            return nothing
        box_lo, box_hi = (corner.to(origins) for corner in bounds)  # march only through the box around occupied cells
        t_near, t_far, _ = ray_box_intersection(origins, directions, box_lo, box_hi)
        # steps [t_k, t_k+1], t_k = near + k step_size (capped at far), from the last one to begin before the box
        first = torch.floor((torch.maximum(near, t_near) - near) / step_size)
        last = torch.minimum(torch.ceil((t_far - near) / step_size), torch.ceil((far - near) / step_size))
        n_steps = (last - first).clamp_min(0).long()
        if chosen == "triton":
            from nfield.kernels.ray_marching import march_kernel

            # one pass over every ray: a program walks its own longest ray, nothing dense is built
            samples = RaySamples(
                *march_kernel(origins, directions, near, far, first, n_steps, step_size, self.occupied, self.aabb)
            )
            if sigma_fn is not None and len(samples):
                sigmas = self._densities(sigma_fn, samples.positions(origins, directions), origins.dtype)
                _, transmittance, alphas = render_weights(
                    samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, len(origins), chosen
                )
                samples = samples.select((transmittance >= early_stop_eps) & (alphas >= alpha_threshold))
            return samples
        parts = [nothing]
        marching = torch.nonzero(n_steps).squeeze(1)
        for rays in marching.split(max(1, _CHUNK // int(n_steps.max()))) if len(marching) else ():
            samples = self._march_steps(origins, directions, near, far, first, n_steps, step_size, rays)
            if sigma_fn is not None and len(samples):
                sigmas = self._densities(sigma_fn, samples.positions(origins, directions), origins.dtype)
                # ray indices local to the chunk, so transmittance is computed over the chunk's rays only
                local = torch.searchsorted(rays, samples.ray_indices)
                _, transmittance, alphas = render_weights(samples.t_starts, samples.t_ends, sigmas, local, len(rays), chosen)
                samples = samples.select((transmittance >= early_stop_eps) & (alphas >= alpha_threshold))
            parts.append(samples)
        return RaySamples(*(torch.cat([getattr(part, name) for part in parts]) for name in ("ray_indices", "t_starts", "t_ends")))

    @staticmethod
    def _densities(sigma_fn: DensityFn, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """sigma_fn at (M, 3) points, `_CHUNK` at a time: (M,) densities."""
        return torch.cat([sigma_fn(part).reshape(-1).to(dtype) for part in positions.split(_CHUNK)])

    def occupied_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(3,) min and max corners of the box around every occupied cell, None when no cell is.

        Found once per change of the grid (an update, a load, a write into `occupied`: their
        version counters say so), not on every march.
        """
        key = tensor_versions((self.occupied, self.aabb))
        cached = getattr(self, "_bounds_cache", None)
        if cached is None or cached[0] != key:
            levels, cells = torch.nonzero(self.occupied, as_tuple=True)
            bounds = None
            if len(cells):
                corners, cell_size = self.cell_corners(levels, cells)
                bounds = (corners.amin(dim=0), (corners + cell_size).amax(dim=0))
            cached = (key, bounds)
            object.__setattr__(self, "_bounds_cache", cached)  # not a buffer: derived, never saved
        return cached[1]

    def _march_steps(self, origins, directions, near, far, first, n_steps, step_size: float, rays: torch.Tensor) -> RaySamples:
        """The PyTorch reference of one chunk of `march`: the kept steps of `rays` (n,), densely."""
        width = int(n_steps[rays].max())
        steps = torch.arange(width + 1, device=origins.device, dtype=origins.dtype)
        t = torch.minimum(near[rays, None] + (first[rays, None] + steps) * step_size, far[rays, None])
        middle = 0.5 * (t[:, :-1] + t[:, 1:])
        points = torch.addcmul(origins[rays, None], middle[..., None], directions[rays, None])
        keep = (steps[:-1] < n_steps[rays, None]) & (t[:, 1:] > t[:, :-1])  # no empty interval at far
        keep &= self.occupied_at(points.view(-1, 3)).view(middle.shape)
        return RaySamples.from_dense(rays[:, None], t[:, :-1], t[:, 1:], keep)
