"""Camera poses and rays against closed forms: rigid poses looking at their targets, fields of view, pixel order."""

import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import PinholeCamera, camera_rays, look_at


def unit(vector):
    vector = torch.as_tensor(vector, dtype=torch.float64)
    return vector / vector.norm(dim=-1, keepdim=True)


def angle(a, b):
    """Angle in radians between two directions, in float64."""
    return math.acos(max(-1.0, min(1.0, float(unit(a) @ unit(b)))))


POSES = {
    "down-z": ((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "oblique": ((1.2, -0.7, 2.5), (0.3, 0.1, -0.2), (0.0, 1.0, 0.0)),
    "z-up": ((0.5, 2.0, 0.1), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "tilted-up": ((-1.0, 0.2, -0.4), (0.5, 0.5, 0.5), (0.3, 1.0, -0.2)),
}


@pytest.mark.parametrize("eye, target, up", POSES.values(), ids=POSES.keys())
def test_look_at_is_a_rigid_pose_looking_at_the_target(eye, target, up):
    c2w = look_at(eye, target, up)
    assert c2w.dtype == torch.float32 and c2w.shape == (4, 4)
    rotation = c2w[:3, :3].double()
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.linalg.det(rotation).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(c2w[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(c2w[:3, 3], torch.tensor(eye, dtype=torch.float32))
    # the camera's -z axis points at the target; image right is orthogonal to up; image up agrees with up
    torch.testing.assert_close(-rotation[:, 2], unit(torch.tensor(target) - torch.tensor(eye)), atol=1e-6, rtol=0)
    assert abs(float(rotation[:, 0] @ unit(up))) < 1e-6
    assert float(rotation[:, 1] @ unit(up)) > 0


def test_look_at_from_the_front_is_the_identity_rotation():
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(look_at((0.0, 0.0, 3.0)), expected)
    # looking from +x: image right is world -z
    torch.testing.assert_close(look_at((2.0, 0.0, 0.0))[:3, 0], torch.tensor([0.0, 0.0, -1.0]))


@pytest.mark.parametrize(
    "eye, target, up",
    [
        ((1.0, 2.0, 3.0), (1.0, 2.0, 3.0), (0.0, 1.0, 0.0)),  # eye == target
        ((0.0, 3.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # looking straight down the up axis
        ((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # no up
        ((0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # not 3-D
    ],
)
def test_look_at_rejects_degenerate_poses(eye, target, up):
    with pytest.raises(NfieldError):
        look_at(eye, target, up)


@pytest.mark.parametrize(
    "target, up",
    [((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)), ((0.2, -0.1, 0.3), (0.0, 0.0, 1.0)), ((0.0, 0.5, 0.0), (1.0, 1.0, 0.0))],
)
def test_orbit_poses_circle_the_target(target, up):
    n_frames, radius, elevation = 12, 2.5, 30.0
    poses = orbit_poses(n_frames, radius, elevation, target, up, start_azimuth_deg=15.0)
    assert poses.shape == (n_frames, 4, 4) and poses.dtype == torch.float32
    axis = unit(up)
    offsets = poses[:, :3, 3].double() - torch.tensor(target, dtype=torch.float64)
    torch.testing.assert_close(offsets.norm(dim=-1), torch.full((n_frames,), radius, dtype=torch.float64))
    heights = offsets @ axis
    torch.testing.assert_close(
        torch.rad2deg(torch.asin(heights / radius)), torch.full((n_frames,), elevation, dtype=torch.float64)
    )
    # every camera looks at the target with up up
    torch.testing.assert_close(-poses[:, :3, 2].double(), -offsets / radius, atol=1e-6, rtol=0)
    assert (poses[:, :3, 1].double() @ axis > 0).all()
    # evenly spaced azimuths, turning counter-clockwise around up, a full circle with no repeated frame
    horizontal = offsets - heights[:, None] * axis
    following = horizontal.roll(-1, dims=0)
    for k in range(n_frames):
        assert angle(horizontal[k], following[k]) == pytest.approx(2 * math.pi / n_frames, abs=1e-6)
    assert (torch.linalg.cross(horizontal, following) @ axis > 0).all()


def test_orbit_poses_azimuth_origin():
    # y-up: azimuth 0 looks from +z, azimuth 90 from +x (counter-clockwise seen from above)
    torch.testing.assert_close(orbit_poses(1, 2.0, elevation_deg=0.0)[0], look_at((0.0, 0.0, 2.0)))
    torch.testing.assert_close(orbit_poses(1, 2.0, 0.0, start_azimuth_deg=90.0)[0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))
    # z-up: azimuth 0 looks from +x
    torch.testing.assert_close(orbit_poses(1, 2.0, 0.0, up=(0.0, 0.0, 1.0))[0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "kwargs", [{"n_frames": 0}, {"radius": -1.0}, {"radius": 0.0}, {"elevation_deg": 90.0}, {"up": (0.0, 0.0, 0.0)}]
)
def test_orbit_poses_rejects_bad_arguments(kwargs):
    arguments = {"n_frames": 4, "radius": 2.0} | kwargs
    with pytest.raises(NfieldError):
        orbit_poses(**arguments)


def test_pinhole_from_fov():
    camera = PinholeCamera.from_fov(640, 480, 60.0)
    assert camera.fy == pytest.approx(240.0 / math.tan(math.radians(30.0)))
    assert camera.fx == camera.fy and (camera.cx, camera.cy) == (320.0, 240.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PinholeCamera(0, 10, 1.0, 1.0, 0.0, 0.0),
        lambda: PinholeCamera(10, 2.5, 1.0, 1.0, 0.0, 0.0),
        lambda: PinholeCamera(10, 10, -1.0, 1.0, 5.0, 5.0),
        lambda: PinholeCamera(10, 10, 1.0, 0.0, 5.0, 5.0),
        lambda: PinholeCamera(10, 10, 1.0, 1.0, float("nan"), 5.0),
        lambda: PinholeCamera.from_fov(10, 10, 180.0),
        lambda: PinholeCamera.from_fov(10, 10, 0.0),
    ],
)
def test_pinhole_rejects_bad_intrinsics(make):
    with pytest.raises(NfieldError):
        make()


def test_camera_rays_centre_ray_points_at_the_target():
    eye, target = (1.0, 2.0, -3.0), (0.2, 0.1, 0.3)
    camera = PinholeCamera.from_fov(33, 21, 50.0)
    origins, directions = camera_rays(camera, look_at(eye, target))
    assert origins.shape == directions.shape == (33 * 21, 3)
    torch.testing.assert_close(origins, torch.tensor(eye).expand(33 * 21, 3))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(33 * 21))
    centre = directions[10 * 33 + 16]  # row 10, column 16
    torch.testing.assert_close(centre.double(), unit(torch.tensor(target) - torch.tensor(eye)), atol=1e-6, rtol=0)


def test_camera_rays_span_the_field_of_view():
    width, height, fov = 31, 21, 50.0
    camera = PinholeCamera.from_fov(width, height, fov)
    c2w = orbit_poses(5, 3.0, 25.0, target=(0.1, 0.2, 0.0))[2]
    _, directions = camera_rays(camera, c2w)
    grid = directions.reshape(height, width, 3)
    half = math.tan(math.radians(fov / 2))  # at unit distance, the top edge of the image is this far up
    # pixel centres sit half a pixel inside the edges
    top, bottom = grid[0, width // 2], grid[-1, width // 2]
    assert angle(top, bottom) == pytest.approx(2 * math.atan(half * (height - 1) / height), abs=1e-6)
    left, right = grid[height // 2, 0], grid[height // 2, -1]
    assert angle(left, right) == pytest.approx(2 * math.atan(half * (width - 1) / height), abs=1e-6)
    corner = half * math.hypot(width - 1, height - 1) / height
    assert angle(grid[0, 0], grid[-1, -1]) == pytest.approx(2 * math.atan(corner), abs=1e-6)
    # row 0 is the top of the image and column 0 its left
    right_axis, up_axis = c2w[:3, 0], c2w[:3, 1]
    assert float(top @ up_axis) > 0 > float(bottom @ up_axis)
    assert float(left @ right_axis) < 0 < float(right @ right_axis)


def test_camera_rays_pixel_order_and_principal_point():
    camera = PinholeCamera(width=4, height=2, fx=2.0, fy=3.0, cx=1.0, cy=0.5)
    c2w = torch.eye(4, dtype=torch.float64)[:3]  # (3, 4) is accepted; float64 stays float64
    origins, directions = camera_rays(camera, c2w)
    assert directions.dtype == torch.float64
    expected = [unit(((column + 0.5 - 1.0) / 2.0, -(row + 0.5 - 0.5) / 3.0, -1.0)) for row in range(2) for column in range(4)]
    torch.testing.assert_close(directions, torch.stack(expected))
    torch.testing.assert_close(origins, torch.zeros(8, 3, dtype=torch.float64))
    with pytest.raises(NfieldError):
        camera_rays(camera, torch.eye(3))
