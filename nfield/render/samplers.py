"""Where to sample rays for volume rendering: stratified bins, importance sampling, occupancy grids.

Samples are packed the way nerfacc packs them: the samples of all rays in one flat list, grouped by
ray and in increasing t within a ray, each an interval [t_start, t_end] of its ray (`RaySamples`).
A ray may have any number of samples, zero included. Three ways to make them:

- `stratified_samples`: NeRF's coarse pass, n equal bins between near and far per ray.
- `importance_samples`: NeRF's fine pass, more samples where a coarse pass found weight.
- `OccupancyGrid.march`: instant-ngp's fixed steps, skipping cells the grid knows are empty and
  stopping once a ray is opaque.

Everything runs on the device of the tensors given, in pure PyTorch.

Example::

    >>> import torch
    >>> origins, directions = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    >>> samples = stratified_samples(torch.zeros(2), torch.tensor([1.0, 2.0]), n_samples=4, perturb=False)
    >>> samples.ray_indices.tolist(), samples.t_starts[4:].tolist()
    ([0, 0, 0, 0, 1, 1, 1, 1], [0.0, 0.5, 1.0, 1.5])
    >>> samples.positions(origins, directions)[4].tolist()  # the midpoint of ray 1's first bin
    [0.25, 0.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nfield.backends import choose_backend, record_backend
from nfield.distributed import all_reduce_
from nfield.errors import NfieldError
from nfield.kernels import tensor_versions
from nfield.render.sphere_tracing import ray_box_intersection
from nfield.render.volume import render_weights

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""(M, 3) points -> (M,) volume densities (an (M, 1) output is accepted too)."""

_PDF_EPS = 1e-5  # added to every coarse weight before importance sampling (NeRF's value)
_CHUNK = 2**20  # the most points an occupancy grid evaluates or marches at a time


