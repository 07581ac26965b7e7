"""NGLOD tracing (`nfield.fields.nglod_tracing`): the PyTorch path against the tracer it replaces on a
fitted bunny, its host synchronisations per frame, and the backend choice. The fused kernel is
checked against this path in Triton's interpreter (tests/kernels/kernel_checks.py, ``nglod_trace``)."""

import pytest
import torch

from nfield.errors import NfieldError
from nfield.fields.nglod_tracing import PIXEL_FOOTPRINT, kernel_refusal, nglod_tracer, trace_nglod
from nfield.fields.sdf import distance_fn
from nfield.kernels.dispatch_counter import DispatchCounter
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import PinholeCamera, camera_rays
from nfield.render.sphere_tracing import render_surface, sdf_tracer
from nfield.runs.single import load_run


@pytest.fixture(scope="module")
def bunny(bunny_run):
    return load_run(bunny_run[0], "cpu").task.model.eval()


def previous_tracer(model, lod):
    """The tracer before this one: sphere_trace over the field with the octree's empty cells,
    compacting every iteration, hits at |sdf| < 1e-3 whatever the pixel size, normals by autograd."""
    return sdf_tracer(
        distance_fn(model, lod),
        empty_space=lambda points: model.octree.empty_cell_bounds(points, max_level=lod),
        pixel_footprint=0.0,
        compact_every=1,
        max_steps=128,
        hit_eps=1e-3,
        step_scale=0.9,
    )


@pytest.mark.parametrize("azimuth", [30.0, 200.0])
def test_the_pytorch_path_draws_the_previous_tracers_image(bunny, azimuth):
    """480x270: hit IoU >= 0.99; hit points within 2 eps of each other along the normal (eps the new
    threshold, max(1e-3, a quarter pixel's footprint)) for 99% of the pixels both hit; mean normal
    cosine >= 0.99; and fewer evaluations."""
    camera = PinholeCamera.from_fov(480, 270, 40.0)
    c2w = orbit_poses(1, 3.4, 20.0, start_azimuth_deg=azimuth)[0]
    lod = bunny.n_lods - 1
    before = render_surface(previous_tracer(bunny, lod), camera, c2w)
    after = render_surface(nglod_tracer(bunny, backend="torch"), camera, c2w)
    both = before["hit"] & after["hit"]
    iou = float(both.sum() / (before["hit"] | after["hit"]).sum())
    assert iou >= 0.99 and both.sum() > 0.1 * 480 * 270, iou
    _, directions = camera_rays(camera, c2w)
    incidence = (directions.reshape(270, 480, 3) * after["normals"]).sum(-1).abs()
    separation = ((before["depth"] - after["depth"]).abs() * incidence)[both]
    eps = torch.clamp_min(PIXEL_FOOTPRINT * after["depth"][both] / camera.fy, 1e-3)
    assert float((separation <= 2 * eps).float().mean()) >= 0.99
    assert float((before["normals"][both] * after["normals"][both]).sum(-1).mean()) >= 0.99
    assert after["evaluations"].sum() < before["evaluations"].sum()


def test_the_pytorch_path_waits_for_the_device_four_times_less_when_compacting_every_4_iterations(bunny):
    """On the CPU the PyTorch path compacts the active rays every iteration (each compaction and
    boolean selection a host synchronisation on a GPU); compacting every 4 iterations, as on CUDA,
    gives the same hits and evaluations per ray with a third or fewer of the synchronisations."""
    camera, c2w = PinholeCamera.from_fov(96, 54, 40.0), orbit_poses(1, 3.4, 20.0, start_azimuth_deg=30.0)[0]
    origins, directions = camera_rays(camera, c2w)
    results, syncs = {}, {}
    for every in (1, 4):
        with DispatchCounter() as counter:
            results[every] = trace_every(bunny, origins, directions, every)
        syncs[every] = counter.syncs
    assert torch.equal(results[4].hit, results[1].hit) and torch.equal(results[4].evaluations, results[1].evaluations)
    assert syncs[1] >= 3 * results[1].n_steps  # the nonzeros and a boolean index of every iteration
    assert syncs[4] <= syncs[1] / 3, syncs


def trace_every(model, origins, directions, every):
    """The PyTorch path's sphere trace, compacting every `every` iterations."""
    from nfield.render.sphere_tracing import sphere_trace

    lod = model.n_lods - 1
    return sphere_trace(
        distance_fn(model, lod), origins, directions, max_steps=128, hit_eps=1e-3, step_scale=0.9, footprint=1e-3,
        empty_space=lambda points: model.octree.empty_cell_bounds(points, max_level=lod), compact_every=every,
    )  # fmt: skip


def test_backends(bunny, monkeypatch):
    camera, c2w = PinholeCamera.from_fov(16, 9, 40.0), orbit_poses(1, 3.4, 20.0)[0]
    origins, directions = camera_rays(camera, c2w)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernel_refusal(bunny, bunny.n_lods - 1) is None  # ReLU decoders, dense tables: the kernel can run it
    auto = trace_nglod(bunny, origins, directions)  # auto on the CPU: the PyTorch path
    assert torch.equal(auto.hit, trace_nglod(bunny, origins, directions, backend="torch").hit)
    with pytest.raises(NfieldError, match="backend 'triton' runs on CUDA tensors"):
        trace_nglod(bunny, origins, directions, backend="triton")
    with pytest.raises(NfieldError, match="lod 9"):
        trace_nglod(bunny, origins, directions, lod=9)
