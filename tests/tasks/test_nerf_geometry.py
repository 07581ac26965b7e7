"""Geometry from radiance fields: meshes of the density's level set and point clouds of the training views.

Exactness on an analytic field (a ball whose density is known in closed form, with a colour that
depends on the side it is seen from), then end to end through the CLI on a tiny NeRF trained on the
generated "primitives" scene, against the scene's analytic surfaces.
"""

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from torch import nn

from nfield.cli import main
from nfield.errors import NfieldError
from nfield.render.cameras import CameraSet, PinholeCamera, camera_rays, look_at
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.radiance import render_image
from nfield.tasks.nerf import NeRFTaskConfig
from nfield.tasks.nerf_geometry import (
    default_level,
    extract_nerf_mesh,
    nerf_point_cloud,
    write_colored_mesh,
    write_point_cloud,
)
from scenes.synthetic import CAMERA_ANGLE_X, CAMERA_DISTANCE, SCENES, Box, Cylinder, Spheres, cast_rays

CENTRE, RADIUS = torch.tensor([0.2, -0.1, 0.15]), 0.55
LEVEL, SLOPE = 50.0, 2000.0  # density LEVEL on the sphere, rising by SLOPE per unit of depth inside
FRONT, BACK = (0.9, 0.3, 0.1), (0.1, 0.8, 0.2)  # the colour seen from outside, and from inside
AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: a second thread only adds contention (5x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BallField(nn.Module):
    """A radiance field with the interface of nfield's: density max(0, LEVEL + SLOPE (RADIUS - |x - CENTRE|)),
    colour FRONT seen from outside (d . (x - CENTRE) < 0), BACK from inside. Records every density point."""

    def __init__(self):
        super().__init__()
        self.register_buffer("aabb", AABB.clone())
        self.density_points: list[torch.Tensor] = []

    def sigma(self, x):
        return (LEVEL + SLOPE * (RADIUS - (x - CENTRE).norm(dim=-1))).clamp_min(0)

    def density(self, x):
        self.density_points.append(x.detach().clone())
        return self.sigma(x)

    def forward(self, x, d):
        outside = ((x - CENTRE) * d).sum(dim=-1, keepdim=True) < 0
        return torch.where(outside, torch.tensor(FRONT), torch.tensor(BACK)), self.sigma(x)


def ball_model(grid_resolution=16):
    """The ball with an occupancy grid whose occupied cells are exactly those meeting the density's support."""
    field = BallField()
    grid = OccupancyGrid(OccupancyGridConfig(resolution=grid_resolution), AABB, field.density, step_size=0.01)
    cells = torch.arange(grid_resolution**3)
    lo, size = grid.cell_corners(torch.zeros_like(cells), cells)
    nearest = torch.maximum(torch.minimum(CENTRE, lo + size), lo)  # the point of each cell nearest the centre
    grid.occupied[0] = (nearest - CENTRE).norm(dim=-1) < RADIUS + LEVEL / SLOPE
    return nn.ModuleDict({"field": field, "grid": grid})


def sphere_samples(n, centre=CENTRE.numpy(), radius=RADIUS, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return centre + radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def test_mesh_of_an_analytic_ball_is_on_the_sphere_faces_outward_and_has_its_front_colour():
    resolution = 48
    cell = 2.0 / (resolution - 1)
    vertices, faces, colors = extract_nerf_mesh(ball_model(), resolution, LEVEL)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64 and colors.shape == vertices.shape
    off_surface = np.abs(np.linalg.norm(vertices - CENTRE.numpy(), axis=1) - RADIUS)
    assert off_surface.max() < 0.1 * cell  # linear in the distance but for its clamp at 0: not quite exact
    truth = sphere_samples(20000)
    completeness = cKDTree(vertices).query(truth)[0]
    chamfer = 0.5 * (off_surface.mean() + completeness.mean())
    assert chamfer < 0.5 * cell and completeness.max() < cell
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.02)
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - CENTRE.numpy())
    assert (outward > 0).all()  # every face's normal points away from the centre: out of the object
    assert np.allclose(colors, FRONT)  # colours queried looking at the surface from outside (d = -normal)


