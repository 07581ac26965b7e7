"""Rays against boxes, and samples along rays.

A ray is an origin o (3,) and a direction d (3,); its points are o + t d, so t is in units of the
direction's length (a distance for unit directions). Batches of N rays are (N, 3) origins and (N, 3)
directions.

- `ray_box_intersection`: where rays enter and leave axis-aligned boxes (the slab method), the one
  implementation every renderer clips its rays with: sphere tracing (the scene's box, empty octree
  cells to jump over), occupancy-grid marching (the box around the occupied cells) and NeRF's
  sampling span (`nfield.render.radiance.ray_bounds`). `ray_aabb` is the same for a box given as one
  (2, 3) tensor of its min and max corners.
- `RaySamples`: samples packed the way nerfacc packs them: the samples of all rays in one flat list,
  grouped by ray and in increasing t within a ray, each an interval [t_start, t_end] of its ray. A
  ray may have any number of samples, zero included. The samplers (`nfield.render.samplers`,
  `nfield.render.occupancy`) make them and volume rendering (`nfield.render.volume`) consumes them.

Everything runs on the device of the tensors given, in pure PyTorch.

Example::

    >>> import torch
    >>> aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    >>> origins, directions = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    >>> ray_aabb(origins, directions, aabb)  # enters at z = 1, leaves at z = -1
    (tensor([2.]), tensor([4.]), tensor([True]))
    >>> samples = RaySamples(torch.tensor([0, 0]), torch.tensor([2.0, 3.0]), torch.tensor([3.0, 4.0]))
    >>> samples.positions(origins, directions).tolist()  # the intervals' midpoints
    [[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from nfield.errors import NfieldError

Bound = float | Sequence[float] | torch.Tensor  # a scalar, (3,) or (N, 3) box corner


def ray_box_intersection(
    origins: torch.Tensor, directions: torch.Tensor, lo: Bound = -1.0, hi: Bound = 1.0, near: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays enter and leave axis-aligned boxes (the slab method).

    The box is closed: a ray grazing a face or starting on it hits. A ray parallel to a slab is
    inside that slab for all t if its origin lies between the slab's planes, else never.

    Args:
        origins: (N, 3) ray origins.
        directions: (N, 3) ray directions (any length; t is in units of their length).
        lo, hi: the box's min and max corners: floats (the cube [lo, hi]^3), (3,) or (N, 3).
        near: where the rays begin, in units of t: t_near is clamped at max(near, 0).

    Returns:
        t_near: (N,) entry distance, clamped at max(near, 0) (so that for origins inside the box,
            0 by default).
        t_far: (N,) exit distance.
        hits: (N,) bool, t_far >= t_near: the ray meets the box at some t >= max(near, 0). Where it
            does not, t_near and t_far have no meaning.

    Example::

        >>> origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
        >>> t_near, t_far, hits = ray_box_intersection(origins, torch.tensor([[0.0, 0.0, -1.0]] * 2))
        >>> t_near[0], t_far[0], hits
        (tensor(2.), tensor(4.), tensor([ True, False]))
        >>> ray_box_intersection(origins[:1], torch.tensor([[0.0, 0.0, -1.0]]), near=2.5)[0]  # rays that begin at t = 2.5
        tensor([2.5000])
    """
    options = {"dtype": origins.dtype, "device": origins.device}
    lo, hi = torch.as_tensor(lo, **options), torch.as_tensor(hi, **options)
    to_lo, to_hi = (lo - origins) / directions, (hi - origins) / directions
    parallel = directions == 0
    inside_slab = (origins >= lo) & (origins <= hi)
    always = torch.where(inside_slab, -torch.inf, torch.inf)  # entry of a parallel slab
    t_min = torch.where(parallel, always, torch.minimum(to_lo, to_hi))
    t_max = torch.where(parallel, -always, torch.maximum(to_lo, to_hi))
    t_near = t_min.amax(dim=-1).clamp_min(max(float(near), 0.0))
    t_far = t_max.amin(dim=-1)
    return t_near, t_far, t_far >= t_near


def ray_aabb(
    origins: torch.Tensor, directions: torch.Tensor, aabb: torch.Tensor, near: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ray_box_intersection` with a box given as one (2, 3) tensor of its min and max corners.

    Args:
        origins: (N, 3) ray origins.
        directions: (N, 3) ray directions (t is in units of their length).
        aabb: (2, 3) the box's min and max corners.
        near: where the rays begin, in units of t: t_near is clamped at max(near, 0).

    Returns:
        t_near: (N,) entry distance, clamped at max(near, 0) (0 for origins inside the box by default).
        t_far: (N,) exit distance.
        hit: (N,) bool, whether the ray meets the (closed) box at some t >= max(near, 0); where it
            does not, t_far < t_near.

    Example::

        >>> aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        >>> ray_aabb(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]), aabb)
        (tensor([2.]), tensor([4.]), tensor([True]))
    """
    aabb = torch.as_tensor(aabb, dtype=origins.dtype, device=origins.device)
    if aabb.shape != (2, 3):
        raise NfieldError(f"ray_aabb: aabb must be a (2, 3) tensor of the box's min and max corners, got {tuple(aabb.shape)}")
    return ray_box_intersection(origins, directions, aabb[0], aabb[1], near)


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

    @classmethod
    def from_dense(
        cls, ray_indices: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, keep: torch.Tensor
    ) -> RaySamples:
        """The kept intervals of dense per-ray rows, row by row.

        Args:
            ray_indices: (N, 1) or (N, K) int64 ray of each row (of each entry).
            t_starts: (N, K) interval starts, increasing along a row.
            t_ends: (N, K) interval ends.
            keep: (N, K) bool, the intervals to keep.

        Example::

            >>> t = torch.tensor([[0.0, 1.0, 2.0]])
            >>> RaySamples.from_dense(torch.tensor([[4]]), t[:, :-1], t[:, 1:], torch.tensor([[False, True]]))
            RaySamples(ray_indices=tensor([4]), t_starts=tensor([1.]), t_ends=tensor([2.]))
        """
        return cls(ray_indices.expand_as(keep)[keep], t_starts[keep], t_ends[keep])

    def __len__(self) -> int:
        return len(self.ray_indices)

    def select(self, keep: torch.Tensor) -> RaySamples:
        """The samples where keep (M,) bool is True, in order."""
        return RaySamples(self.ray_indices[keep], self.t_starts[keep], self.t_ends[keep])

    def midpoints(self) -> torch.Tensor:
        """(M,) the middle of each interval, where fields are evaluated."""
        return 0.5 * (self.t_starts + self.t_ends)

    def positions(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """(M, 3) points at the midpoints, from the rays' origins (N, 3) and directions (N, 3)."""
        return torch.addcmul(origins[self.ray_indices], self.midpoints()[:, None], directions[self.ray_indices])
