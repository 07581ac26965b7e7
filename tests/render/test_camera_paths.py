"""Novel-view camera paths fitted to training cameras, against closed forms."""

import math

import numpy as np
import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.camera_paths import interpolated_path, orbit_poses, scene_orbit, spiral_path
from nfield.render.cameras import CameraSet, look_at


def camera_set(c2w):
    n = len(c2w)
    return CameraSet(
        c2w=c2w.float(),
        fx=torch.full((n,), 50.0),
        fy=torch.full((n,), 50.0),
        cx=torch.full((n,), 32.0),
        cy=torch.full((n,), 24.0),
        width=torch.full((n,), 64),
        height=torch.full((n,), 48),
        distortion=torch.zeros(n, 4),
    )


def assert_rigid(poses):
    rotation = poses[:, :3, :3].double()
    identity = torch.eye(3, dtype=torch.float64).expand_as(rotation)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(len(poses), dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(poses[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(poses), 4))


def assert_looking_at(poses, point):
    """Every pose's -z axis points at `point`."""
    towards = torch.as_tensor(point, dtype=torch.float64) - poses[:, :3, 3].double()
    towards = towards / towards.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(-poses[:, :3, 2].double(), towards, atol=1e-5, rtol=0)


def rotation_angles(a, b):
    """(n,) angle in degrees of the relative rotation between poses a and b."""
    relative = a[:, :3, :3].double().transpose(1, 2) @ b[:, :3, :3].double()
    cosine = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine))


CENTER = (1.0, 2.0, 3.0)


