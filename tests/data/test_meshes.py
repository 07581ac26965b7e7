from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from nfield.data.meshes import Normalisation, OrientedPointCloud, TriangleMesh, load_shape, sample_surface
from nfield.errors import NfieldError
from nfield.geometry.distance import signed_distance, winding_number

BUNNY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdf" / "bunny.obj"
needs_bunny = pytest.mark.skipif(not BUNNY.exists(), reason="shared data not available")


def _mesh(tm: trimesh.Trimesh) -> TriangleMesh:
    return TriangleMesh(
        torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces, dtype=torch.int64), Normalisation((0, 0, 0), 1.0)
    )


def _box_sdf(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    q = p.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


@pytest.mark.parametrize("backend", ["torch", "libigl"])
def test_box_mesh_distance_matches_closed_form(backend):
    half = torch.tensor([0.5, 0.3, 0.2])
    mesh = _mesh(trimesh.creation.box(extents=(2 * half).tolist()))
    points = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = signed_distance(mesh, points, backend)
    torch.testing.assert_close(got, _box_sdf(points, half), atol=1e-5, rtol=0)
    assert (got < 0).sum() > 50  # the test covers both signs


@pytest.mark.parametrize("backend", ["torch", "libigl"])
def test_sphere_mesh_distance_matches_closed_form_to_tessellation_error(backend):
    radius = 0.6
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    # the polyhedron lies between the inscribed and the circumscribed sphere
    inscribed = np.abs((sphere.triangles_center * sphere.face_normals).sum(-1)).min()
    points = torch.rand(600, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    got = signed_distance(_mesh(sphere), points, backend)
    closed_form = points.norm(dim=-1) - radius
    assert (got - closed_form).abs().max() <= radius - inscribed + 1e-5
    assert radius - inscribed < 3e-3


def test_backends_agree_on_the_bunny_and_sign_survives_its_holes():
    if not BUNNY.exists():
        pytest.skip("shared data not available")
    bunny = load_shape(BUNNY)
    tm = trimesh.load(BUNNY, force="mesh", process=False)
    assert not tm.is_watertight  # the point of the test: an open mesh
    generator = torch.Generator().manual_seed(2)
    points = torch.cat([torch.rand(300, 3, generator=generator) * 2 - 1, sample_surface(bunny, 200, generator)[0]])
    torch.testing.assert_close(
        signed_distance(bunny, points, "torch"), signed_distance(bunny, points, "libigl"), atol=1e-5, rtol=0
    )
    # points pushed 0.01 along the surface normal, whose nearest surface is still that distance away,
    # are outside; pushed against it, inside (ray parity gets many of these wrong through the holes)
    surface, normals = sample_surface(bunny, 3000, generator)
    outside, inside = surface + 0.01 * normals, surface - 0.01 * normals
    d_out, d_in = signed_distance(bunny, outside), signed_distance(bunny, inside)
    clear = ((d_out.abs() - 0.01).abs() < 1e-3) & ((d_in.abs() - 0.01).abs() < 1e-3)
    assert clear.sum() > 2000
    assert (d_out[clear] > 0).all() and (d_in[clear] < 0).all()


def test_winding_number_sign_with_a_hole_punched_in_a_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    keep = sphere.triangles_center[:, 1] < 0.6  # a hole around the north pole
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)
    assert not holed.is_watertight
    mesh = _mesh(holed)
    generator = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(500, 3, generator=generator), dim=-1)
    radii = torch.rand(500, 1, generator=generator)
    inner = directions * radii * 0.5
    outer = directions * (1.0 + radii * 0.5)
    assert (winding_number(mesh.vertices, mesh.faces, inner) > 0.5).all()
    assert (winding_number(mesh.vertices, mesh.faces, outer) < 0.5).all()
    for backend in ("torch", "libigl"):
        assert (signed_distance(mesh, inner, backend) < 0).all()
        assert (signed_distance(mesh, outer, backend) > 0).all()


