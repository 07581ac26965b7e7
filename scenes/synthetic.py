"""Small analytic scenes, ray cast exactly and written as NeRF Blender-synthetic datasets.

A scene is a handful of closed-form primitives (spheres, axis-aligned boxes, capped cylinders along
z, flat concentric rings) inside [-1.5, 1.5]^3, each with a diffuse albedo (a solid colour or a
procedural texture of the world position) under one fixed light, without shadows:

    rgb = albedo * (AMBIENT + (1 - AMBIENT) * max(0, normal . LIGHT_DIRECTION))

The colour of a surface point does not depend on the view, so a radiance field can represent the
scene exactly. Colours go to the PNGs as they are (no gamma curve). The world is z-up, like
Blender's scenes.

The dataset layout is that of the NeRF Blender synthetic scenes (lego and friends)::

    out_dir/transforms_train.json  {"camera_angle_x": fov_x, "frames": [{"file_path": "./train/r_0",
                                    "rotation": 0.0, "transform_matrix": c2w as 4 rows of 4}, ...]}
    out_dir/train/r_0.png          RGBA uint8, straight alpha: 0 where every ray misses, 255 where all hit
    (the same for val and test)

Cameras sit on a sphere of radius 4 around the origin, look at it, and have world +z up in the
image. Train and val cameras are uniform in area over the upper hemisphere up to 80 degrees of
elevation (two random streams of one seed); test cameras are evenly spaced on a ring at 30 degrees
of elevation, like Blender's test paths. Poses are camera-to-world matrices in the convention of
`nfield.render.cameras` (and of Blender / OpenGL): the camera looks along its -z axis.

Example::

    >>> c2w = look_at((0.0, -4.0, 1.0), up=(0.0, 0.0, 1.0))
    >>> render_view("primitives", c2w, 32, 24, CAMERA_ANGLE_X).shape
    torch.Size([24, 32, 4])

Command line: ``python -m scenes.synthetic primitives data/primitives --size 800 --train 100 --test 200``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import imageio.v3 as iio
import numpy as np
import torch

from nfield.errors import NfieldError
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import PinholeCamera, camera_rays, look_at

CAMERA_ANGLE_X = 0.6911112070083618  # radians: the horizontal field of view of Blender's synthetic scenes
CAMERA_DISTANCE = 4.0  # world units from every camera centre to the origin
TRAIN_MAX_ELEVATION_DEG = 80.0  # train and val cameras: elevation in [0, 80] degrees
TEST_ELEVATION_DEG = 30.0  # test cameras: a ring at this elevation
BOUND = 1.5  # every scene lies inside [-BOUND, BOUND]^3
LIGHT_DIRECTION = (0.36, -0.48, 0.8)  # unit vector from a surface towards the light
AMBIENT = 0.3  # share of the albedo that is lit whatever the normal
_MIN_DISTANCE = 1e-9  # world units: closer intersections do not count (a ray leaving a surface)
_CHUNK = 1 << 15  # rays cast at once

Colour = Sequence[float]  # (3,) RGB in [0, 1]
Texture = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points -> (N, 3) albedo in [0, 1]


# Textures: functions of the world position, so they are the same from every view.


def _like(values: Sequence[float], reference: torch.Tensor) -> torch.Tensor:
    """`values` as a tensor of the dtype and on the device of `reference` (exact for float64)."""
    return torch.tensor(values, dtype=reference.dtype, device=reference.device)


def solid(rgb: Colour) -> Texture:
    """One albedo everywhere."""
    return lambda points: _like(rgb, points).expand(len(points), 3)


def _two_tone(cells: torch.Tensor, a: Colour, b: Colour) -> torch.Tensor:
    """(N,) whole-number cell indices -> (N, 3) albedo: `a` on even cells, `b` on odd ones."""
    a, b = _like(a, cells), _like(b, cells)
    return torch.where((cells % 2 == 0)[:, None], a, b)


def checker(cell: float, a: Colour, b: Colour) -> Texture:
    """A 3-D checkerboard of cubes of side `cell` (world units), cube (0, 0, 0) at the origin in colour `a`."""
    return lambda points: _two_tone(torch.floor(points / cell).sum(dim=-1), a, b)


def stripes(axis: int, period: float, a: Colour, b: Colour) -> Texture:
    """Slabs across world axis `axis` (0, 1, 2 for x, y, z): `period` world units per pair of stripes `a`, `b`."""
    return lambda points: _two_tone(torch.floor(2.0 * points[:, axis] / period), a, b)


def sphere_checker(center: Sequence[float], n_longitude: int, n_latitude: int, a: Colour, b: Colour) -> Texture:
    """A checkerboard in longitude / latitude around `center` (poles on the z axis): n_longitude by n_latitude cells."""

    def texture(points: torch.Tensor) -> torch.Tensor:
        offset = points - _like(center, points)
        longitude = torch.atan2(offset[:, 1], offset[:, 0]) + math.pi  # [0, 2 pi]
        colatitude = torch.acos((offset[:, 2] / offset.norm(dim=-1)).clamp(-1.0, 1.0))  # [0, pi]
        column = torch.floor(longitude * n_longitude / (2 * math.pi))
        return _two_tone(column + torch.floor(colatitude * n_latitude / math.pi), a, b)

    return texture


# Primitives: intersect(origins (N, 3), unit directions (N, 3)) -> distance to the first hit
# (N,) (inf on a miss) and the unit normal there (N, 3) (anything on a miss); bounding_sphere()
# -> centre (3,) and radius of a sphere that contains the primitive, world units.


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, d) . (N, d) -> (N,); a matrix-vector product, much faster than a sum over a short last axis on the CPU."""
    return (a * b) @ a.new_ones(a.shape[-1])


