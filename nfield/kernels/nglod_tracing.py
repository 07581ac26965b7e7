"""Triton kernel that sphere traces an NGLOD field (`nfield.fields.sdf.NGLODField`) in one launch.

One program traces a tile of TILE_H x TILE_W pixels (neighbouring rays take similar paths, so a
tile's lanes finish together) from the box entry to its hit or exit, and writes t, the hit flag,
the normal and the number of SDF evaluations of each ray. Per iteration, for every level 0..LOD of
the LOD's level, two byte tables (built once per field by `nfield.fields.nglod_tracing`) say
whether the point's cell is occupied, which coarser level is the coarsest with an unoccupied cell
around it, and how many cells away the nearest occupied cell is; then

- if the cell is occupied, the field is evaluated in the kernel: the trilinear blend of the cell's
  8 rows of the levels' sum precomputed on the LOD's corners (`OctreeFeatures.summed_corner_features`:
  one level's gathers, not LOD + 1 levels'), then the LOD's decoder (ReLU layers; the first
  layer's feature part and the hidden layers by ``tl.dot`` in IEEE float32, the position part and
  the output by multiply-adds). |sdf| < max(hit_eps, footprint t) is a hit, else t += step_scale sdf;
- else the ray jumps to the exit of the larger of two empty boxes around the point, plus 1e-5: the
  coarsest unoccupied octree cell (coarse to fine: the octree is nested), or the cube of cells
  within d - 1 of the point's cell, d its Chebyshev distance in cells to the nearest occupied one
  (`SparseOctree.empty_cell_bounds`, the same boxes).

The loop stops when every ray of the tile is done or after `max_steps` iterations, so the launch's
cost follows its slowest tile, not a global iteration count, and nothing returns to the host in
between. Normals of the hits come from four more evaluations on a tetrahedron of half size
`normal_step` (n = sum_k k sdf(p + h k), k in {(1,-1,-1), (-1,-1,1), (-1,1,-1), (1,1,1)}).

These are the steps of `nfield.render.sphere_tracing.sphere_trace` with the octree as its empty
space and `tetrahedral_normals`, which is the PyTorch path it is tested against. Runs on CUDA
tensors; with ``TRITON_INTERPRET=1`` set before import, on CPU tensors too (slowly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from nfield.kernels import device_guard

_JUMP_EPS = tl.constexpr(1e-5)  # how far past the exit of an empty box a ray lands (sphere_trace's value)
_FAR = tl.constexpr(1e30)  # "no bound along this axis", for a direction component of zero


@dataclass(frozen=True)
class PackedNGLOD:
    """An NGLOD field at one LOD, as the kernel reads it.

    cell_table: (sum_l r_l^3,) int32, levels 0..lod one after another: each cell's row in
        `corners` (over all levels), -1 where unoccupied.
    free_levels: (r_lod^3,) int8 over the LOD level's cells: -1 where occupied, else the coarsest
        level whose cell around it is unoccupied; distances: (r_lod^3,) int8 Chebyshev distance in
        cells to the nearest occupied cell (`SparseOctree.free_levels`, `cell_distances`).
    corners: (n_cells, 8) int32: each occupied cell's 8 corner rows in `features` (corner
        b = 4 b_x + 2 b_y + b_z).
    features: (n_corners, F) float32, every level's corner features one after another.
    summed: (n_corners_lod, F) float32, levels 0..lod summed onto the LOD level's corners
        (`OctreeFeatures.summed_corner_features`); a LOD corner's row in it is its row in
        `features` minus `summed_offset`. `lod_table_offset`: where the LOD level starts in `cell_table`.
    w_features: (F_PAD, H) float32, the decoder's first layer on the features, transposed and
        zero-padded; w_position: (3, H) its part on the position; b_in: (H,).
    w_hidden: (max(L - 1, 1), H, H), b_hidden: (max(L - 1, 1), H) the further hidden layers, (in, out)-major.
    w_out: (H,), b_out: float, the output layer.
    base_lod, lod: the levels: r_l = 2^(base_lod + l) cells per axis, l = 0..lod.
    """

    cell_table: torch.Tensor
    free_levels: torch.Tensor
    distances: torch.Tensor
    corners: torch.Tensor
    features: torch.Tensor
    summed: torch.Tensor
    summed_offset: int
    lod_table_offset: int
    w_features: torch.Tensor
    w_position: torch.Tensor
    b_in: torch.Tensor
    w_hidden: torch.Tensor
    b_hidden: torch.Tensor
    w_out: torch.Tensor
    b_out: float
    n_hidden_layers: int
    base_lod: int
    lod: int

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]


@triton.jit
def _cell(u, resolution):
    """Cell index along one axis (int32) of u in [0, 1] at `resolution` cells per axis, and the offset in it."""
    p = u * resolution
    cell = tl.minimum(tl.floor(p), resolution - 1.0)
    return cell.to(tl.int32), p - cell


@triton.jit
def _side(bit, frac):
    """A corner's trilinear weight along one axis: frac for the upper vertex (bit 1), 1 - frac for the lower."""
    return tl.where(bit == 1, frac, 1.0 - frac)


