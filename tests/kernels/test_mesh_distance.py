"""The Triton mesh-distance kernel on CUDA: on the points' device, and against libigl on the bunny.
Its check against the PyTorch reference in Triton's interpreter (and compiled for sm_90) is
`kernel_checks.check_mesh_distance`, run by tests/kernels/test_kernels.py."""

import importlib.util
from pathlib import Path

import pytest
import torch

from nfield.data.meshes import load_shape, sample_surface
from nfield.geometry.distance import signed_distance, unsigned_distance, winding_number

ROOT = Path(__file__).resolve().parents[2]
BUNNY = ROOT.parent / "shared" / "data" / "sdf" / "bunny.obj"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernel_runs_on_the_points_device_not_the_current_one():
    import trimesh

    from nfield.kernels.mesh_distance import mesh_distance_and_winding

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    vertices, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.cuda.device(0):
        distance, winding = mesh_distance_and_winding(vertices.to("cuda:1"), faces.to("cuda:1"), points.to("cuda:1"))
    assert distance.device == torch.device("cuda:1")
    torch.testing.assert_close(distance.cpu(), unsigned_distance(vertices, faces, points), atol=1e-6, rtol=0)
    torch.testing.assert_close(winding.cpu().double(), winding_number(vertices, faces, points), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not BUNNY.exists(), reason="shared data not available")
def test_triton_backend_on_cuda_matches_libigl_on_the_bunny():
    bunny = load_shape(BUNNY)
    generator = torch.Generator().manual_seed(1)
    points = torch.cat([torch.rand(100000, 3, generator=generator) * 2 - 1, sample_surface(bunny, 100000, generator)[0]])
    on_gpu = signed_distance(bunny.to("cuda"), points.cuda(), "triton").cpu()
    torch.testing.assert_close(on_gpu, signed_distance(bunny, points, "libigl"), atol=2e-5, rtol=0)