@dataclass
class RaySamples:
    """Packed samples along rays: interval i is [t_starts[i], t_ends[i]] on ray ray_indices[i].

    Samples are grouped by ray, in increasing t within a ray; a ray may have no samples.

    ray_indices: (M,) int64 index of each sample's ray.
    t_starts: (M,) float, where each interval begins, in units of the ray direction's length.
    t_ends: (M,) float, where each interval ends (>= its start).
    """

    ray_indices: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor

    def __len__(self) -> int:
        return len(self.ray_indices)

    def midpoints(self) -> torch.Tensor:
        """(M,) the middle of each interval, where fields are evaluated."""
        return 0.5 * (self.t_starts + self.t_ends)

    def positions(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """(M, 3) points at the midpoints, from the rays' origins (N, 3) and directions (N, 3)."""
        return torch.addcmul(origins[self.ray_indices], self.midpoints()[:, None], directions[self.ray_indices])


def ray_aabb(
    origins: torch.Tensor, directions: torch.Tensor, aabb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays enter and leave an axis-aligned box (the slab method of `ray_box_intersection`).

    Args:
        origins: (N, 3) ray origins.
        directions: (N, 3) ray directions (t is in units of their length).
        aabb: (2, 3) the box's min and max corners.

    Returns:
        t_near: (N,) entry distance, clamped at 0 (0 for origins inside the box).
        t_far: (N,) exit distance.
        hit: (N,) bool, whether the ray meets the (closed) box at some t >= 0; where it does not,
            t_far < t_near.

    Example::

        >>> aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        >>> ray_aabb(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]), aabb)
        (tensor([2.]), tensor([4.]), tensor([True]))
    """
    aabb = torch.as_tensor(aabb, dtype=origins.dtype, device=origins.device)
    if aabb.shape != (2, 3):
        raise NfieldError(f"ray_aabb: aabb must be a (2, 3) tensor of the box's min and max corners, got {tuple(aabb.shape)}")
    return ray_box_intersection(origins, directions, aabb[0], aabb[1])


def _pack(ray_indices: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, keep: torch.Tensor) -> RaySamples:
    """RaySamples of the kept entries of dense (N, K) intervals, row by row."""
    return RaySamples(ray_indices.expand_as(keep)[keep], t_starts[keep], t_ends[keep])


def _select(samples: RaySamples, keep: torch.Tensor) -> RaySamples:
    """The samples where keep (M,) is True, in order."""
    return RaySamples(samples.ray_indices[keep], samples.t_starts[keep], samples.t_ends[keep])


@torch.no_grad()
def stratified_samples(
    near: torch.Tensor,
    far: torch.Tensor,
    n_samples: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> RaySamples:
    """NeRF's stratified sampling: [near, far] of each ray cut into n_samples contiguous intervals.

    Without `perturb` the intervals are the n equal bins. With it, every interior boundary moves by
    up to half a bin, uniformly at random: the intervals still tile [near, far] without gaps, and
    the midpoint of interval i (where the field is evaluated) stays inside bin i, at a random place
    that covers the whole bin over many draws (NeRF jitters one point per bin; an interval per
    sample needs its boundaries jittered instead). Rays with far <= near get no samples.

    Args:
        near: (N,) where each ray's samples begin.
        far: (N,) where they end.
        n_samples: intervals per ray, >= 1.
        perturb: jitter the boundaries (training) or not (evaluation).
        generator: random generator for the jitter, on the rays' device.

    Returns:
        `RaySamples` with n_samples intervals for each ray whose far > near.

    Example::

        >>> samples = stratified_samples(torch.tensor([2.0]), torch.tensor([4.0]), 2, perturb=False)
        >>> samples.t_starts, samples.t_ends
        (tensor([2., 3.]), tensor([3., 4.]))
    """
    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise NfieldError(f"stratified_samples: n_samples must be a positive integer, got {n_samples!r}")
    if near.dim() != 1 or near.shape != far.shape:
        raise NfieldError(f"stratified_samples: near and far must both be (N,), got {tuple(near.shape)} and {tuple(far.shape)}")
    n_rays = len(near)
    # boundaries 0..n in units of a bin; interior ones jittered by up to half a bin
    edges = torch.arange(n_samples + 1, dtype=near.dtype, device=near.device).expand(n_rays, -1)
    if perturb:
        jitter = torch.rand(n_rays, n_samples - 1, dtype=near.dtype, device=near.device, generator=generator) - 0.5
        edges = torch.cat([edges[:, :1], edges[:, 1:-1] + jitter, edges[:, -1:]], dim=1)
    t = torch.lerp(near[:, None], far[:, None], edges / n_samples)
    rays = torch.arange(n_rays, device=near.device)[:, None]
    return _pack(rays, t[:, :-1], t[:, 1:], (far > near)[:, None].expand(-1, n_samples))


def _dense(samples: RaySamples, values: torch.Tensor, n_rays: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed per-sample values -> (n_rays, K) padded with `fill` (K the most samples of a ray), and the (n_rays,) counts."""
    counts = torch.bincount(samples.ray_indices, minlength=n_rays)
    width = int(counts.max()) if len(samples) else 0
    offsets = torch.cumsum(counts, 0) - counts
    column = torch.arange(len(samples), device=values.device) - offsets[samples.ray_indices]
    dense = values.new_full((n_rays, width), fill)
    dense[samples.ray_indices, column] = values
    return dense, counts