@pytest.mark.parametrize("up", [(0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_scene_orbit_recovers_the_training_circle(up):
    training = camera_set(orbit_poses(10, radius=4.0, elevation_deg=30.0, target=CENTER, up=up, start_azimuth_deg=7.0))
    poses = scene_orbit(training, 36)
    assert poses.shape == (36, 4, 4) and poses.dtype == torch.float32
    assert_rigid(poses)
    assert_looking_at(poses, CENTER)
    offsets = poses[:, :3, 3].double() - torch.tensor(CENTER, dtype=torch.float64)
    torch.testing.assert_close(offsets.norm(dim=-1), torch.full((36,), 4.0, dtype=torch.float64), atol=1e-5, rtol=0)
    elevation = torch.rad2deg(torch.asin(offsets @ torch.tensor(up, dtype=torch.float64) / 4.0))
    torch.testing.assert_close(elevation, torch.full((36,), 30.0, dtype=torch.float64), atol=1e-3, rtol=0)
    # a full turn: consecutive frames 10 degrees apart around the up axis
    torch.testing.assert_close(
        rotation_angles(poses, poses.roll(-1, 0)), torch.full((36,), 10.0, dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_scene_orbit_overrides():
    training = camera_set(orbit_poses(6, radius=4.0, elevation_deg=30.0, target=CENTER))
    poses = scene_orbit(training, 8, radius=2.0, elevation_deg=-10.0, center=(0.0, 0.0, 0.0))
    assert_looking_at(poses, (0.0, 0.0, 0.0))
    torch.testing.assert_close(poses[:, :3, 3].norm(dim=-1), torch.full((8,), 2.0))
    torch.testing.assert_close(poses[:, 1, 3], torch.full((8,), 2.0 * math.sin(math.radians(-10.0))))


def test_scene_orbit_rejects_bad_inputs():
    circle = camera_set(orbit_poses(6, radius=4.0, target=CENTER))
    with pytest.raises(NfieldError, match="at least 2 training cameras"):
        scene_orbit(circle[:1], 10)
    with pytest.raises(NfieldError, match="n_frames"):
        scene_orbit(circle, 0)
    with pytest.raises(NfieldError, match="radius"):
        scene_orbit(circle, 10, radius=-1.0)
    parallel = camera_set(torch.stack([look_at((x, 0.0, 3.0), (x, 0.0, 0.0)) for x in (-1.0, 0.0, 1.0)]))
    with pytest.raises(NfieldError, match="parallel"):
        scene_orbit(parallel, 10)


def forward_facing():
    """Nine cameras on a symmetric grid in the plane z = 0, all looking at (0, 0, -5); average pose = identity."""
    eyes = [(x, y, 0.0) for x in (-0.6, 0.0, 0.6) for y in (-0.3, 0.0, 0.3)]
    return camera_set(torch.stack([look_at(eye, (0.0, 0.0, -5.0)) for eye in eyes])), np.array(eyes)


@pytest.mark.parametrize("radius_scale", [1.0, 0.5])
def test_spiral_looks_at_the_focus_within_the_radii(radius_scale):
    training, eyes = forward_facing()
    poses = spiral_path(training, 64, n_rotations=2, radius_scale=radius_scale)  # samples every 22.5 degrees
    assert poses.shape == (64, 4, 4) and poses.dtype == torch.float32
    assert_rigid(poses)
    focus_distance = np.median(np.linalg.norm(eyes - np.array([0.0, 0.0, -5.0]), axis=1))
    assert_looking_at(poses, (0.0, 0.0, -focus_distance))
    radii = radius_scale * np.percentile(np.abs(eyes[:, :2]), 90, axis=0)
    centres = poses[:, :3, 3].double().numpy()
    assert np.abs(centres[:, 2]).max() < 1e-6
    assert np.all(np.abs(centres[:, :2]) <= radii + 1e-6)
    np.testing.assert_allclose(np.abs(centres[:, :2]).max(axis=0), radii, atol=1e-6)  # the radii are reached
    # image up stays world up (no roll): the cameras' x axes are horizontal
    assert poses[:, 1, 0].abs().max() < 1e-6


def test_spiral_rejects_bad_inputs():
    training, _ = forward_facing()
    with pytest.raises(NfieldError, match="n_rotations"):
        spiral_path(training, 10, n_rotations=0)
    with pytest.raises(NfieldError, match="at least 2 training cameras"):
        spiral_path(training[:1], 10)
    diverging = [((-1.0, 0.0, 0.0), (-2.0, 0.0, -5.0)), ((1.0, 0.0, 0.0), (2.0, 0.0, -5.0))]  # axes meet at z = +5
    behind = camera_set(torch.stack([look_at(eye, target) for eye, target in diverging]))
    with pytest.raises(NfieldError, match="behind"):
        spiral_path(behind, 10)


def keyframes():
    """Eight cameras around a full circle (their quaternions change sign around the loop), unevenly placed."""
    angles = torch.deg2rad(torch.tensor([0.0, 40.0, 95.0, 130.0, 180.0, 225.0, 280.0, 320.0]))
    eyes = torch.stack([3 * torch.sin(angles), 0.5 * torch.cos(2 * angles), 3 * torch.cos(angles)], dim=-1)
    return camera_set(torch.stack([look_at(eye, (0.0, 0.2, 0.0)) for eye in eyes]))


def test_interpolated_path_passes_through_the_keyframes():
    training = keyframes()
    poses = interpolated_path(training, 8 * 12)
    assert poses.shape == (96, 4, 4) and poses.dtype == torch.float32
    assert_rigid(poses)
    torch.testing.assert_close(poses[::12], training.c2w, atol=1e-5, rtol=0)


def test_interpolated_path_is_smooth_and_closed():
    poses = interpolated_path(keyframes(), 400)
    steps = rotation_angles(poses, poses.roll(-1, 0))  # includes the step from the last frame back to the first
    assert steps.max() < 2.0  # about 360 / 400 degrees per frame on average, no jumps
    moves = (poses[:, :3, 3] - poses.roll(-1, 0)[:, :3, 3]).norm(dim=-1)
    assert moves.max() < 3 * moves.mean()
    # continuous velocity: consecutive steps change little
    assert (steps - steps.roll(-1)).abs().max() < 0.1


def test_interpolated_path_rejects_bad_inputs():
    with pytest.raises(NfieldError, match="at least 2 training cameras"):
        interpolated_path(keyframes()[:1], 10)
    with pytest.raises(NfieldError, match="n_frames"):
        interpolated_path(keyframes(), -3)