def _nearest(distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, M) candidate distances, any of them nan, inf or too close for none -> (N,) nearest (inf if none), (N,) its column."""
    valid = torch.isfinite(distances) & (distances > _MIN_DISTANCE)
    return torch.where(valid, distances, torch.inf).min(dim=1)


@dataclass(frozen=True, eq=False)
class Spheres:
    """Spheres sharing one texture: centers (K, 3) and radii (K,), world units."""

    centers: torch.Tensor
    radii: torch.Tensor
    texture: Texture

    def bounding_sphere(self) -> tuple[Sequence[float], float]:
        middle = self.centers.mean(dim=0)
        return middle.tolist(), float(((self.centers - middle).norm(dim=-1) + self.radii).max())

    def intersect(self, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centers, radii = self.centers.to(origins), self.radii.to(origins)
        # |o + t d - c|^2 = r^2 with |d| = 1: t^2 + 2 b t + c = 0, expanded to avoid (N, K, 3) tensors
        half_b = _dot(origins, directions)[:, None] - directions @ centers.T
        c = _dot(origins, origins)[:, None] - 2 * origins @ centers.T + (centers * centers).sum(dim=-1) - radii**2
        root = torch.sqrt(half_b**2 - c)  # nan where the ray misses the sphere
        near, far = -half_b - root, -half_b + root  # the far root counts from inside
        distances, sphere = _nearest(torch.where(near > _MIN_DISTANCE, near, far))
        normals = (origins + distances[:, None] * directions - centers[sphere]) / radii[sphere, None]
        return distances, normals


@dataclass(frozen=True)
class Box:
    """The axis-aligned box between corners `low` (3,) and `high` (3,), world units."""

    low: Sequence[float]
    high: Sequence[float]
    texture: Texture

    def bounding_sphere(self) -> tuple[Sequence[float], float]:
        middle = [(a + b) / 2 for a, b in zip(self.low, self.high)]
        return middle, math.dist(self.low, self.high) / 2

    def intersect(self, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = _like(self.low, origins), _like(self.high, origins)
        # slabs: the ray is inside the box from its last entry into a slab to its first exit from one
        to_low, to_high = (low - origins) / directions, (high - origins) / directions  # (N, 3)
        enter, enter_axis = torch.minimum(to_low, to_high).max(dim=1)
        leave, leave_axis = torch.maximum(to_low, to_high).min(dim=1)
        from_outside = enter > _MIN_DISTANCE
        distances, _ = _nearest(torch.where(enter <= leave, torch.where(from_outside, enter, leave), torch.nan)[:, None])
        # the normal points out of the face crossed: against the ray where it enters, along it where it leaves
        axis = torch.where(from_outside, enter_axis, leave_axis)
        sign = torch.sign(directions.gather(1, axis[:, None])) * torch.where(from_outside, -1.0, 1.0)[:, None]
        return distances, torch.zeros_like(origins).scatter(1, axis[:, None], sign)


@dataclass(frozen=True)
class Cylinder:
    """A closed cylinder with its axis along world z: `center` (3,), `radius` and `half_height`, world units."""

    center: Sequence[float]
    radius: float
    half_height: float
    texture: Texture

    def bounding_sphere(self) -> tuple[Sequence[float], float]:
        return self.center, math.hypot(self.radius, self.half_height)

    def intersect(self, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset = origins - _like(self.center, origins)
        # side: |o_xy + t d_xy|^2 = r^2, a t^2 + 2 b t + c = 0, between the caps
        a = _dot(directions[:, :2], directions[:, :2])
        half_b = _dot(offset[:, :2], directions[:, :2])
        c = _dot(offset[:, :2], offset[:, :2]) - self.radius**2
        root = torch.sqrt(half_b**2 - a * c)
        side = torch.stack([(-half_b - root) / a, (-half_b + root) / a], dim=1)
        side = torch.where((offset[:, 2:] + side * directions[:, 2:]).abs() <= self.half_height, side, torch.inf)
        # caps: z = -h, +h, inside the radius
        heights = _like([-self.half_height, self.half_height], origins)
        caps = (heights - offset[:, 2:]) / directions[:, 2:]
        cap_xy = offset[:, None, :2] + caps[..., None] * directions[:, None, :2]
        caps = torch.where(cap_xy[..., 0] ** 2 + cap_xy[..., 1] ** 2 <= self.radius**2, caps, torch.inf)
        distances, surface = _nearest(torch.cat([side, caps], dim=1))
        points = offset + distances[:, None] * directions
        on_side = (surface < 2)[:, None]
        side_normals = torch.nn.functional.pad(points[:, :2] / self.radius, (0, 1))
        cap_normals = torch.nn.functional.pad(2.0 * (surface == 3).to(origins)[:, None] - 1.0, (2, 0))
        return distances, torch.where(on_side, side_normals, cap_normals)


@dataclass(frozen=True)
class Rings:
    """Flat concentric rings in the horizontal plane through `center` (3,), world units.

    `n_rings` rings of width duty * pitch start every pitch = (outer_radius - inner_radius) / n_rings
    from `inner_radius`, with gaps between them. The normal is +z from both sides.
    """

    center: Sequence[float]
    inner_radius: float
    outer_radius: float
    n_rings: int
    duty: float
    texture: Texture

    def bounding_sphere(self) -> tuple[Sequence[float], float]:
        return self.center, self.outer_radius

    def intersect(self, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset = origins - _like(self.center, origins)
        distances = -offset[:, 2] / directions[:, 2]
        radius = (offset[:, :2] + distances[:, None] * directions[:, :2]).norm(dim=-1)
        phase = (radius - self.inner_radius) * self.n_rings / (self.outer_radius - self.inner_radius)
        on_ring = (phase >= 0) & (radius <= self.outer_radius) & (phase - torch.floor(phase) < self.duty)
        distances, _ = _nearest(torch.where(on_ring, distances, torch.inf)[:, None])
        normals = _like([0.0, 0.0, 1.0], origins).expand_as(origins)
        return distances, normals


Primitive = Union[Spheres, Box, Cylinder, Rings]


def _fibonacci_sphere(n: int) -> torch.Tensor:
    """(n, 3) nearly evenly spread unit vectors (a Fibonacci lattice)."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    azimuth = math.pi * (3.0 - math.sqrt(5.0)) * k
    ring = torch.sqrt(1.0 - z**2)
    return torch.stack([ring * torch.cos(azimuth), ring * torch.sin(azimuth), z], dim=-1)


