"""Triton kernel of occupancy-grid ray marching (`nfield.render.occupancy.OccupancyGrid.march`).

Each lane walks one ray's fixed steps [t_k, t_k+1], t_k = min(near + (first + k) step, far),
k < n_steps (the caller computes first and n_steps exactly as the reference does), and keeps a
step when it is not empty and its midpoint lies in an occupied cell of the finest cascade level
containing it. Two launches: one counts each ray's kept steps, the second writes them packed at
the offsets of the counts' exclusive prefix sum (never more than its count per ray), so the output
is exactly the reference's packed `RaySamples`, in the same order. Each program walks only as many
steps as the longest of its own rays needs, and the occupancy grid is read in place (its bool
storage viewed as bytes); the one host synchronisation is the total, to size the output. The
occupancy lookup is the reference's arithmetic (`OccupancyGrid.occupied_at`): unit = (x - centre) /
half, level = ceil(log2(max(|unit|_inf, 1))), cell = trunc((unit / 2^level + 1) R / 2) clamped to
[0, R - 1].

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before import, on CPU tensors too (slowly),
which is how the CPU tests check it against the PyTorch reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nfield.kernels import device_guard

_BLOCK = 64  # rays per program


@triton.jit
def _axis_unit(origin, direction, middle, centre, half):
    return (origin + middle * direction - centre) / half


@triton.jit
def _march_kernel(
    origin_ptr,
    direction_ptr,
    near_ptr,
    far_ptr,
    first_ptr,
    steps_ptr,
    occupied_ptr,
    box_ptr,
    count_ptr,
    offset_ptr,
    ray_out_ptr,
    start_out_ptr,
    end_out_ptr,
    n_rays,
    step_size,
    resolution,
    n_levels,
    SINGLE_LEVEL: tl.constexpr,
    FILL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    lanes = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = lanes < n_rays
    ox = tl.load(origin_ptr + lanes * 3 + 0, mask=valid, other=0.0)
    oy = tl.load(origin_ptr + lanes * 3 + 1, mask=valid, other=0.0)
    oz = tl.load(origin_ptr + lanes * 3 + 2, mask=valid, other=0.0)
    dx = tl.load(direction_ptr + lanes * 3 + 0, mask=valid, other=0.0)
    dy = tl.load(direction_ptr + lanes * 3 + 1, mask=valid, other=0.0)
    dz = tl.load(direction_ptr + lanes * 3 + 2, mask=valid, other=0.0)
    near = tl.load(near_ptr + lanes, mask=valid, other=0.0)
    far = tl.load(far_ptr + lanes, mask=valid, other=0.0)
    first = tl.load(first_ptr + lanes, mask=valid, other=0.0)
    n_steps = tl.load(steps_ptr + lanes, mask=valid, other=0)
    cx = tl.load(box_ptr + 0)
    cy = tl.load(box_ptr + 1)
    cz = tl.load(box_ptr + 2)
    hx = tl.load(box_ptr + 3)
    hy = tl.load(box_ptr + 4)
    hz = tl.load(box_ptr + 5)
    if FILL:
        cursor = tl.load(offset_ptr + lanes, mask=valid, other=0)
        end = cursor + tl.load(count_ptr + lanes, mask=valid, other=0)  # this ray's slots end here
    else:
        cursor = tl.zeros((BLOCK,), tl.int64)
    half_resolution = 0.5 * resolution  # (an int argument equal to 1 arrives as a constant: no .to())
    for k in range(tl.max(n_steps, axis=0)):  # this program's longest ray, not the launch's
        step = k * 1.0
        t0 = tl.minimum(near + (first + step) * step_size, far)
        t1 = tl.minimum(near + (first + (step + 1.0)) * step_size, far)
        middle = 0.5 * (t0 + t1)
        ux = _axis_unit(ox, dx, middle, cx, hx)
        uy = _axis_unit(oy, dy, middle, cy, hy)
        uz = _axis_unit(oz, dz, middle, cz, hz)
        radius = tl.maximum(tl.maximum(tl.abs(ux), tl.abs(uy)), tl.abs(uz))
        if SINGLE_LEVEL:
            level = tl.zeros((BLOCK,), tl.int64)
            inside = radius <= 1.0
        else:
            level = tl.ceil(tl.log2(tl.maximum(radius, 1.0))).to(tl.int64)
            inside = level < n_levels
            level = tl.minimum(level, n_levels - 1)
            shrink = tl.exp2(level.to(tl.float32))
            ux = ux / shrink
            uy = uy / shrink
            uz = uz / shrink
        ix = tl.minimum(tl.maximum(((ux + 1.0) * half_resolution).to(tl.int64), 0), resolution - 1)
        iy = tl.minimum(tl.maximum(((uy + 1.0) * half_resolution).to(tl.int64), 0), resolution - 1)
        iz = tl.minimum(tl.maximum(((uz + 1.0) * half_resolution).to(tl.int64), 0), resolution - 1)
        cell = ((level * resolution + ix) * resolution + iy) * resolution + iz
        live = valid & (k < n_steps) & (t1 > t0) & inside
        occupied = tl.load(occupied_ptr + cell, mask=live, other=0)
        keep = live & (occupied != 0)
        if FILL:
            keep = keep & (cursor < end)
            tl.store(ray_out_ptr + cursor, lanes, mask=keep)
            tl.store(start_out_ptr + cursor, t0, mask=keep)
            tl.store(end_out_ptr + cursor, t1, mask=keep)
        cursor += keep.to(tl.int64)
    if not FILL:
        tl.store(count_ptr + lanes, cursor, mask=valid)


def march_kernel(
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    first: torch.Tensor,
    n_steps: torch.Tensor,
    step_size: float,
    occupied: torch.Tensor,
    aabb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept steps of rays, packed by ray and in increasing t.

    Args:
        origins, directions: (N, 3) float32 rays.
        near, far: (N,) float32 where marching starts and stops.
        first: (N,) float32 index of each ray's first step; n_steps: (N,) int64 steps to visit.
        step_size: the step length.
        occupied: (L, R^3) bool occupancy of the grid's cascade levels (read in place).
        aabb: (2, 3) the level-0 box.

    Returns:
        ray_indices (M,) int64, t_starts (M,), t_ends (M,) float32.
    """
    n = len(origins)
    device = origins.device
    n_levels, cells = occupied.shape
    resolution = round(cells ** (1 / 3))
    assert resolution**3 == cells, "the occupancy levels must be cubes"
    empty = (torch.zeros(0, dtype=torch.long, device=device), origins.new_zeros(0), origins.new_zeros(0))
    if n == 0:
        return empty
    aabb = aabb.to(device=device, dtype=torch.float32)
    box = torch.cat([aabb.mean(dim=0), 0.5 * (aabb[1] - aabb[0])]).contiguous()
    grid_bytes = occupied.contiguous().view(-1).view(torch.uint8)  # the bool storage itself, as bytes
    tensors = [t.contiguous().float() for t in (origins, directions, near, far, first)]
    n_steps = n_steps.to(torch.int64).contiguous()
    counts = torch.zeros(n, dtype=torch.int64, device=device)
    launch = (triton.cdiv(n, _BLOCK),)
    dummy_int, dummy_float = counts[:1], tensors[2][:1]
    with device_guard(origins):
        _march_kernel[launch](
            *tensors, n_steps, grid_bytes, box, counts, dummy_int, dummy_int, dummy_float, dummy_float,
            n, float(step_size), resolution, n_levels, SINGLE_LEVEL=n_levels == 1, FILL=False, BLOCK=_BLOCK,
        )  # fmt: skip
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        if total == 0:
            return empty
        lanes = torch.empty(total, dtype=torch.int64, device=device)
        starts = torch.empty(total, dtype=torch.float32, device=device)
        ends = torch.empty(total, dtype=torch.float32, device=device)
        _march_kernel[launch](
            *tensors, n_steps, grid_bytes, box, counts, offsets, lanes, starts, ends,
            n, float(step_size), resolution, n_levels, SINGLE_LEVEL=n_levels == 1, FILL=True, BLOCK=_BLOCK,
        )  # fmt: skip
    return lanes, starts.to(origins.dtype), ends.to(origins.dtype)
