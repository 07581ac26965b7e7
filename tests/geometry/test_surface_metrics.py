import math

import numpy as np
import pytest
import torch

from nfield.errors import NfieldError
from nfield.geometry.surface_metrics import chamfer_l1, normal_consistency, surface_metrics, volumetric_iou


def fibonacci_sphere(n, radius=1.0):
    """n nearly uniform points on a sphere about the origin and their unit outward normals."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    normals = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], axis=1)
    return radius * normals, normals


def test_chamfer_of_identical_sets_is_zero():
    points = np.random.default_rng(0).normal(size=(500, 3))
    assert chamfer_l1(points, points) == 0.0
    assert chamfer_l1(points, points[::-1].copy()) == 0.0


def test_chamfer_matches_brute_force_distances():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    b = 0.5 * torch.randn(300, 3, generator=generator, dtype=torch.float64) + 0.3
    distances = torch.cdist(a, b)
    expected = 0.5 * (distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()).item()
    assert chamfer_l1(a, b) == pytest.approx(expected, abs=1e-10)
    assert chamfer_l1(b.float().numpy(), a.float()) == pytest.approx(expected, abs=1e-6)  # symmetric, any input type


def test_chamfer_of_concentric_spheres_is_the_radius_gap():
    inner, _ = fibonacci_sphere(20000, radius=1.0)
    outer, _ = fibonacci_sphere(20000, radius=1.2)
    assert chamfer_l1(inner, outer) == pytest.approx(0.2, rel=0.02)


def test_normal_consistency_ignores_orientation_and_drops_for_random_normals():
    points, normals = fibonacci_sphere(20000)
    assert normal_consistency(points, normals, points, normals) == pytest.approx(1.0, abs=1e-12)
    assert normal_consistency(points, 3.0 * normals, points, -normals) == pytest.approx(1.0, abs=1e-12)
    random_normals = np.random.default_rng(1).normal(size=points.shape)
    # |cos| between a fixed and a uniformly random direction is uniform on [0, 1]
    assert normal_consistency(points, normals, points, random_normals) == pytest.approx(0.5, abs=0.02)


def test_surface_metrics_agree_with_the_single_metrics():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(400, 3))
    normals_a, normals_b = rng.normal(size=(300, 3)), rng.normal(size=(400, 3))
    metrics = surface_metrics(a, normals_a, b, normals_b)
    assert metrics == {
        "chamfer_l1": chamfer_l1(a, b),
        "normal_consistency": normal_consistency(a, normals_a, b, normals_b),
    }


def test_volumetric_iou_trivial_cases():
    inside = np.array([True, False, True, True])
    assert volumetric_iou(inside, inside) == 1.0
    assert volumetric_iou(inside, ~inside) == 0.0
    assert volumetric_iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert volumetric_iou(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])) == pytest.approx(
        1 / 3
    )


def test_volumetric_iou_of_two_balls_matches_the_lens_volume():
    radius, gap = 0.5, 0.4  # balls centred at (-gap / 2, 0, 0) and (gap / 2, 0, 0), inside [-1, 1]^3
    points = np.random.default_rng(3).uniform(-1, 1, size=(400_000, 3))
    offset = np.array([gap / 2, 0.0, 0.0])
    inside_a = np.linalg.norm(points + offset, axis=1) < radius
    inside_b = np.linalg.norm(points - offset, axis=1) < radius
    lens = math.pi * (4 * radius + gap) * (2 * radius - gap) ** 2 / 12
    expected = lens / (2 * 4 / 3 * math.pi * radius**3 - lens)
    assert volumetric_iou(inside_a, inside_b) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize(
    "call",
    [
        lambda: chamfer_l1(np.zeros((0, 3)), np.zeros((4, 3))),
        lambda: chamfer_l1(np.zeros((4, 2)), np.zeros((4, 3))),
        lambda: chamfer_l1(np.full((4, 3), np.nan), np.zeros((4, 3))),
        lambda: normal_consistency(np.zeros((4, 3)), np.ones((3, 3)), np.zeros((4, 3)), np.ones((4, 3))),
        lambda: normal_consistency(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros((4, 3)), np.ones((4, 3))),
        lambda: volumetric_iou(np.ones(4, bool), np.ones(5, bool)),
        lambda: volumetric_iou(np.linspace(-1, 1, 4), np.ones(4, bool)),
        lambda: volumetric_iou(np.zeros(0, bool), np.zeros(0, bool)),
    ],
    ids=["empty", "not-3d", "nan", "normal-count", "zero-normal", "iou-shapes", "iou-not-bool", "iou-empty"],
)
def test_bad_inputs_are_errors(call):
    with pytest.raises(NfieldError):
        call()


def test_matching_against_meshes_removes_the_sampling_floor():
    import trimesh

    from nfield.geometry.surface_metrics import surface_metrics

    inner = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    outer = trimesh.creation.icosphere(subdivisions=4, radius=0.6)

    def samples(mesh, n, seed):
        points, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
        return points, mesh.face_normals[face]

    a, na = samples(inner, 20000, 0)
    b, nb = samples(inner, 20000, 1)
    by_points = surface_metrics(a, na, b, nb)
    by_mesh = surface_metrics(a, na, b, nb, mesh_a=(inner.vertices, inner.faces), mesh_b=(inner.vertices, inner.faces))
    assert by_points["chamfer_l1"] > 1e-3  # about 0.5 sqrt(area / N) from sampling alone
    assert by_mesh["chamfer_l1"] < 1e-9 and by_mesh["normal_consistency"] > 1 - 1e-9
    c, nc = samples(outer, 20000, 2)
    shells = surface_metrics(a, na, c, nc, mesh_a=(inner.vertices, inner.faces), mesh_b=(outer.vertices, outer.faces))
    assert abs(shells["chamfer_l1"] - 0.1) < 2e-3  # the shells' gap, up to tessellation
    assert shells["normal_consistency"] > 0.999