def test_winding_number_is_one_inside_and_zero_outside_a_closed_mesh():
    mesh = _mesh(trimesh.creation.box(extents=(1, 1, 1)))
    inside = torch.rand(100, 3, dtype=torch.float64) * 0.8 - 0.4
    outside = inside + torch.tensor([1.5, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(winding_number(mesh.vertices, mesh.faces, inside), torch.ones(100, dtype=torch.float64))
    torch.testing.assert_close(
        winding_number(mesh.vertices, mesh.faces, outside), torch.zeros(100, dtype=torch.float64), atol=1e-7, rtol=0
    )


def test_surface_samples_lie_on_the_surface_with_face_normals_and_area_weights():
    mesh = _mesh(trimesh.creation.box(extents=(1.0, 0.5, 0.25)))
    points, normals = sample_surface(mesh, 60000, torch.Generator().manual_seed(4))
    assert signed_distance(mesh, points).abs().max() < 1e-5
    half = torch.tensor([0.5, 0.25, 0.125])
    axis = (points.abs() / half).argmax(dim=-1)  # the face each point is on
    expected_normals = torch.nn.functional.one_hot(axis, 3) * points.sign()
    torch.testing.assert_close(normals, expected_normals.float(), atol=1e-6, rtol=0)
    areas = torch.tensor([0.5 * 0.25, 1.0 * 0.25, 1.0 * 0.5])  # faces normal to x, y, z
    fractions = torch.bincount(axis, minlength=3).float() / len(axis)
    torch.testing.assert_close(fractions, areas / areas.sum(), atol=0.01, rtol=0)


@needs_bunny
def test_bunny_is_normalised_into_the_box_and_maps_back():
    bunny = load_shape(BUNNY)
    assert isinstance(bunny, TriangleMesh) and len(bunny.faces) == 4968
    extent = bunny.vertices.abs().max(dim=0).values
    assert extent.max() == pytest.approx(0.9, abs=1e-6)
    original = trimesh.load(BUNNY, force="mesh", process=False).vertices
    np.testing.assert_allclose(bunny.normalisation.to_input(bunny.vertices.double().numpy()), original, atol=1e-6)
    again = Normalisation.from_dict(bunny.normalisation.to_dict())
    assert again == bunny.normalisation


def _write_ply_points(path: Path, points: np.ndarray, normals: np.ndarray | None) -> None:
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    header = (
        ["ply", "format ascii 1.0", f"element vertex {len(points)}"] + [f"property float {n}" for n in names] + ["end_header"]
    )
    rows = points if normals is None else np.concatenate([points, normals], axis=1)
    path.write_text("\n".join(header + [" ".join(f"{v:.6f}" for v in row) for row in rows]) + "\n")


def test_oriented_point_clouds_from_ply_and_xyz(tmp_path):
    rng = np.random.default_rng(5)
    normals = rng.normal(size=(50, 3))
    points = normals / np.linalg.norm(normals, axis=-1, keepdims=True) * 2.0 + 10.0
    _write_ply_points(tmp_path / "cloud.ply", points, normals * 3)
    np.savetxt(tmp_path / "cloud.xyz", np.concatenate([points, normals], axis=1))
    for name in ("cloud.ply", "cloud.xyz"):
        cloud = load_shape(tmp_path / name)
        assert isinstance(cloud, OrientedPointCloud)
        torch.testing.assert_close(cloud.normals.norm(dim=-1), torch.ones(50))
        assert cloud.points.abs().max() == pytest.approx(0.9, abs=1e-4)
        np.testing.assert_allclose(cloud.normalisation.to_input(cloud.points.double().numpy()), points, atol=1e-4)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.obj", None, "no such file"),
        (
            "garbage.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 99\nproperty float x\nend_header\n\x00\x01",
            "cannot read",
        ),
        ("empty.obj", b"# nothing here\n", "empty"),
        ("nan.obj", b"v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n", "NaN"),
        ("points.xyz", b"0 0 0\n1 1 1\n", "needs 6"),
        ("shape.dae", b"<xml/>", "unsupported format"),
    ],
)
def test_bad_shape_files_raise_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NfieldError, match=message) as info:
        load_shape(path)
    assert "\n" not in str(info.value)


def test_point_cloud_without_normals_is_refused(tmp_path):
    _write_ply_points(tmp_path / "bare.ply", np.random.default_rng(0).normal(size=(20, 3)), None)
    with pytest.raises(NfieldError, match="without normals"):
        load_shape(tmp_path / "bare.ply")


def test_unknown_backend_is_refused():
    mesh = _mesh(trimesh.creation.box())
    with pytest.raises(NfieldError, match="backend"):
        signed_distance(mesh, torch.zeros(1, 3), "embree")


def test_open3d_backend_matches_libigl_or_says_how_to_get_it(monkeypatch):
    mesh = _mesh(trimesh.creation.icosphere(subdivisions=2, radius=0.5))
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(6)) * 2 - 1
    try:
        import open3d  # noqa: F401
    except ImportError:
        pass
    else:
        torch.testing.assert_close(
            signed_distance(mesh, points, "open3d"), signed_distance(mesh, points, "libigl"), atol=1e-6, rtol=0
        )
    monkeypatch.setitem(__import__("sys").modules, "open3d", None)  # as if it were not installed
    with pytest.raises(NfieldError, match="pip install 'nfield\\[open3d\\]'"):
        signed_distance(mesh, points, "open3d")


def test_oriented_point_cloud_winding_number_separates_inside_from_outside_despite_a_hole():
    directions = torch.nn.functional.normalize(torch.randn(4000, 3, generator=torch.Generator().manual_seed(7)), dim=-1)
    kept = directions[:, 1] < 0.8  # a hole around the north pole
    cloud = OrientedPointCloud(directions[kept] * 0.5, directions[kept], Normalisation((0.0, 0.0, 0.0), 1.0))
    radii = torch.rand(300, 1, generator=torch.Generator().manual_seed(8))
    probes = torch.nn.functional.normalize(torch.randn(300, 3, generator=torch.Generator().manual_seed(9)), dim=-1)
    assert (cloud.winding_number(probes * radii * 0.35) > 0.5).all()
    assert (cloud.winding_number(probes * (0.7 + radii * 0.3)) < 0.5).all()