def _sphere(center: Sequence[float], radius: float, texture: Texture) -> Spheres:
    return Spheres(torch.tensor([center], dtype=torch.float64), torch.tensor([radius], dtype=torch.float64), texture)


def _primitives_scene() -> tuple[Primitive, ...]:
    return (
        _sphere((0.0, 0.0, 0.0), 0.6, solid((0.85, 0.2, 0.15))),
        Box((0.4, -1.0, -0.9), (1.0, -0.4, -0.3), solid((0.2, 0.7, 0.3))),
        Cylinder((-0.85, -0.45, -0.4), 0.3, 0.5, solid((0.2, 0.35, 0.85))),
        _sphere((-0.3, 0.85, 0.5), 0.3, solid((0.95, 0.8, 0.2))),
    )


def _textured_scene() -> tuple[Primitive, ...]:
    # sizes keep the texture edges off the faces and caps, where rounding would pick a cell at random
    return (
        _sphere((0.0, 0.0, 0.0), 0.8, sphere_checker((0.0, 0.0, 0.0), 16, 8, (0.95, 0.55, 0.1), (0.95, 0.92, 0.85))),
        Box((-1.2, -1.2, -1.3), (1.2, 1.2, -1.0), checker(0.35, (0.15, 0.3, 0.75), (0.9, 0.9, 0.9))),
        Cylinder((0.85, 0.85, -0.45), 0.28, 0.55, stripes(2, 0.15, (0.8, 0.1, 0.15), (0.95, 0.95, 0.95))),
    )


