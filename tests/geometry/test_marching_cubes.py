import math
import re

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

import nfield.geometry.marching_cubes
from nfield.errors import NfieldError
from nfield.geometry.marching_cubes import check_extraction_memory, extract_mesh, extraction_memory_bytes, write_mesh

CENTER = torch.tensor([0.1, -0.05, 0.07])


def sphere(points, radius=0.55):
    return (points - CENTER).norm(dim=1) - radius


def torus(points, major=0.5, minor=0.2):
    x, y, z = (points - CENTER).unbind(1)
    return torch.sqrt((torch.sqrt(x**2 + y**2) - major) ** 2 + z**2) - minor


def gyroid(points):
    x, y, z = (7.0 * points).unbind(1)
    return torch.sin(x) * torch.cos(y) + torch.sin(y) * torch.cos(z) + torch.sin(z) * torch.cos(x)


def box(points):
    """A cube whose faces lie on grid layers at resolution 9: exact zeros, coincident vertices."""
    return points.abs().max(dim=1).values - 0.5


def single_pass(sdf, resolution, bounds=(-1.0, 1.0)):
    """scikit-image marching cubes over the whole grid at once, in world coordinates."""
    lo, hi = bounds
    axis = np.linspace(lo, hi, resolution).astype(np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    values = sdf(torch.from_numpy(grid)).numpy().reshape(resolution, resolution, resolution)
    cell = (hi - lo) / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(values, 0.0, spacing=(cell, cell, cell), gradient_direction="descent")
    return vertices + lo, faces


def canonical_triangles(labels, faces):
    """Triangles as sorted rows of vertex labels, each rotated to its smallest rotation (winding kept)."""
    tri = labels[faces].astype(np.int64)
    rotations = np.stack([tri[:, [k, (k + 1) % 3, (k + 2) % 3]] for k in range(3)])
    keys = (rotations[..., 0] << 42) | (rotations[..., 1] << 21) | rotations[..., 2]
    return np.sort(keys.min(axis=0))


def assert_same_mesh(vertices, faces, ref_vertices, ref_faces):
    """Same vertices (up to order and float rounding), same triangles with the same winding.

    Coincident reference vertices are given one label, so meshes with several vertices at one point
    compare by geometry there; vertex, face and edge counts and watertightness still compare topology.
    """
    assert vertices.shape == ref_vertices.shape and faces.shape == ref_faces.shape
    distance, nearest = cKDTree(ref_vertices).query(vertices)
    assert distance.max() < 1e-5
    groups = cKDTree(ref_vertices).query_ball_point(ref_vertices, r=1e-5)
    label = np.array([min(group) for group in groups])
    assert np.array_equal(canonical_triangles(label[nearest], faces), canonical_triangles(label, ref_faces))
    mesh, ref = trimesh.Trimesh(vertices, faces, process=False), trimesh.Trimesh(ref_vertices, ref_faces, process=False)
    assert len(mesh.edges_unique) == len(ref.edges_unique)
    assert mesh.is_watertight == ref.is_watertight


@pytest.mark.parametrize("sdf", [sphere, torus, gyroid], ids=["sphere", "torus", "gyroid"])
@pytest.mark.parametrize("slab", [1, 5])
def test_slabs_give_the_single_pass_mesh(sdf, slab):
    vertices, faces = extract_mesh(sdf, 48, slab=slab)
    ref_vertices, ref_faces = single_pass(sdf, 48)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64
    assert_same_mesh(vertices, faces, ref_vertices, ref_faces)
    # no coincident vertices here, so the vertex correspondence must be one-to-one
    assert len(np.unique(cKDTree(ref_vertices).query(vertices)[1])) == len(vertices)


@pytest.mark.parametrize("slab", [1, 2, 3])
def test_slabs_keep_a_watertight_mesh_where_vertices_coincide(slab):
    vertices, faces = extract_mesh(box, 9, slab=slab)
    ref_vertices, ref_faces = single_pass(box, 9)
    assert_same_mesh(vertices, faces, ref_vertices, ref_faces)
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight


def test_sphere_is_on_the_sphere_and_faces_outward():
    radius = 0.55
    vertices, faces = extract_mesh(sphere, 64, bounds=(-0.75, 0.75), slab=7)
    distance = np.linalg.norm(vertices - CENTER.numpy(), axis=1)
    assert np.abs(distance - radius).max() < 1e-2
    assert vertices.min() >= -0.75 and vertices.max() <= 0.75
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight
    assert mesh.volume > 0  # counter-clockwise seen from outside
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)


