import math

import numpy as np
import torch

from nfield.render.cameras import PinholeCamera, camera_rays, look_at
from nfield.viewer.cameras import (
    ViewCamera,
    browser_pose,
    frame_size,
    matrix_to_quaternion,
    pose_from_browser,
    quaternion_to_matrix,
)


def _random_quaternions(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.sign(q[:, :1])


def test_quaternions_round_trip_through_rotation_matrices():
    for q in _random_quaternions(200):
        m = quaternion_to_matrix(q)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) > 0
        np.testing.assert_allclose(matrix_to_quaternion(m), q, atol=1e-9)


def test_quaternion_of_a_known_rotation():
    # 90 degrees about z: x -> y
    q = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(quaternion_to_matrix(q) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    # the half-turn about x, where the trace formula is unstable
    np.testing.assert_allclose(matrix_to_quaternion(np.diag([1.0, -1.0, -1.0])), [0.0, 1.0, 0.0, 0.0], atol=1e-12)


def test_browser_pose_round_trips_nfield_poses():
    for eye in [(0.0, -4.0, 1.0), (3.0, 2.0, -1.0), (0.1, 0.2, 5.0)]:
        c2w = look_at(eye, up=(0.0, 0.0, 1.0))
        wxyz, position = browser_pose(c2w)
        torch.testing.assert_close(pose_from_browser(wxyz, position), c2w, atol=1e-6, rtol=0)


def test_browser_camera_convention_is_opencv():
    """viser's identity camera looks along world +z with the image's top towards world -y."""
    c2w = pose_from_browser(np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
    camera = PinholeCamera.from_fov(5, 5, 60.0)
    _, directions = camera_rays(camera, c2w)
    torch.testing.assert_close(directions[12], torch.tensor([0.0, 0.0, 1.0]))
    assert directions[2, 1] < 0  # the top row's centre pixel looks towards -y


def test_row_bands_have_the_rays_of_the_whole_frame():
    c2w = look_at((1.0, -3.0, 2.0), up=(0.0, 0.0, 1.0))
    frame = ViewCamera(c2w, math.radians(50.0), 37, 23)
    whole = camera_rays(frame.rows(0, 23), c2w)[1]
    bands = torch.cat([camera_rays(frame.rows(a, b), c2w)[1] for a, b in [(0, 5), (5, 6), (6, 23)]])
    torch.testing.assert_close(bands, whole)
    focal = 0.5 * 23 / math.tan(math.radians(25.0))
    torch.testing.assert_close(whole, camera_rays(PinholeCamera(37, 23, focal, focal, 18.5, 11.5), c2w)[1])


def test_frame_size_follows_the_page_aspect():
    assert frame_size(16 / 9, 90) == (160, 90)
    assert frame_size(float("nan"), 40) == (40, 40)
    assert frame_size(0.001, 10) == (1, 10)