def test_only_samples_in_occupied_cells_are_evaluated():
    model, resolution = ball_model(), 40
    extract_nerf_mesh(model, resolution, LEVEL, chunk=5000)
    evaluated = torch.cat(model["field"].density_points)
    axis = torch.linspace(-1.0, 1.0, resolution)
    every = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    wanted = model["grid"].occupied_at(every) & (every.abs() < 1).all(dim=-1)
    assert model["grid"].occupied_at(evaluated).all()
    assert len(evaluated) == int(wanted.sum()) < 0.25 * len(every)  # each wanted sample once, no other


def canonical_faces(faces):
    """Faces rotated to start at their smallest index (keeping the winding), sorted."""
    faces = np.stack([np.roll(f, -int(np.argmin(f))) for f in faces])
    return faces[np.lexsort(faces.T[::-1])]


def test_slab_size_does_not_change_the_mesh():
    vertices, faces, colors = extract_nerf_mesh(ball_model(), 33, LEVEL, slab=1)
    for slab in (5, None):
        other, other_faces, other_colors = extract_nerf_mesh(ball_model(), 33, LEVEL, slab=slab)
        distance, same = cKDTree(vertices).query(other)  # slabs place vertices from their own first layer: rounding
        assert len(other) == len(vertices) and distance.max() < 1e-6 and len(np.unique(same)) == len(same)
        assert np.array_equal(canonical_faces(same[other_faces]), canonical_faces(faces))
        assert np.allclose(other_colors, colors[same])


def test_default_level_is_half_opacity_over_one_march_step():
    step = float((AABB[1] - AABB[0]).norm()) / 100
    assert default_level(AABB, 100) == pytest.approx(math.log(2) / step)
    assert 1 - math.exp(-default_level(AABB, 100) * step) == pytest.approx(0.5)


def test_a_field_below_the_level_a_nan_field_or_a_bad_suffix_is_refused_in_one_line(tmp_path):
    with pytest.raises(NfieldError, match=r"never reaches --level 5000 .*largest sampled"):
        extract_nerf_mesh(ball_model(), 16, 5000.0)
    model = ball_model()
    model["field"].sigma = lambda x: torch.full((len(x),), float("nan"))
    with pytest.raises(NfieldError, match="density is not finite"):
        extract_nerf_mesh(model, 16, LEVEL)
    with pytest.raises(NfieldError, match=r"written as \.ply, \.obj, \.glb, not '\.stl'"):
        write_colored_mesh(tmp_path / "m.stl", np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 3)))


def eye(distance, azimuth, elevation):
    """A camera position at `distance` from the origin, angles in radians (z up)."""
    return distance * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def ring_cameras(n=6, size=32, distance=2.0):
    """n cameras around the ball, alternately 25 degrees above and below it, looking at its centre."""
    poses = []
    for k in range(n):
        position = CENTRE.numpy() + eye(distance, 2 * math.pi * k / n, math.radians(25 * (-1) ** k))
        poses.append(look_at(position.tolist(), CENTRE.tolist(), up=(0.0, 0.0, 1.0)))
    focal = 0.5 * size / math.tan(0.4)
    full = lambda value: torch.full((n,), value)  # noqa: E731
    return CameraSet(
        c2w=torch.stack(poses).float(),
        fx=full(focal),
        fy=full(focal),
        cx=full(size / 2),
        cy=full(size / 2),
        width=full(size).long(),
        height=full(size).long(),
        distortion=torch.zeros(n, 4),
    )