def test_sdf_fn_gets_chunks_of_float32_points_without_grad():
    calls = []

    def recording(points):
        calls.append((len(points), points.dtype, torch.is_grad_enabled()))
        return sphere(points)

    vertices, faces = extract_mesh(recording, 20, chunk=1000, slab=4)
    assert {dtype for _, dtype, _ in calls} == {torch.float32}
    assert max(n for n, _, _ in calls) <= 1000
    assert not any(grad for _, _, grad in calls)
    assert sum(n for n, _, _ in calls) == 20**3  # the overlap layers are not evaluated twice
    quiet = extract_mesh(sphere, 20, slab=4, progress=True)
    assert np.array_equal(quiet[0], vertices) and np.array_equal(quiet[1], faces)


@pytest.mark.parametrize("sdf", [lambda p: sphere(p) + 5.0, lambda p: sphere(p) - 5.0, lambda p: sphere(p, radius=1e-3)])
def test_a_field_without_surface_is_an_error(sdf):
    with pytest.raises(NfieldError, match="no surface inside the box at resolution 16"):
        extract_mesh(sdf, 16)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_values_are_an_error(bad):
    def broken(points):
        return torch.where(points[:, 0] > 0.5, torch.full_like(points[:, 0], bad), sphere(points))

    with pytest.raises(NfieldError, match="must be finite"):
        extract_mesh(broken, 16, slab=3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(resolution=1), dict(slab=0), dict(chunk=0), dict(bounds=(1.0, -1.0)), dict(bounds=(0.0, math.nan))],
)
def test_invalid_arguments_are_errors(kwargs):
    with pytest.raises(NfieldError):
        extract_mesh(sphere, **{"resolution": 16, **kwargs})


def test_sdf_fn_must_return_one_value_per_point():
    with pytest.raises(NfieldError, match="one value per point"):
        extract_mesh(lambda p: torch.zeros(len(p), 2), 8)


def test_memory_check_names_the_largest_resolution_that_fits():
    budget = 2**30
    with pytest.raises(NfieldError, match="largest resolution that fits is about") as error:
        check_extraction_memory(4096, available_bytes=budget)
    assert "--resolution 4096" in str(error.value)
    fits = int(re.search(r"about (\d+)$", str(error.value)).group(1))
    assert extraction_memory_bytes(fits) <= budget < extraction_memory_bytes(fits + 1)
    check_extraction_memory(64, available_bytes=budget)
    check_extraction_memory(64)  # this machine's own MemAvailable
    assert extraction_memory_bytes(512) < 2**30  # 512^3 extracts within a GiB (plus sdf_fn's own)


def test_extract_mesh_checks_memory_before_evaluating(monkeypatch):
    monkeypatch.setattr(nfield.geometry.marching_cubes, "available_memory_bytes", lambda: 2**20)

    def never(points):
        raise AssertionError("sdf_fn was called before the memory check")

    with pytest.raises(NfieldError, match="GiB for mesh extraction"):
        extract_mesh(never, 256)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_write_mesh_round_trips(tmp_path, suffix):
    vertices, faces = extract_mesh(torus, 24)
    path = write_mesh(tmp_path / "nested" / f"torus{suffix}", vertices, faces)
    loaded = trimesh.load(path, process=False, force="mesh")
    np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, faces)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind


def test_write_mesh_rejects_unknown_formats(tmp_path):
    with pytest.raises(NfieldError, match=r"\.ply, \.obj, \.stl, \.off, \.glb"):
        write_mesh(tmp_path / "mesh.xyz", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    assert not any(tmp_path.iterdir())