def _detail_scene() -> tuple[Primitive, ...]:
    bumps, radii = 0.85 * _fibonacci_sphere(160), torch.full((160,), 0.05, dtype=torch.float64)
    octant = (bumps > 0).long() @ torch.tensor([1, 2, 4])  # one primitive per octant: tighter bounding spheres
    return (
        _sphere((0.0, 0.0, 0.0), 0.85, stripes(2, 0.05, (0.1, 0.2, 0.5), (0.9, 0.85, 0.6))),
        *(Spheres(bumps[octant == k], radii[octant == k], solid((0.95, 0.95, 0.95))) for k in range(8)),
        Rings((0.0, 0.0, 0.0), 1.0, 1.35, 16, 0.5, solid((0.9, 0.55, 0.25))),
    )


@dataclass(frozen=True)
class SceneSpec:
    """A named scene: what it shows and tests, and a function that builds its primitives."""

    description: str
    build: Callable[[], tuple[Primitive, ...]]


SCENES: dict[str, SceneSpec] = {
    "primitives": SceneSpec(
        "two spheres, an axis-aligned box and a capped cylinder in solid colours: geometry, occlusion, smooth shading",
        _primitives_scene,
    ),
    "textured": SceneSpec(
        "a sphere with a 16 x 8 longitude / latitude checkerboard on a slab with a 3-D world checkerboard, "
        "and a striped cylinder: sharp texture edges at mid frequencies",
        _textured_scene,
    ),
    "detail": SceneSpec(
        "a sphere with 0.025-wide stripes and 160 small bumps (radius 0.05), inside 16 thin flat rings with gaps: "
        "high-frequency colour and thin geometry",
        _detail_scene,
    ),
}


def _scene(name: str) -> tuple[Primitive, ...]:
    if not isinstance(name, str) or name not in SCENES:
        raise NfieldError(f"unknown synthetic scene {name!r}; choose one of {', '.join(SCENES)}")
    return SCENES[name].build()


def _check_count(what: str, value: int, minimum: int = 1) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise NfieldError(f"{what} must be an integer >= {minimum}, got {value!r}")


