"""Lens distortion and per-pixel rays of a CameraSet, against OpenCV's closed-form model and `camera_rays`."""

import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.cameras import (
    CameraSet,
    PinholeCamera,
    camera_rays,
    distort,
    image_rays,
    look_at,
    pixel_rays,
    undistort,
)


def opencv_distort(x, y, k1, k2, p1, p2):
    """OpenCV's radial-tangential model written out in float64, independently of `distort`."""
    r2 = x**2 + y**2
    radial = 1 + k1 * r2 + k2 * r2**2
    return x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2), y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y


def make_cameras(distortion):
    """Three cameras with different sizes, intrinsics and poses (all values exact in float32)."""
    poses = [look_at((0.0, 0.0, 3.0)), look_at((1.2, -0.7, 2.5), (0.3, 0.1, -0.2)), look_at((0.5, 2.0, 0.1), up=(0.0, 0.0, 1.0))]
    return CameraSet(
        c2w=torch.stack(poses),
        fx=torch.tensor([40.0, 55.5, 30.25]),
        fy=torch.tensor([40.0, 54.0, 31.5]),
        cx=torch.tensor([16.0, 10.5, 12.75]),
        cy=torch.tensor([12.0, 8.0, 9.5]),
        width=torch.tensor([32, 21, 24]),
        height=torch.tensor([24, 17, 20]),
        distortion=torch.as_tensor(distortion, dtype=torch.float32).expand(3, 4).clone(),
    )


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_undistort_inverts_distort_on_realistic_lenses(dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    n = 4096
    coefficients = torch.cat(
        [0.2 * torch.rand(n, 2, generator=generator) - 0.1, 0.02 * torch.rand(n, 2, generator=generator) - 0.01], dim=1
    ).to(dtype)
    x, y = (1.2 * torch.rand(2, n, generator=generator, dtype=torch.float64) - 0.6).to(dtype)
    xd, yd = distort(x, y, coefficients)
    expected = opencv_distort(*(t.double() for t in (x, y, *coefficients.unbind(-1))))
    torch.testing.assert_close((xd.double(), yd.double()), expected, atol=tolerance, rtol=0)
    assert (xd - x).abs().max() > 1e-3  # the lenses really distort
    x_back, y_back = undistort(xd, yd, coefficients)
    torch.testing.assert_close((x_back, y_back), (x, y), atol=tolerance, rtol=0)


def test_zero_distortion_is_an_exact_no_op():
    x, y = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros(4)
    assert all(torch.equal(a, b) for a, b in zip(distort(x, y, zero), (x, y)))
    assert all(torch.equal(a, b) for a, b in zip(undistort(x, y, zero), (x, y)))


def test_undistort_rejects_a_bad_iteration_count():
    with pytest.raises(NfieldError, match="iterations"):
        undistort(torch.zeros(1), torch.zeros(1), torch.zeros(4), iterations=0)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_image_rays_without_distortion_equal_camera_rays(index):
    cameras = make_cameras([0.0, 0.0, 0.0, 0.0])
    intrinsics = {key: getattr(cameras, key)[index].item() for key in ("fx", "fy", "cx", "cy")}
    camera = PinholeCamera(int(cameras.width[index]), int(cameras.height[index]), **intrinsics)
    origins, directions = image_rays(cameras, index)
    expected_origins, expected_directions = camera_rays(camera, cameras.c2w[index])
    torch.testing.assert_close(origins, expected_origins, atol=0, rtol=0)
    torch.testing.assert_close(directions, expected_directions, atol=3e-7, rtol=0)  # a float32 ulp: matmul order


def test_image_rays_are_row_major_from_the_top_left():
    cameras = make_cameras([0.0, 0.0, 0.0, 0.0])
    origins, directions = image_rays(cameras, 1)
    width, height = 21, 17
    assert origins.shape == directions.shape == (width * height, 3)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(width * height))
    local = directions @ cameras.c2w[1, :3, :3]  # back to camera space
    pixel = local[:, :2] / -local[:, 2:]
    row, column = 5, 8  # entry row * W + column is pixel (row, column): +x right, +y up in camera space
    torch.testing.assert_close(
        pixel[row * width + column], torch.tensor([(column + 0.5 - 10.5) / 55.5, -(row + 0.5 - 8.0) / 54.0])
    )
    assert pixel[1, 0] > pixel[0, 0] and pixel[width, 1] < pixel[0, 1]


def test_a_distorted_ray_projects_back_onto_its_pixel():
    distortion = [-0.08, 0.03, 0.004, -0.006]
    cameras = make_cameras(distortion)
    camera_index = torch.tensor([0, 1, 2, 1, 0, 2])
    u = torch.tensor([0.5, 20.5, 3.25, 10.5, 31.5, 23.0])
    v = torch.tensor([0.5, 16.5, 19.75, 8.0, 23.5, 0.0])
    origins, directions = pixel_rays(cameras, camera_index, u, v)
    pose = cameras.c2w[camera_index].double()
    torch.testing.assert_close(origins, cameras.c2w[camera_index, :3, 3])
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(6))
    # project through the pinhole (camera looks down -z, image y down is camera -y), then the lens model
    local = (directions.double()[:, None, :] @ pose[:, :3, :3])[:, 0]
    x, y = local[:, 0] / -local[:, 2], -local[:, 1] / -local[:, 2]
    xd, yd = opencv_distort(x, y, *torch.tensor(distortion, dtype=torch.float64))
    fx, fy, cx, cy = (getattr(cameras, key)[camera_index].double() for key in ("fx", "fy", "cx", "cy"))
    torch.testing.assert_close(fx * xd + cx, u.double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(fy * yd + cy, v.double(), atol=1e-4, rtol=0)
    # and the distortion matters: an ideal pinhole would put the corner rays elsewhere
    assert (fx * x + cx - u.double()).abs().max() > 0.1


@pytest.mark.parametrize(
    "camera_index, u, v, match",
    [
        (torch.tensor([0, 3]), torch.zeros(2), torch.zeros(2), "must lie in"),
        (torch.tensor([0, -1]), torch.zeros(2), torch.zeros(2), "must lie in"),
        (torch.tensor([0.0, 1.0]), torch.zeros(2), torch.zeros(2), "integer"),
        (torch.tensor([0, 1]), torch.zeros(3), torch.zeros(2), "same length"),
    ],
)
def test_pixel_rays_reject_bad_inputs(camera_index, u, v, match):
    with pytest.raises(NfieldError, match=match):
        pixel_rays(make_cameras([0.0] * 4), camera_index, u, v)


def test_image_rays_reject_a_bad_index():
    with pytest.raises(NfieldError, match="index"):
        image_rays(make_cameras([0.0] * 4), 3)