def test_point_cloud_of_an_analytic_ball_lies_on_it_with_its_colour(tmp_path):
    model, cfg, black = ball_model(), NeRFTaskConfig(steps_per_ray=1024), torch.zeros(3)
    render = lambda o, d: render_image(model, cfg.render_settings(), 0.05, o, d, black)  # noqa: E731
    cameras = ring_cameras()
    points, colors = nerf_point_cloud(render, cameras, downscale=2, max_points=10**6)
    error = np.abs(np.linalg.norm(points - CENTRE.numpy(), axis=1) - RADIUS)
    step = 2 * math.sqrt(3) / 1024  # the march step; the density's shell, where rays stop, is 0.025 thick
    assert len(points) > 0.25 * 6 * 16 * 16 and np.median(error) < 2 * step
    assert error.max() < 0.02  # grazing rays at the silhouette cross the shell obliquely and stop a little further out
    front = np.abs(colors - np.array(FRONT)).max(axis=1) < 1e-3  # grazing rays also see the far side's colour
    assert front.mean() > 0.8
    two = ring_cameras(2)
    every, _ = nerf_point_cloud(render, two, downscale=2)
    few, _ = nerf_point_cloud(render, two, downscale=2, max_points=100)
    again, _ = nerf_point_cloud(render, two, downscale=2, max_points=100)
    assert len(every) > 100 and len(few) == 100 and np.array_equal(few, again)  # a fixed-seed subset ...
    assert (cKDTree(every).query(few)[0] == 0).all()  # ... of the full cloud
    path = write_point_cloud(tmp_path / "p.ply", points, colors)
    cloud = trimesh.load(path)
    assert np.allclose(cloud.vertices, points) and np.array_equal(cloud.colors[:, :3], np.round(colors * 255))
    with pytest.raises(NfieldError, match="more than --min-opacity 0.5"):
        nerf_point_cloud(lambda o, d: {**render(o, d), "opacity": torch.zeros(len(o))}, cameras, min_opacity=0.5)


# --- end to end: the session's ngp run, trained from the CLI on the generated "primitives" scene ---------

SCENE = "primitives"


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def scene_surface(n=4000, seed=0):
    """Points sampled on every surface of the scene's primitives (the truth the geometry is held to)."""
    rng, parts = np.random.default_rng(seed), []
    for primitive in SCENES[SCENE].build():
        if isinstance(primitive, Spheres):
            parts += [sphere_samples(n, c, r, seed) for c, r in zip(primitive.centers.numpy(), primitive.radii.numpy())]
        elif isinstance(primitive, Box):
            low, high = np.array(primitive.low), np.array(primitive.high)
            points, axis = rng.uniform(low, high, (n, 3)), rng.integers(0, 3, n)
            points[np.arange(n), axis] = np.where(rng.integers(0, 2, n), high[axis], low[axis])
            parts.append(points)
        elif isinstance(primitive, Cylinder):
            angle, r = rng.uniform(0, 2 * np.pi, n), primitive.radius * np.sqrt(rng.uniform(0, 1, n))
            z = rng.uniform(-primitive.half_height, primitive.half_height, n)
            cap = np.where(rng.integers(0, 2, n), primitive.half_height, -primitive.half_height)
            parts.append(primitive.center + np.stack([primitive.radius * np.cos(angle), primitive.radius * np.sin(angle), z], 1))
            parts.append(primitive.center + np.stack([r * np.cos(angle), r * np.sin(angle), cap], 1))
    return np.concatenate(parts)


def visible_surface(views=16, size=48):
    """The scene's first hits seen from a ring of cameras like the training ones (what a NeRF can know)."""
    focal, parts = 0.5 * size / math.tan(CAMERA_ANGLE_X / 2), []
    camera = PinholeCamera(size, size, focal, focal, size / 2, size / 2)
    for k in range(views):
        position = eye(CAMERA_DISTANCE, 2 * math.pi * k / views, math.radians(15 + 50 * (k % 2)))
        origins, directions = camera_rays(camera, look_at(position.tolist(), up=(0.0, 0.0, 1.0)).double())
        depth, _ = cast_rays(SCENE, origins, directions)
        hit = torch.isfinite(depth)
        parts.append((origins[hit] + depth[hit, None] * directions[hit]).numpy())
    return np.concatenate(parts)


