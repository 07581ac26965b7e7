"""Geometry from radiance fields: a coloured mesh of the density's level set, a coloured point cloud of the training views.

Mesh (`extract_nerf_mesh`). Marching cubes on the field's volume density sigma (per world unit of
length) over the scene box, R samples per axis (the box's own aspect: cells are (hi - lo) / (R - 1)
per axis), through `nfield.geometry.marching_cubes.extract_mesh`'s slab-by-slab sweep, so the samples in memory are a
slab's, never the R^3 grid (the budget is `nfield.geometry.marching_cubes.extraction_memory_bytes`: about 0.3 GiB at
R = 512, checked against the memory available before anything is evaluated). The surface is where
sigma crosses `level`:

- Default level: ``ln 2 / step``, with step = the box's diagonal / `render_steps_per_ray` (the
  renderer's march step; a mean spacing for hierarchical sampling). A sample of that length at
  that density absorbs half of the light reaching it (alpha = 1 - exp(-sigma step) = 0.5): the
  density at which the renderer itself sees a surface, and for a sharp surface the depth where a
  ray's transmittance falls to one half. It follows the run's scale (a scene in millimetres gets
  1000 times the level of one in metres) and the densities the run was trained to reach along
  rays of that step. For the Blender box ([-1.5, 1.5]^3) it is 136.6 with the occupancy sampler's
  1024 steps per ray, and 25.6 for hierarchical sampling (64 + 128 samples; the NeRF authors
  meshed lego at 50). Lower it to close holes of a fuzzy field, raise it to shave off haze.
- Only samples inside occupied cells of the run's occupancy grid are evaluated; the others count
  as empty (density 0) without calling the field, as the renderer skips them. Samples on the box's
  faces count as empty too, so the mesh is closed where the scene touches the box. Runs sampled
  hierarchically (no grid) evaluate every sample.
- Orientation: triangles wind so their normals point out of the object, toward lower density.
- Vertex colours: the field's colour at each vertex seen from outside, i.e. with viewing direction
  -n (n the vertex's area-weighted outward normal), `color_chunk` vertices per call. At the default
  level a sample there carries half the weight of a ray's colour, so this is what the renderer
  shows of the surface there.

Point cloud (`nerf_point_cloud`). Every training view rendered at 1 / downscale of its size; each
pixel whose opacity exceeds `min_opacity` gives one point at its expected depth along its ray,
coloured by the rendered colour (on black, divided by the opacity). At most `max_points` are kept,
a uniform random subset for a fixed seed, chosen as the views stream in (memory stays
O(max_points + one view)).

Files (`write_colored_mesh`, `write_point_cloud`): PLY, OBJ or GLB with 8-bit vertex colours, through
trimesh, written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.geometry.marching_cubes import extract_mesh
from nfield.outputs import write_atomic
from nfield.progress import progress_bar
from nfield.render.cameras import CameraSet, pixel_rays
from nfield.render.radiance import march_step

GEOMETRY_SUFFIXES = (".ply", ".obj", ".glb")  # mesh and point-cloud formats, with vertex colours
DEFAULT_RESOLUTION = 256  # marching-cubes samples per axis
LEVEL_STEP_OPACITY = 0.5  # the default level: the density at which one march step has this opacity
DEFAULT_POINTS = 1_000_000  # most points in a point cloud
DEFAULT_MIN_OPACITY = 0.95  # pixels at or below this opacity give no point
DEFAULT_DOWNSCALE = 2  # the training views are rendered at 1 / this of their size
COLOR_CHUNK = 2**16  # vertices per colour query


def render_steps_per_ray(cfg) -> int:
    """Samples across the box's diagonal that a run's renderer takes (a `NeRFTaskConfig`): its
    ``steps_per_ray`` when it marches an occupancy grid, n_samples + n_importance when it samples
    hierarchically (a mean spacing: the importance samples crowd near surfaces)."""
    return cfg.steps_per_ray if cfg.sampler == "occupancy" else cfg.n_samples + cfg.n_importance


def default_level(aabb: torch.Tensor, steps_per_ray: int) -> float:
    """The default density threshold: -ln(1 - 0.5) / step = ln 2 / step, with step = the box's
    diagonal / `steps_per_ray` (`march_step`, the occupancy sampler's step, world units): the density at
    which one render sample is half opaque. In the field's units, per world unit of length."""
    return -math.log(1.0 - LEVEL_STEP_OPACITY) / march_step(aabb, steps_per_ray)


@torch.no_grad()
def extract_nerf_mesh(
    model: nn.ModuleDict,
    resolution: int = DEFAULT_RESOLUTION,
    level: float | None = None,
    *,
    steps_per_ray: int = 1024,
    chunk: int = 2**18,
    slab: int | None = None,
    color_chunk: int = COLOR_CHUNK,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `level` set of a radiance field's density over its box, as a mesh with vertex colours.

    Args:
        model: a NeRF run's modules (`nfield.tasks.nerf.build_nerf_model`): ``field`` with ``aabb``
            (2, 3), ``density(x)`` (M, 3) -> (M,) and ``forward(x, d)`` -> (rgb (M, 3), sigma (M,)),
            and optionally ``grid``, an `OccupancyGrid` whose unoccupied cells are not evaluated.
        resolution: R, samples per axis over the box (>= 2).
        level: the density threshold, per world unit of length; None for `default_level` of the
            box and `steps_per_ray`.
        steps_per_ray: the run's march steps across the box's diagonal (for the default level).
        chunk: the most points per density call.
        slab: cell layers per slab of the sweep (None: `nfield.geometry.marching_cubes`'s choice); the mesh does not
            depend on it.
        color_chunk: the most vertices per colour call.
        progress: show a bar over the grid samples.

    Returns:
        vertices (V, 3) float32 in world units, faces (F, 3) int64 with normals pointing out of the
        object (toward lower density), colours (V, 3) float32 in [0, 1].

    Raises `NfieldError` when the density never reaches `level` in the box, when the memory needed
    is not available, or when the field returns non-finite densities.
    """
    field = model["field"]
    grid = model["grid"] if "grid" in model else None
    aabb = field.aabb.float()
    level = default_level(aabb.cpu(), steps_per_ray) if level is None else float(level)
    if not (math.isfinite(level) and level > 0):
        raise NfieldError(f"--level {level:g}: must be a positive density (per world unit of length)")
    device = aabb.device
    centre, half = (aabb[0] + aabb[1]) / 2, (aabb[1] - aabb[0]) / 2
    highest = [0.0]  # the largest density evaluated, for the message when there is no surface

    def negative_density(unit: torch.Tensor) -> torch.Tensor:
        """-sigma at grid points in [-1, 1]^3 (box coordinates): above -level outside the object."""
        x = torch.addcmul(centre, unit, half)
        keep = (unit.abs() < 1.0).all(dim=-1)  # the box's faces count as empty: closed meshes
        if grid is not None:
            keep &= grid.occupied_at(x)
        sigma = torch.zeros(len(unit), device=device)
        index = torch.nonzero(keep).squeeze(1)
        if len(index):
            values = field.density(x[index]).float().reshape(-1)
            sigma[index] = values
            if values.numel():
                highest[0] = max(highest[0], float(values.max()))
        return -sigma

    try:
        unit_vertices, faces = extract_mesh(
            negative_density, resolution, level=-level, chunk=chunk, slab=slab, device=device, progress=progress
        )
    except NfieldError as err:
        if "sdf_fn returned" in str(err) and "the field must be finite" in str(err):
            message = "the field's density is not finite somewhere in the scene box; the run's weights may hold NaN"
            raise NfieldError(message) from None
        if "has no surface" not in str(err):
            raise
        raise NfieldError(
            f"the density never reaches --level {level:.4g} inside the scene box at resolution {resolution} "
            f"(largest sampled: {highest[0]:.4g}); lower --level, or train the run longer"
        ) from None
    vertices = (centre.cpu().numpy() + unit_vertices * half.cpu().numpy()).astype(np.float32)
    normals = vertex_normals(torch.from_numpy(vertices).to(device), torch.from_numpy(faces).to(device))
    colors = query_colors(field, torch.from_numpy(vertices).to(device), normals, color_chunk)
    return vertices, faces, colors.cpu().numpy()


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit area-weighted vertex normals of a mesh, (0, 0, 1) where they vanish."""
    corners = vertices[faces]  # (F, 3, 3)
    face_normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)  # 2 x area
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(0, faces[:, k], face_normals)
    length = normals.norm(dim=-1, keepdim=True)
    fallback = torch.tensor([0.0, 0.0, 1.0], device=vertices.device, dtype=vertices.dtype)
    return torch.where(length > 0, normals / length.clamp_min(1e-30), fallback)


@torch.no_grad()
def query_colors(field: nn.Module, points: torch.Tensor, normals: torch.Tensor, chunk: int = COLOR_CHUNK) -> torch.Tensor:
    """(V, 3) float32 colours in [0, 1] of `field` at points (V, 3), seen from outside along -normals (V, 3)."""
    if not (isinstance(chunk, int) and chunk >= 1):
        raise NfieldError(f"color_chunk={chunk!r}: must be a positive number of vertices")
    parts = [
        field(points[start : start + chunk], -normals[start : start + chunk])[0].float().clamp(0, 1)
        for start in range(0, len(points), chunk)
    ]
    return torch.cat(parts) if parts else points.new_zeros(0, 3)


@torch.no_grad()
def nerf_point_cloud(
    render_rays: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    cameras: CameraSet,
    *,
    downscale: int = DEFAULT_DOWNSCALE,
    min_opacity: float = DEFAULT_MIN_OPACITY,
    max_points: int = DEFAULT_POINTS,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """World points and colours of the opaque pixels of `cameras`' views, rendered at 1 / downscale.

    Args:
        render_rays: (origins (N, 3), unit directions (N, 3)) -> rgb (N, 3) on black, depth (N,) the
            expected distance along the ray given that it stops, opacity (N,); e.g.
            `nfield.render.radiance.render_image` with a black background.
        cameras: the views; rays are made on the device of ``cameras.c2w``.
        downscale: K, an integer >= 1: each view gives (H // K) x (W // K) rays, through the
            centres of K x K pixel blocks (lens distortion removed).
        min_opacity: pixels whose opacity is not above this (in [0, 1)) give no point.
        max_points: the most points returned; more are cut to a uniform random subset.
        seed: seeds the random subset.
        progress: show a bar over the views.

    Returns:
        points (N, 3) float32 world units and colours (N, 3) float32 in [0, 1] (the rendered
        colour divided by the opacity), in view and pixel order. `NfieldError` when no pixel passes.
    """
    if not (isinstance(downscale, int) and not isinstance(downscale, bool) and downscale >= 1):
        raise NfieldError(f"--downscale {downscale!r}: must be an integer >= 1")
    if not (isinstance(max_points, int) and not isinstance(max_points, bool) and max_points >= 1):
        raise NfieldError(f"--points {max_points!r}: must be a positive number of points")
    if not 0.0 <= min_opacity < 1.0:
        raise NfieldError(f"--min-opacity {min_opacity:g}: must lie in [0, 1)")
    device = cameras.c2w.device
    generator = torch.Generator().manual_seed(seed)
    keys = torch.empty(0)  # per kept point its random key: the max_points smallest are the subset
    order = torch.empty(0, dtype=torch.long)  # its rank in view and pixel order
    points, colors = torch.empty(0, 3), torch.empty(0, 3)
    seen = 0
    for index in progress_bar(range(len(cameras)), desc="views", unit="view", enabled=progress):
        width, height = int(cameras.width[index]) // downscale, int(cameras.height[index]) // downscale
        if width < 1 or height < 1:
            raise NfieldError(
                f"--downscale {downscale}: view {index} ({int(cameras.width[index])}x{int(cameras.height[index])}) "
                "would have no pixels"
            )
        rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * downscale
        columns = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * downscale
        v, u = torch.meshgrid(rows, columns, indexing="ij")
        camera = torch.full((height * width,), index, dtype=torch.long, device=device)
        origins, directions = pixel_rays(cameras, camera, u.reshape(-1), v.reshape(-1))
        out = render_rays(origins, directions)
        opacity = out["opacity"].float()
        kept = torch.nonzero(opacity > min_opacity).squeeze(1)
        view_keys = torch.rand(height * width, generator=generator)[kept.cpu()]
        view_points = (origins[kept] + out["depth"][kept, None].float() * directions[kept]).float().cpu()
        view_colors = (out["rgb"][kept].float() / opacity[kept, None]).clamp(0, 1).cpu()
        keys, order = torch.cat([keys, view_keys]), torch.cat([order, seen + kept.cpu()])
        points, colors = torch.cat([points, view_points]), torch.cat([colors, view_colors])
        seen += height * width
        if len(keys) > max_points:
            chosen = torch.topk(keys, max_points, largest=False).indices
            keys, order, points, colors = keys[chosen], order[chosen], points[chosen], colors[chosen]
    if len(points) == 0:
        raise NfieldError(
            f"no pixel of the {len(cameras)} training views is more than --min-opacity {min_opacity:g} opaque; "
            "lower it, or train the run longer"
        )
    ranked = torch.argsort(order)
    return points[ranked].numpy(), colors[ranked].numpy()


def check_geometry_suffix(path: str | os.PathLike, what: str = "a coloured mesh") -> Path:
    """`path` as a Path; `NfieldError` in one line unless its suffix is one of `GEOMETRY_SUFFIXES`."""
    path = Path(path)
    if path.suffix.lower() not in GEOMETRY_SUFFIXES:
        raise NfieldError(
            f"--out {path}: {what} is written as {', '.join(GEOMETRY_SUFFIXES)}, not '{path.suffix or '(no suffix)'}'"
        )
    return path


def write_colored_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> Path:
    """Write a mesh with vertex colours (V, 3) in [0, 1] as PLY, OBJ or GLB (by suffix), atomically."""
    import trimesh  # here, not at the top: it adds 0.5 s to every command's start

    path = check_geometry_suffix(path)
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=_rgba8(colors, len(vertices)), process=False)
    return write_atomic(path, mesh.export(file_type=path.suffix.lower()[1:]), durable=True)


def write_point_cloud(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write points (N, 3) with colours (N, 3) in [0, 1] as PLY, OBJ or GLB (by suffix), atomically."""
    import trimesh

    path = check_geometry_suffix(path, "a point cloud")
    cloud = trimesh.PointCloud(np.asarray(points, dtype=np.float32), colors=_rgba8(colors, len(points)))
    return write_atomic(path, cloud.export(file_type=path.suffix.lower()[1:]), durable=True)


def _rgba8(colors: np.ndarray | Sequence, count: int) -> np.ndarray:
    """(count, 4) uint8 opaque RGBA from (count, 3) colours in [0, 1]."""
    colors = np.asarray(colors, dtype=np.float32)
    if colors.shape != (count, 3):
        raise NfieldError(f"need ({count}, 3) colours, got {colors.shape}")
    rgb = np.round(np.clip(colors, 0.0, 1.0) * 255).astype(np.uint8)
    return np.concatenate([rgb, np.full((count, 1), 255, np.uint8)], axis=1)
