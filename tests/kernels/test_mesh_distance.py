"""The Triton mesh-distance kernel against the PyTorch reference: in Triton's CPU interpreter
(a subprocess with TRITON_INTERPRET=1) everywhere Triton is installed, and on CUDA."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nfield.data.meshes import (
    load_shape,
    sample_surface,
    signed_distance,
    unsigned_distance,
    winding_number,
)
from tests.kernels import hopper_compile

ROOT = Path(__file__).resolve().parents[2]
BUNNY = ROOT.parent / "shared" / "data" / "sdf" / "bunny.obj"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

INTERPRETED = """
import json, sys, torch, trimesh
from nfield.data.meshes import Normalisation, TriangleMesh, unsigned_distance, winding_number
from nfield.kernels.mesh_distance import mesh_distance_and_winding
from tests.kernels.hopper_compile import recording
# an open mesh (a sphere with a hole) with a degenerate triangle, and a face count that is not a block multiple
sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
faces = torch.tensor(sphere.faces[sphere.triangles_center[:, 1] < 0.5])
faces = torch.cat([faces, torch.tensor([[0, 0, 1]])])
vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
generator = torch.Generator().manual_seed(0)
points = torch.cat([torch.rand(150, 3, generator=generator) * 2 - 1, vertices[:20] * 1.001, vertices[20:40] * 0.999])
with recording(sys.argv[1]):
    distance, winding = mesh_distance_and_winding(vertices, faces, points)
print(json.dumps({
    "distance": (distance - unsigned_distance(vertices, faces, points)).abs().max().item(),
    "winding": (winding.double() - winding_number(vertices, faces, points)).abs().max().item(),
    "n": len(points),
}))
"""


@needs_triton
def test_kernel_matches_the_torch_reference_in_the_triton_interpreter_and_compiles_for_hopper(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    record = tmp_path / "launches.json"
    command = [sys.executable, "-c", INTERPRETED, str(record)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert errors["n"] == 190
    assert errors["distance"] < 1e-6 and errors["winding"] < 1e-5
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton has no CUDA backend to compile with")
    hopper_compile.compile_in_subprocess(record)


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