@triton.jit
def _tetrahedron(vertex):
    """Vertex `vertex` of the normals' tetrahedron: (1,-1,-1), (-1,-1,1), (-1,1,-1), (1,1,1)."""
    kx = tl.where((vertex == 0) | (vertex == 3), 1.0, -1.0)
    ky = tl.where(vertex >= 2, 1.0, -1.0)
    kz = tl.where((vertex == 1) | (vertex == 3), 1.0, -1.0)
    return kx, ky, kz


@triton.jit
def _exit(p, d, lo, hi):
    """Distance along a unit direction component d from p to the face of [lo, hi] it leaves through."""
    face = tl.where(d > 0, hi, lo)
    return tl.where(d == 0, _FAR, (face - p) / tl.where(d == 0, 1.0, d))


@triton.jit
def _field(
    px, py, pz, active,
    cell_table_ptr, corner_ptr, feature_ptr, summed_ptr, summed_offset, lod_table_offset,
    w_features_ptr, w_position_ptr, b_in_ptr, w_hidden_ptr, b_hidden_ptr, w_out_ptr, b_out, n_hidden_layers,
    F: tl.constexpr, F_PAD: tl.constexpr, H: tl.constexpr, BASE_LOD: tl.constexpr, LOD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The field's signed distance (BLOCK,) at points (BLOCK,) x3, where `active` (0 elsewhere).

    In an occupied cell of the LOD's level the features are one trilinear blend of the summed
    corner table; in an unoccupied one (a normal's sample near the octree's edge, a point outside
    the box) they are summed level by level, each unoccupied level adding nothing."""
    ux = tl.minimum(tl.maximum((px + 1.0) * 0.5, 0.0), 1.0)
    uy = tl.minimum(tl.maximum((py + 1.0) * 0.5, 0.0), 1.0)
    uz = tl.minimum(tl.maximum((pz + 1.0) * 0.5, 0.0), 1.0)
    f = tl.arange(0, F_PAD)
    j = tl.arange(0, H)
    features = tl.zeros((BLOCK, F_PAD), tl.float32)
    RESOLUTION: tl.constexpr = 1 << (BASE_LOD + LOD)
    cx, fx = _cell(ux, RESOLUTION * 1.0)
    cy, fy = _cell(uy, RESOLUTION * 1.0)
    cz, fz = _cell(uz, RESOLUTION * 1.0)
    row = tl.load(cell_table_ptr + lod_table_offset + (cx * RESOLUTION + cy) * RESOLUTION + cz, mask=active, other=-1)
    summed = active & (row >= 0)
    for corner in range(8):
        weight = _side((corner >> 2) & 1, fx) * _side((corner >> 1) & 1, fy) * _side(corner & 1, fz)
        corner_row = tl.load(corner_ptr + row.to(tl.int64) * 8 + corner, mask=summed, other=0) - summed_offset
        value = tl.load(
            summed_ptr + corner_row.to(tl.int64)[:, None] * F + f[None, :], mask=summed[:, None] & (f[None, :] < F), other=0.0
        )
        features += weight[:, None] * value
    # the long way where the LOD's cell is unoccupied: the coarser levels one by one (run-time loops,
    # not unrolled: the kernel inlines this twice, and unrolled levels x corners took 150 s to compile)
    long_way = active & (row < 0)
    table_offset = tl.full((), 0, tl.int32)
    for level in range(LOD):
        resolution = tl.full((), 1, tl.int32) << (BASE_LOD + level)
        lx, gx = _cell(ux, resolution.to(tl.float32))
        ly, gy = _cell(uy, resolution.to(tl.float32))
        lz, gz = _cell(uz, resolution.to(tl.float32))
        level_row = tl.load(cell_table_ptr + table_offset + (lx * resolution + ly) * resolution + lz, mask=long_way, other=-1)
        gather = long_way & (level_row >= 0)  # an unoccupied cell of a level adds nothing
        for corner in range(8):
            weight = _side((corner >> 2) & 1, gx) * _side((corner >> 1) & 1, gy) * _side(corner & 1, gz)
            feature_row = tl.load(corner_ptr + level_row.to(tl.int64) * 8 + corner, mask=gather, other=0)
            value = tl.load(
                feature_ptr + feature_row.to(tl.int64)[:, None] * F + f[None, :],
                mask=gather[:, None] & (f[None, :] < F),
                other=0.0,
            )
            features += weight[:, None] * value
        table_offset += resolution * resolution * resolution
    # the LOD's decoder on [features, position]
    w_features = tl.load(w_features_ptr + f[:, None] * H + j[None, :])
    z = tl.dot(features, w_features, input_precision="ieee")
    z += px[:, None] * tl.load(w_position_ptr + j)[None, :]
    z += py[:, None] * tl.load(w_position_ptr + H + j)[None, :]
    z += pz[:, None] * tl.load(w_position_ptr + 2 * H + j)[None, :]
    h = tl.maximum(z + tl.load(b_in_ptr + j)[None, :], 0.0)
    for layer in range(n_hidden_layers - 1):
        w_hidden = tl.load(w_hidden_ptr + layer * H * H + j[:, None] * H + j[None, :])
        h = tl.maximum(tl.dot(h, w_hidden, input_precision="ieee") + tl.load(b_hidden_ptr + layer * H + j)[None, :], 0.0)
    return tl.sum(h * tl.load(w_out_ptr + j)[None, :], axis=1) + b_out


@triton.jit
def _empty_boxes(cell, free_level, distance, finest: tl.constexpr, resolution: tl.constexpr):
    """Along one axis, in cells of the finest level: the octree cell of level `free_level` holding
    `cell` and the cube of cells within distance - 1 of it (clipped to the grid), each as [lo, hi)."""
    side = tl.exp2((finest - tl.maximum(free_level, 0)).to(tl.float32)).to(tl.int32)  # 2^(finest - level) cells
    octree_lo = (cell // side) * side
    reach = tl.maximum(distance - 1, 0)
    return octree_lo, octree_lo + side, tl.maximum(cell - reach, 0), tl.minimum(cell + reach + 1, resolution)


@triton.jit
def _trace_kernel(
    origin_ptr, direction_ptr,
    cell_table_ptr, free_level_ptr, distance_ptr, corner_ptr, feature_ptr, summed_ptr, summed_offset, lod_table_offset,
    w_features_ptr, w_position_ptr, b_in_ptr, w_hidden_ptr, b_hidden_ptr, w_out_ptr, b_out, n_hidden_layers,
    t_ptr, hit_ptr, normal_ptr, evaluations_ptr,
    width, height, max_steps, hit_eps, footprint, step_scale, normal_step,
    F: tl.constexpr, F_PAD: tl.constexpr, H: tl.constexpr, BASE_LOD: tl.constexpr, LOD: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):  # fmt: skip
    BLOCK: tl.constexpr = TILE_H * TILE_W
    RESOLUTION: tl.constexpr = 1 << (BASE_LOD + LOD)  # cells per axis of the LOD's level
    tiles_x = tl.cdiv(width, TILE_W)
    tile = tl.program_id(0)
    lane = tl.arange(0, BLOCK)
    row = (tile // tiles_x) * TILE_H + lane // TILE_W
    column = (tile % tiles_x) * TILE_W + lane % TILE_W
    valid = (row < height) & (column < width)
    ray = row.to(tl.int64) * width + column
    ox = tl.load(origin_ptr + ray * 3 + 0, mask=valid, other=0.0)
    oy = tl.load(origin_ptr + ray * 3 + 1, mask=valid, other=0.0)
    oz = tl.load(origin_ptr + ray * 3 + 2, mask=valid, other=0.0)
    dx = tl.load(direction_ptr + ray * 3 + 0, mask=valid, other=1.0)
    dy = tl.load(direction_ptr + ray * 3 + 1, mask=valid, other=0.0)
    dz = tl.load(direction_ptr + ray * 3 + 2, mask=valid, other=0.0)
    # the interval inside [-1, 1]^3 (slabs; a direction component of zero inside its slab never bounds t)
    inside_x = (ox >= -1.0) & (ox <= 1.0)
    inside_y = (oy >= -1.0) & (oy <= 1.0)
    inside_z = (oz >= -1.0) & (oz <= 1.0)
    near_x = tl.where(dx == 0, tl.where(inside_x, -_FAR, _FAR), tl.minimum((-1.0 - ox) / dx, (1.0 - ox) / dx))
    near_y = tl.where(dy == 0, tl.where(inside_y, -_FAR, _FAR), tl.minimum((-1.0 - oy) / dy, (1.0 - oy) / dy))
    near_z = tl.where(dz == 0, tl.where(inside_z, -_FAR, _FAR), tl.minimum((-1.0 - oz) / dz, (1.0 - oz) / dz))
    far_x = tl.where(dx == 0, tl.where(inside_x, _FAR, -_FAR), tl.maximum((-1.0 - ox) / dx, (1.0 - ox) / dx))
    far_y = tl.where(dy == 0, tl.where(inside_y, _FAR, -_FAR), tl.maximum((-1.0 - oy) / dy, (1.0 - oy) / dy))
    far_z = tl.where(dz == 0, tl.where(inside_z, _FAR, -_FAR), tl.maximum((-1.0 - oz) / dz, (1.0 - oz) / dz))
    start = tl.maximum(tl.maximum(tl.maximum(near_x, near_y), near_z), 0.0)
    end = tl.minimum(tl.minimum(far_x, far_y), far_z)
    t = start
    active = valid & (end >= start)
    hit = active & False
    evaluations = tl.zeros((BLOCK,), tl.int32)
    step = tl.full((), 0, tl.int32)
    while (step < max_steps) & (tl.max(active.to(tl.int32), axis=0) > 0):
        px = ox + t * dx
        py = oy + t * dy
        pz = oz + t * dz
        # the LOD level's cell: occupied, or the empty boxes around it
        cx, _fx = _cell(tl.minimum(tl.maximum((px + 1.0) * 0.5, 0.0), 1.0), RESOLUTION * 1.0)
        cy, _fy = _cell(tl.minimum(tl.maximum((py + 1.0) * 0.5, 0.0), 1.0), RESOLUTION * 1.0)
        cz, _fz = _cell(tl.minimum(tl.maximum((pz + 1.0) * 0.5, 0.0), 1.0), RESOLUTION * 1.0)
        key = (cx * RESOLUTION + cy) * RESOLUTION + cz
        free_level = tl.load(free_level_ptr + key, mask=active, other=-1).to(tl.int32)
        distance = tl.load(distance_ptr + key, mask=active, other=0).to(tl.int32)
        in_box = (tl.abs(px) <= 1.0) & (tl.abs(py) <= 1.0) & (tl.abs(pz) <= 1.0)
        jumping = active & (free_level >= 0) & in_box
        marching = active & ~jumping
        sdf = _field(
            px, py, pz, marching, cell_table_ptr, corner_ptr, feature_ptr, summed_ptr, summed_offset, lod_table_offset,
            w_features_ptr, w_position_ptr, b_in_ptr, w_hidden_ptr, b_hidden_ptr, w_out_ptr, b_out, n_hidden_layers,
            F, F_PAD, H, BASE_LOD, LOD, TILE_H * TILE_W,
        )  # fmt: skip
        # the larger (in cells) of the two empty boxes around the point
        octree_lo_x, octree_hi_x, cube_lo_x, cube_hi_x = _empty_boxes(cx, free_level, distance, LOD, RESOLUTION)
        octree_lo_y, octree_hi_y, cube_lo_y, cube_hi_y = _empty_boxes(cy, free_level, distance, LOD, RESOLUTION)
        octree_lo_z, octree_hi_z, cube_lo_z, cube_hi_z = _empty_boxes(cz, free_level, distance, LOD, RESOLUTION)
        side = octree_hi_x - octree_lo_x
        cube = (cube_hi_x - cube_lo_x) * (cube_hi_y - cube_lo_y) * (cube_hi_z - cube_lo_z) > side * side * side
        lo_x = tl.where(cube, cube_lo_x, octree_lo_x)
        lo_y = tl.where(cube, cube_lo_y, octree_lo_y)
        lo_z = tl.where(cube, cube_lo_z, octree_lo_z)
        hi_x = tl.where(cube, cube_hi_x, octree_hi_x)
        hi_y = tl.where(cube, cube_hi_y, octree_hi_y)
        hi_z = tl.where(cube, cube_hi_z, octree_hi_z)
        size = 2.0 / RESOLUTION
        leave = tl.minimum(
            tl.minimum(_exit(px, dx, lo_x * size - 1.0, hi_x * size - 1.0), _exit(py, dy, lo_y * size - 1.0, hi_y * size - 1.0)),
            _exit(pz, dz, lo_z * size - 1.0, hi_z * size - 1.0),
        )
        close = marching & (tl.abs(sdf) < tl.maximum(hit_eps, footprint * t))
        advance = tl.where(jumping, tl.maximum(leave, 0.0) + _JUMP_EPS, tl.where(close, 0.0, step_scale * sdf))
        t = tl.where(active, t + advance, t)
        evaluations += marching.to(tl.int32)
        hit = hit | close
        active = active & ~close & (t >= start) & (t <= end)
        step += 1
    # normals of the hits: four evaluations on a tetrahedron around each
    px = ox + t * dx
    py = oy + t * dy
    pz = oz + t * dz
    nx = px * 0.0
    ny = px * 0.0
    nz = px * 0.0
    for vertex in range(4):
        kx, ky, kz = _tetrahedron(vertex)
        value = _field(
            px + normal_step * kx, py + normal_step * ky, pz + normal_step * kz, hit, cell_table_ptr, corner_ptr,
            feature_ptr, summed_ptr, summed_offset, lod_table_offset, w_features_ptr, w_position_ptr, b_in_ptr,
            w_hidden_ptr, b_hidden_ptr, w_out_ptr, b_out, n_hidden_layers, F, F_PAD, H, BASE_LOD, LOD, TILE_H * TILE_W,
        )  # fmt: skip
        nx += kx * value
        ny += ky * value
        nz += kz * value
    length = tl.sqrt(nx * nx + ny * ny + nz * nz)
    usable = hit & (length > 0)
    scale = tl.where(usable, 1.0 / tl.where(usable, length, 1.0), 0.0)
    tl.store(t_ptr + ray, t, mask=valid)
    tl.store(hit_ptr + ray, hit.to(tl.int8), mask=valid)
    tl.store(normal_ptr + ray * 3 + 0, nx * scale, mask=valid)
    tl.store(normal_ptr + ray * 3 + 1, ny * scale, mask=valid)
    tl.store(normal_ptr + ray * 3 + 2, nz * scale, mask=valid)
    tl.store(evaluations_ptr + ray, evaluations, mask=valid)


def trace_nglod_kernel(
    packed: PackedNGLOD,
    origins: torch.Tensor,
    directions: torch.Tensor,
    width: int,
    *,
    max_steps: int,
    hit_eps: float,
    footprint: float,
    step_scale: float,
    normal_step: float,
    tile: tuple[int, int] = (8, 8),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trace an image's rays through `packed` in one launch.

    Args:
        packed: the field at one LOD (`PackedNGLOD`).
        origins, directions: (N, 3) float32 rays, unit directions, an image of `width` columns in
            row-major order (N = height * width; a list of rays is one row).
        max_steps, hit_eps, step_scale: as `sphere_trace`'s; footprint: radians per pixel times
            the fraction of a pixel a hit may miss by.
        normal_step: the normals' tetrahedron half size.
        tile: pixels (rows, columns) per program.

    Returns:
        t (N,) float32, hit (N,) bool, normals (N, 3) float32 (zero at misses), evaluations (N,) int32.
    """
    n = len(origins)
    height = n // width
    assert height * width == n, "the rays must be whole rows of the image"
    device = origins.device
    t = torch.empty(n, dtype=torch.float32, device=device)
    hit = torch.empty(n, dtype=torch.int8, device=device)
    normals = torch.empty(n, 3, dtype=torch.float32, device=device)
    evaluations = torch.empty(n, dtype=torch.int32, device=device)
    if n == 0:
        return t, hit.bool(), normals, evaluations
    tile_h, tile_w = (1, tile[0] * tile[1]) if height == 1 else tile
    grid = (triton.cdiv(height, tile_h) * triton.cdiv(width, tile_w),)
    hidden = packed.w_features.shape[1]
    with device_guard(origins):
        _trace_kernel[grid](
            origins.float().contiguous(), directions.float().contiguous(),
            packed.cell_table, packed.free_levels, packed.distances, packed.corners, packed.features, packed.summed,
            packed.summed_offset, packed.lod_table_offset,
            packed.w_features, packed.w_position, packed.b_in, packed.w_hidden, packed.b_hidden, packed.w_out,
            float(packed.b_out), packed.n_hidden_layers,
            t, hit, normals, evaluations,
            width, height, max_steps, float(hit_eps), float(footprint), float(step_scale), float(normal_step),
            F=packed.feature_dim, F_PAD=packed.w_features.shape[0], H=hidden, BASE_LOD=packed.base_lod, LOD=packed.lod,
            TILE_H=tile_h, TILE_W=tile_w,
        )  # fmt: skip
    return t, hit.bool(), normals, evaluations