@torch.no_grad()
def importance_samples(
    coarse: RaySamples,
    weights: torch.Tensor,
    n_rays: int,
    n_samples: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> RaySamples:
    """NeRF's hierarchical sampling: new samples drawn where a coarse pass put its weight.

    Per ray, the coarse intervals and their weights (plus 1e-5 each) define a piecewise-constant
    PDF, uniform inside each interval; n_samples new points are drawn from it by inverting its CDF
    at stratified levels (i + u) / n_samples, u = 1/2 without `perturb`, u ~ U[0, 1) with it. The
    result, like NeRF's fine pass, cuts the coarse intervals at the new points: per ray, contiguous
    intervals between the sorted union of the coarse boundaries and the new points (zero-length
    intervals dropped; gaps between coarse intervals, such as empty space skipped by a grid, stay
    gaps). Rays without coarse samples get none. No gradient flows through the sampling.

    Args:
        coarse: the coarse pass's `RaySamples`.
        weights: (M,) their rendering weights (see `nfield.render.volume.render_weights`), >= 0.
        n_rays: N, the number of rays (more than the largest ray index).
        n_samples: new points per ray, >= 1.
        perturb: random (training) or fixed (evaluation) CDF levels.
        generator: random generator for the levels, on the samples' device.

    Returns:
        `RaySamples` with, per ray, the coarse intervals split at the new points: up to
        (coarse intervals + n_samples) intervals.

    Example::

        >>> coarse = stratified_samples(torch.tensor([0.0]), torch.tensor([4.0]), 4, perturb=False)
        >>> fine = importance_samples(coarse, torch.tensor([0.0, 0.0, 1.0, 0.0]), 1, 2, perturb=False)
        >>> [round(t, 3) for t in fine.t_starts.tolist()]  # the weighted bin [2, 3] is split near 2.25 and 2.75
        [0.0, 1.0, 2.0, 2.25, 2.75, 3.0]
    """
    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise NfieldError(f"importance_samples: n_samples must be a positive integer, got {n_samples!r}")
    if weights.shape != coarse.t_starts.shape:
        raise NfieldError(
            f"importance_samples: weights must be one per coarse sample ({len(coarse)}), got {tuple(weights.shape)}"
        )
    if len(coarse) == 0:
        return coarse
    options = {"dtype": coarse.t_starts.dtype, "device": coarse.t_starts.device}
    # dense (N, K) coarse intervals; padding has zero mass and boundaries at +inf
    mass, counts = _dense(coarse, weights.detach().to(options["dtype"]) + _PDF_EPS, n_rays, 0.0)
    starts, _ = _dense(coarse, coarse.t_starts, n_rays, math.inf)
    ends, _ = _dense(coarse, coarse.t_ends, n_rays, math.inf)
    cdf = torch.cumsum(mass, dim=1)
    cdf = cdf / cdf[:, -1:].clamp_min(torch.finfo(cdf.dtype).tiny)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=1)  # (N, K + 1)
    shift = (
        torch.rand(n_rays, n_samples, **options, generator=generator)
        if perturb
        else torch.full((n_rays, n_samples), 0.5, **options)
    )
    levels = (torch.arange(n_samples, **options) + shift) / n_samples
    # the interval each level falls in (never a padded one), and where inside it
    interval = torch.searchsorted(cdf[:, 1:].contiguous(), levels, right=True)
    interval = torch.minimum(interval, (counts[:, None] - 1).clamp_min(0))
    below, above = cdf.gather(1, interval), cdf.gather(1, interval + 1)
    fraction = ((levels - below) / (above - below).clamp_min(torch.finfo(cdf.dtype).tiny)).clamp(0.0, 1.0)
    lo, hi = starts.gather(1, interval), ends.gather(1, interval)
    new = torch.where(counts[:, None] > 0, lo + fraction * (hi - lo), math.inf)
    boundaries, _ = torch.sort(torch.cat([starts, ends, new], dim=1), dim=1)
    fine_starts, fine_ends = boundaries[:, :-1], boundaries[:, 1:]
    # keep the non-empty intervals lying inside a coarse interval (not in a gap between two)
    middle = 0.5 * (fine_starts + fine_ends)
    containing = (torch.searchsorted(starts, middle, right=True) - 1).clamp_min(0)
    keep = torch.isfinite(fine_ends) & (fine_ends > fine_starts) & (middle < ends.gather(1, containing))
    rays = torch.arange(n_rays, device=options["device"])[:, None]
    return _pack(rays, fine_starts, fine_ends, keep)


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
                samples = _select(samples, (transmittance >= early_stop_eps) & (alphas >= alpha_threshold))
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
                samples = _select(samples, (transmittance >= early_stop_eps) & (alphas >= alpha_threshold))
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
        return _pack(rays[:, None], t[:, :-1], t[:, 1:], keep)
