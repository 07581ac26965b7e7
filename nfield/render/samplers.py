"""Where to sample rays for volume rendering: NeRF's stratified bins and importance sampling.

Samples come packed (`nfield.render.rays.RaySamples`): the samples of all rays in one flat list,
grouped by ray and in increasing t within a ray, each an interval [t_start, t_end] of its ray. A ray
may have any number of samples, zero included. Two ways to make them here:

- `stratified_samples`: NeRF's coarse pass, n equal bins between near and far per ray.
- `importance_samples`: NeRF's fine pass, more samples where a coarse pass found weight.

A third, instant-ngp's fixed steps through an occupancy grid, is `nfield.render.occupancy.OccupancyGrid.march`.
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

import torch

from nfield.errors import NfieldError
from nfield.render.rays import RaySamples

_PDF_EPS = 1e-5  # added to every coarse weight before importance sampling (NeRF's value)


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
    return RaySamples.from_dense(rays, t[:, :-1], t[:, 1:], (far > near)[:, None].expand(-1, n_samples))


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
    return RaySamples.from_dense(rays, fine_starts, fine_ends, keep)