def lambert(albedo: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """The scenes' shading: (N, 3) albedo and (N, 3) unit normals -> (N, 3) colour in [0, 1]."""
    cosine = (normals @ _like(LIGHT_DIRECTION, normals)).clamp(min=0.0)
    return albedo * (AMBIENT + (1.0 - AMBIENT) * cosine)[:, None]


def _intersect(primitive: Primitive, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """primitive.intersect, run only on the rays that meet its bounding sphere (most rays miss most primitives)."""
    center, radius = primitive.bounding_sphere()
    offset = origins - _like(center, origins)
    half_b = _dot(offset, directions)
    c = _dot(offset, offset) - (radius + 1e-6) ** 2
    rays = torch.nonzero((half_b**2 >= c) & ((half_b < 0) | (c < 0))).squeeze(1)  # a root t > 0 exists
    distances = torch.full_like(half_b, torch.inf)
    normals = torch.zeros_like(origins)
    if len(rays):
        distances[rays], normals[rays] = primitive.intersect(origins[rays], directions[rays])
    return distances, normals


def _cast(primitives: Sequence[Primitive], origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (N,) and colour (N, 3) of the first hit for (N, 3) origins and unit directions, in chunks."""
    depths, colours = origins.new_empty(len(origins)), torch.zeros_like(origins)
    for start in range(0, len(origins), _CHUNK):
        chunk_origins, chunk_directions = origins[start : start + _CHUNK], directions[start : start + _CHUNK]
        hits = [_intersect(primitive, chunk_origins, chunk_directions) for primitive in primitives]
        depth, nearest = torch.stack([distance for distance, _ in hits], dim=1).min(dim=1)
        colour = colours[start : start + _CHUNK]  # a view: written in place
        for index, (primitive, (_, normals)) in enumerate(zip(primitives, hits)):
            mask = (nearest == index) & torch.isfinite(depth)
            points = chunk_origins[mask] + depth[mask, None] * chunk_directions[mask]
            colour[mask] = lambert(primitive.texture(points), normals[mask])
        depths[start : start + _CHUNK] = depth
    return depths, colours


def cast_rays(name: str, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact first hits of rays with scene `name`, in float64.

    Args:
        name: a key of SCENES.
        origins: (N, 3) ray origins, world units.
        directions: (N, 3) ray directions (normalised here).

    Returns:
        depth: (N,) float64 distance from the origin to the first hit, world units; inf on a miss.
        rgb: (N, 3) float64 shaded colour there in [0, 1]; 0 on a miss.

    Example::

        >>> depth, rgb = cast_rays("primitives", torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
        >>> depth
        tensor([3.4000], dtype=torch.float64)
    """
    primitives = _scene(name)
    origins, directions = torch.as_tensor(origins, dtype=torch.float64), torch.as_tensor(directions, dtype=torch.float64)
    if origins.ndim != 2 or origins.shape[-1] != 3 or origins.shape != directions.shape:
        raise NfieldError(
            f"cast_rays: origins and directions must both be (N, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    return _cast(primitives, origins, directions / directions.norm(dim=-1, keepdim=True))


def _render(primitives: Sequence[Primitive], c2w: torch.Tensor, width: int, height: int, fov_x: float, supersample: int):
    """(H, W, 4) float32 straight-alpha RGBA, averaging supersample^2 rays per pixel (premultiplied)."""
    focal = 0.5 * width / math.tan(0.5 * fov_x) * supersample
    camera = PinholeCamera(
        width * supersample, height * supersample, focal, focal, width * supersample / 2, height * supersample / 2
    )
    depth, rgb = _cast(primitives, *camera_rays(camera, torch.as_tensor(c2w, dtype=torch.float64)))
    premultiplied = torch.cat([rgb, torch.isfinite(depth).double()[:, None]], dim=-1)  # rgb is 0 on a miss
    premultiplied = premultiplied.reshape(height, supersample, width, supersample, 4).mean(dim=(1, 3))
    alpha = premultiplied[..., 3:]
    rgb = torch.where(alpha > 0, premultiplied[..., :3] / alpha.clamp(min=1e-12), 0.0)
    return torch.cat([rgb, alpha], dim=-1).float()


def render_view(name: str, c2w: torch.Tensor, width: int, height: int, fov_x: float, supersample: int = 1) -> torch.Tensor:
    """Exact image of scene `name` from a pinhole camera, with a transparent background.

    Args:
        name: a key of SCENES.
        c2w: (4, 4) (or (3, 4)) camera-to-world pose; the camera looks along its -z axis.
        width, height: image size in pixels; square pixels, principal point at the image centre.
        fov_x: horizontal field of view, radians in (0, pi), edge to edge of the image.
        supersample: s casts s x s rays per pixel on a regular grid and averages them with
            premultiplied alpha (1: one ray through each pixel centre).

    Returns:
        (height, width, 4) float32 RGBA in [0, 1], straight (not premultiplied) alpha: the
        fraction of a pixel's rays that hit; rgb is 0 where none does.

    Example::

        >>> render_view("detail", look_at((4.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)), 16, 16, 0.69)[8, 8, 3]
        tensor(1.)
    """
    primitives = _scene(name)
    _check_count("render_view: width", width)
    _check_count("render_view: height", height)
    _check_count("render_view: supersample", supersample)
    if not (isinstance(fov_x, (int, float)) and 0.0 < fov_x < math.pi):
        raise NfieldError(f"render_view: fov_x must be an angle in (0, pi) radians, got {fov_x!r}")
    if torch.as_tensor(c2w).shape not in ((4, 4), (3, 4)):
        raise NfieldError(
            f"render_view: c2w must be a (4, 4) camera-to-world matrix, got shape {tuple(torch.as_tensor(c2w).shape)}"
        )
    return _render(primitives, c2w, width, height, fov_x, supersample)


def _hemisphere_poses(n: int, seed: int, stream: int) -> torch.Tensor:
    """(n, 4, 4) cameras at random on the sphere of radius CAMERA_DISTANCE, up to TRAIN_MAX_ELEVATION_DEG, uniform in area."""
    rng = np.random.default_rng([seed, stream])
    height = rng.uniform(0.0, math.sin(math.radians(TRAIN_MAX_ELEVATION_DEG)), n)
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    ring = np.sqrt(1.0 - height**2)
    eyes = CAMERA_DISTANCE * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), height], axis=-1)
    return torch.stack([look_at(eye.tolist(), up=(0.0, 0.0, 1.0)) for eye in eyes])


def generate(
    name: str,
    out_dir: Path,
    size: int = 64,
    n_train: int = 50,
    n_val: int = 5,
    n_test: int = 10,
    seed: int = 0,
    supersample: int = 2,
) -> Path:
    """Write scene `name` as a NeRF Blender-synthetic dataset (layout in the module docstring).

    Args:
        name: a key of SCENES.
        out_dir: folder to write into, created if needed; files of the same names are replaced.
        size: width and height of every image, pixels.
        n_train, n_val, n_test: number of views per split, each >= 1.
        seed: non-negative integer that picks the train and val cameras (test cameras are a fixed ring).
        supersample: s x s rays per pixel, averaged with premultiplied alpha (antialiased edges); 1 for none.

    Returns:
        out_dir, as a Path. The same arguments write byte-identical files.

    Example::

        >>> generate("textured", Path("data/textured"), size=100, n_train=20)
        PosixPath('data/textured')
    """
    primitives = _scene(name)
    for what, value in (("size", size), ("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("supersample", supersample)):
        _check_count(f"generate: {what}", value)
    _check_count("generate: seed", seed, minimum=0)
    out_dir = Path(out_dir)
    splits = {
        "train": _hemisphere_poses(n_train, seed, 0),
        "val": _hemisphere_poses(n_val, seed, 1),
        "test": orbit_poses(n_test, CAMERA_DISTANCE, TEST_ELEVATION_DEG, up=(0.0, 0.0, 1.0)),
    }
    for split, poses in splits.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for index, c2w in enumerate(poses):
            rgba = _render(primitives, c2w, size, size, CAMERA_ANGLE_X, supersample)
            iio.imwrite(out_dir / split / f"r_{index}.png", (rgba * 255).round().to(torch.uint8).numpy())
            frames.append({"file_path": f"./{split}/r_{index}", "rotation": 0.0, "transform_matrix": c2w.tolist()})
        transforms = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(transforms, indent=4) + "\n")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate one dataset and print what was written; NfieldError -> stderr, exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m scenes.synthetic",
        description="Ray cast an analytic scene into a NeRF Blender-synthetic dataset (transforms_*.json, RGBA PNGs).",
    )
    parser.add_argument("name", help="scene: " + "; ".join(f"{key}: {spec.description}" for key, spec in SCENES.items()))
    parser.add_argument("out_dir", type=Path, help="output folder")
    parser.add_argument("--size", type=int, default=64, help="image width and height, pixels")
    parser.add_argument("--train", type=int, default=50, help="train views")
    parser.add_argument("--val", type=int, default=5, help="val views")
    parser.add_argument("--test", type=int, default=10, help="test views (a ring at 30 degrees of elevation)")
    parser.add_argument("--seed", type=int, default=0, help="picks the train and val cameras")
    parser.add_argument("--supersample", type=int, default=2, help="s x s rays per pixel (1: no antialiasing)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        generate(args.name, args.out_dir, args.size, args.train, args.val, args.test, args.seed, args.supersample)
    except NfieldError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.name!r} to {args.out_dir}: {args.train} train, {args.val} val, {args.test} test RGBA views of "
        f"{args.size}x{args.size} (transforms_train/val/test.json, train/ val/ test/ r_*.png) in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