def accuracy_and_completeness(points):
    """Mean distance from `points` to the scene's surfaces, and from its visible surface to `points`."""
    return cKDTree(scene_surface()).query(points)[0].mean(), cKDTree(points).query(visible_surface())[0].mean()


@pytest.fixture(scope="module")
def trained(ngp_run):
    """The session's ngp run on the generated primitives scene (tests/conftest.py)."""
    return ngp_run


def test_mesh_and_point_cloud_of_a_tiny_trained_nerf_are_near_the_scene(trained, capsys, tmp_path):
    # a random cloud in the box scores 0.63 / 0.10 and one in [-1, 1]^3 0.30 / 0.07: accuracy is what tells them apart
    status, _, err = run(capsys, "mesh", trained, "--resolution", 64, "--out", tmp_path / "m.ply", "--device", "cpu")
    assert status == 0, err
    assert f"wrote {tmp_path / 'm.ply'}" in err and "density level 8.537" in err
    mesh = trimesh.load(tmp_path / "m.ply", process=False)
    assert len(mesh.faces) > 1000 and mesh.visual.kind == "vertex"
    assert len(np.unique(mesh.visual.vertex_colors[:, :3], axis=0)) > 10  # coloured by the field, not one flat colour
    accuracy, completeness = accuracy_and_completeness(np.asarray(mesh.vertices))
    assert accuracy < 0.2 and completeness < 0.2, (accuracy, completeness)  # measured 0.09 and 0.12

    status, _, err = run(capsys, "export", trained, "--point-cloud", "--out", tmp_path / "p.ply", "--no-progress")
    assert status == 0, err
    cloud = trimesh.load(tmp_path / "p.ply")
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) > 200 and cloud.colors.shape[1] == 4
    accuracy, completeness = accuracy_and_completeness(np.asarray(cloud.vertices))
    assert accuracy < 0.15 and completeness < 0.2, (accuracy, completeness)  # measured 0.08 and 0.08
    status, _, err = run(capsys, "export", trained, "--point-cloud", "--points", 50, "--out", tmp_path / "p.glb", "--no-progress")
    assert status == 0 and len(trimesh.load(tmp_path / "p.glb").geometry.popitem()[1].vertices) == 50, err


def test_geometry_commands_refuse_bad_input_in_one_line(trained, capsys, tmp_path):
    image_run = tmp_path / "image"
    iio.imwrite(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    status, _, err = run(capsys, "fit-image", tmp_path / "noise.png", "--steps", 2, "--out", image_run, "--no-progress")
    assert status == 0, err
    cases = [
        (("export", image_run, "--point-cloud"), "is a 'image' run; export --point-cloud renders the training views of NeRF"),
        (("export", trained), "pass --point-cloud"),
        (("export", trained, "--point-cloud", "--out", tmp_path / "p.xyz"), "written as .ply, .obj, .glb, not '.xyz'"),
        (("export", trained, "--point-cloud", "--points", 0), "--points 0"),
        (("mesh", trained, "--out", tmp_path / "m.stl"), "written as .ply, .obj, .glb, not '.stl'"),
        (("mesh", trained, "--lod", 1), "--lod applies to SDF runs"),
        (("mesh", trained, "--level", -1.0), "--level -1"),
        (("mesh", trained, "--resolution", 16, "--level", 1e9), "never reaches --level"),
        (("mesh", image_run, "--level", 3.0), "the density's level set of NeRF runs"),
    ]
    for argv, message in cases:
        status, _, err = run(capsys, *argv, "--no-progress")
        lines = err.strip().splitlines()
        assert status == 1 and len(lines) == 1 and lines[0].startswith("nfield: error:") and message in lines[0], (argv, err)
