"""Pinhole cameras, camera poses and per-pixel rays, in the NeRF / Blender / OpenGL convention.

A pose is a camera-to-world matrix c2w (4, 4): its columns are the camera's +x (image right),
+y (image up) and +z axes in world coordinates, then the camera centre. The camera looks along its
own -z axis. Pixel (row, column) has its centre at (column + 0.5, row + 0.5) in pixel units,
row 0 at the top of the image, so its camera-space direction is
((column + 0.5 - cx) / fx, -(row + 0.5 - cy) / fy, -1).

Example::

    >>> camera = PinholeCamera.from_fov(64, 48, fov_y_deg=40.0)
    >>> origins, directions = camera_rays(camera, look_at((0.0, 0.0, 3.0)))
    >>> origins.shape, directions.shape
    (torch.Size([3072, 3]), torch.Size([3072, 3]))
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from nfield.errors import NfieldError

Vector = Sequence[float] | torch.Tensor  # three coordinates


def _vector(name: str, value: Vector, device: torch.device | str | None = None) -> torch.Tensor:
    """(3,) float64 tensor from three coordinates, or NfieldError."""
    vector = torch.as_tensor(value, dtype=torch.float64, device=device)
    if vector.shape != (3,) or not torch.isfinite(vector).all():
        raise NfieldError(f"{name} must be three finite coordinates, got {value!r}")
    return vector


def look_at(eye: Vector, target: Vector = (0.0, 0.0, 0.0), up: Vector = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """Camera-to-world pose of a camera at `eye` looking at `target`, with `up` up in the image.

    Args:
        eye: (3,) camera centre, world units.
        target: (3,) the point the camera's -z axis goes through.
        up: (3,) world direction that appears up in the image (only its component orthogonal to
            the view direction is used).

    Returns:
        (4, 4) float32 camera-to-world matrix on the device of `eye` (the CPU for a tuple).

    Raises:
        NfieldError: `eye` equals `target`, or `up` is parallel to the view direction.

    Example::

        >>> look_at((0.0, 0.0, 3.0))[:3, :3]  # already looking down -z with +y up: identity
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    eye = _vector("look_at: eye", eye)
    target, up = _vector("look_at: target", target, eye.device), _vector("look_at: up", up, eye.device)
    backward = eye - target
    distance = backward.norm()
    if distance == 0:
        raise NfieldError(f"look_at: eye and target are the same point {eye.tolist()}; move the camera away from the target")
    z = backward / distance
    x = torch.linalg.cross(up, z)
    if x.norm() <= 1e-9 * up.norm():
        raise NfieldError(f"look_at: up {up.tolist()} is parallel to the view direction; pass an up vector across it")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=torch.float64, device=eye.device)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w.float()


def orbit_poses(
    n_frames: int,
    radius: float,
    elevation_deg: float = 20.0,
    target: Vector = (0.0, 0.0, 0.0),
    up: Vector = (0.0, 1.0, 0.0),
    start_azimuth_deg: float = 0.0,
) -> torch.Tensor:
    """A turntable: `n_frames` cameras evenly spaced on a full circle around `up`, all looking at `target`.

    Frame k sits at azimuth start_azimuth_deg + 360 k / n_frames (so the last frame is one step
    short of the first, for a seamless loop), measured counter-clockwise around `up` seen from above.
    Azimuth 0 is world +z projected onto the plane orthogonal to `up` (world +x when `up` is along z):
    with the default y-up, frame 0 looks at the target from +z, down the world -z axis.

    Args:
        n_frames: number of poses, >= 1.
        radius: distance from every camera centre to `target`, world units, > 0.
        elevation_deg: angle of the cameras above the plane through `target` orthogonal to `up`,
            degrees in (-90, 90).
        target: (3,) the point all cameras look at.
        up: (3,) the turntable axis, also up in every image.
        start_azimuth_deg: azimuth of frame 0, degrees.

    Returns:
        (n_frames, 4, 4) float32 camera-to-world matrices, on the CPU.

    Example::

        >>> orbit_poses(120, radius=3.0).shape
        torch.Size([120, 4, 4])
    """
    if not (isinstance(n_frames, int) and not isinstance(n_frames, bool) and n_frames >= 1):
        raise NfieldError(f"orbit_poses: n_frames must be a positive integer, got {n_frames!r}")
    if not (math.isfinite(radius) and radius > 0):
        raise NfieldError(f"orbit_poses: radius must be a positive distance, got {radius!r}")
    if not -90.0 < elevation_deg < 90.0:
        raise NfieldError(f"orbit_poses: elevation_deg must lie in (-90, 90), got {elevation_deg!r}")
    target, up = _vector("orbit_poses: target", target, "cpu"), _vector("orbit_poses: up", up, "cpu")
    if up.norm() == 0:
        raise NfieldError("orbit_poses: up must be a non-zero direction")
    up = up / up.norm()
    for reference in ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)):
        forward = torch.tensor(reference, dtype=torch.float64)
        forward = forward - (forward @ up) * up
        if forward.norm() > 0.5:  # not too close to the axis; one of the two always is not
            break
    forward = forward / forward.norm()
    side = torch.linalg.cross(up, forward)  # forward turned by +90 degrees around up
    azimuth = torch.deg2rad(start_azimuth_deg + 360.0 * torch.arange(n_frames, dtype=torch.float64) / n_frames)
    elevation = math.radians(elevation_deg)
    horizontal = torch.cos(azimuth)[:, None] * forward + torch.sin(azimuth)[:, None] * side
    eyes = target + radius * (math.cos(elevation) * horizontal + math.sin(elevation) * up)
    return torch.stack([look_at(eye, target, up) for eye in eyes])


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of an ideal pinhole camera (no distortion), in pixels.

    width, height: image size; fx, fy: focal lengths; cx, cy: principal point, measured from the
    top-left corner of the image (the image centre is (width / 2, height / 2)).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for key in ("width", "height"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise NfieldError(f"PinholeCamera: {key} must be a positive integer number of pixels, got {value!r}")
        for key in ("fx", "fy"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise NfieldError(f"PinholeCamera: {key} must be a positive focal length in pixels, got {value!r}")
        for key in ("cx", "cy"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise NfieldError(f"PinholeCamera: {key} must be a finite pixel coordinate, got {value!r}")

    @classmethod
    def from_fov(cls, width: int, height: int, fov_y_deg: float) -> PinholeCamera:
        """Square pixels, principal point at the image centre, vertical field of view `fov_y_deg`.

        The fov is the angle between the top and bottom edges of the image (not the edge pixels'
        centres): fy = fx = (height / 2) / tan(fov_y / 2).

        Args:
            width, height: image size in pixels.
            fov_y_deg: vertical field of view, degrees in (0, 180).
        """
        if not (isinstance(fov_y_deg, (int, float)) and 0.0 < fov_y_deg < 180.0):
            raise NfieldError(f"PinholeCamera.from_fov: fov_y_deg must lie in (0, 180) degrees, got {fov_y_deg!r}")
        focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return cls(width, height, focal, focal, width / 2, height / 2)


def camera_rays(
    camera: PinholeCamera, c2w: torch.Tensor, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel through its centre, in row-major order (row 0 is the top of the image).

    Args:
        camera: the intrinsics.
        c2w: (4, 4) camera-to-world pose (or its top (3, 4) rows).
        device: where the rays go; defaults to the device of `c2w`.

    Returns:
        origins: (H * W, 3) the camera centre, repeated; same floating dtype as `c2w` (float32 otherwise).
        directions: (H * W, 3) unit vectors; pixel (row, column) is entry row * W + column.

    Example::

        >>> origins, directions = camera_rays(PinholeCamera.from_fov(5, 3, 60.0), look_at((0.0, 0.0, 2.0)))
        >>> directions[7]  # the centre pixel looks at the target
        tensor([ 0.,  0., -1.])
    """
    c2w = torch.as_tensor(c2w, device=device)
    if c2w.shape not in ((4, 4), (3, 4)):
        raise NfieldError(f"camera_rays: c2w must be a (4, 4) camera-to-world matrix, got shape {tuple(c2w.shape)}")
    if not c2w.is_floating_point():
        c2w = c2w.float()
    options = {"dtype": c2w.dtype, "device": c2w.device}
    rows = torch.arange(camera.height, **options) + 0.5
    columns = torch.arange(camera.width, **options) + 0.5
    v, u = torch.meshgrid(rows, columns, indexing="ij")
    local = torch.stack([(u - camera.cx) / camera.fx, (camera.cy - v) / camera.fy, -torch.ones_like(u)], dim=-1)
    directions = local.reshape(-1, 3) @ c2w[:3, :3].T
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:3, 3].expand_as(directions).clone()
    return origins, directions


@dataclass
class CameraSet:
    """N cameras with their own intrinsics and lens distortion, as NeRF datasets describe them.

    Attributes:
        c2w: (N, 4, 4) float32 camera-to-world poses in this module's convention.
        fx, fy, cx, cy: (N,) float32 intrinsics in pixels (cx, cy from the top-left corner).
        width, height: (N,) int64 image sizes in pixels.
        distortion: (N, 4) float32 OpenCV radial / tangential coefficients (k1, k2, p1, p2); zero
            rows are ideal pinholes.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: torch.Tensor
    height: torch.Tensor
    distortion: torch.Tensor

    def __len__(self) -> int:
        return len(self.c2w)

    def __getitem__(self, index) -> CameraSet:
        """The cameras at `index` (an int, slice, index tensor or bool mask), as a CameraSet."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return CameraSet(**{key: getattr(self, key)[index] for key in self.__dataclass_fields__})

    def to(self, device: torch.device | str) -> CameraSet:
        return CameraSet(**{key: getattr(self, key).to(device) for key in self.__dataclass_fields__})


def distort(x: torch.Tensor, y: torch.Tensor, distortion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply OpenCV's radial-tangential lens distortion to normalised image coordinates.

    With r2 = x^2 + y^2 and radial = 1 + k1 r2 + k2 r2^2:
    xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2),  yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y.

    Args:
        x, y: (...) ideal normalised coordinates, x = (u - cx) / fx and y = (v - cy) / fy with v
            measured down the image (OpenCV's convention), unitless.
        distortion: (..., 4) coefficients (k1, k2, p1, p2), broadcast against `x`.

    Returns:
        xd, yd: (...) distorted normalised coordinates. Zero coefficients return `x`, `y` unchanged.

    Example::

        >>> distort(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([0.1, 0.0, 0.0, 0.0]))
        (tensor([0.5125]), tensor([0.]))
    """
    k1, k2, p1, p2 = distortion.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort(
    xd: torch.Tensor, yd: torch.Tensor, distortion: torch.Tensor, iterations: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert `distort` by Newton's method: the ideal coordinates whose distortion is (xd, yd).

    Runs a fixed number of vectorised Newton steps (no data-dependent control flow, so no device
    synchronisation), starting from the distorted point. Converges to float precision in a few
    steps for realistic lenses (|k1|, |k2| < ~0.3) within the field of view where the model is
    invertible. Zero coefficients return the input unchanged, exactly.

    Args:
        xd, yd: (...) distorted normalised coordinates (v measured down the image), unitless.
        distortion: (..., 4) coefficients (k1, k2, p1, p2), broadcast against `xd`.
        iterations: number of Newton steps, >= 1.

    Returns:
        x, y: (...) ideal normalised coordinates, same dtype as the input.

    Example::

        >>> k = torch.tensor([0.05, -0.01, 0.001, 0.002])
        >>> x, y = undistort(*distort(torch.tensor([0.3]), torch.tensor([-0.2]), k), k)
        >>> torch.allclose(x, torch.tensor([0.3])) and torch.allclose(y, torch.tensor([-0.2]))
        True
    """
    if not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 1):
        raise NfieldError(f"undistort: iterations must be a positive integer, got {iterations!r}")
    k1, k2, p1, p2 = distortion.unbind(-1)
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        radial_dr2 = k1 + 2 * k2 * r2  # d radial / d r2; d r2 / dx = 2 x
        residual_x = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        residual_y = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        # the Jacobian of the distortion [[j_xx, j_xy], [j_xy, j_yy]] is symmetric
        j_xx = radial + 2 * x * x * radial_dr2 + 2 * p1 * y + 6 * p2 * x
        j_xy = 2 * x * y * radial_dr2 + 2 * p1 * x + 2 * p2 * y
        j_yy = radial + 2 * y * y * radial_dr2 + 6 * p1 * y + 2 * p2 * x
        determinant = j_xx * j_yy - j_xy * j_xy
        x = x - (j_yy * residual_x - j_xy * residual_y) / determinant
        y = y - (j_xx * residual_y - j_xy * residual_x) / determinant
    return x, y


def pixel_rays(
    cameras: CameraSet, camera_index: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through arbitrary pixel positions of several cameras, lens distortion removed.

    The pixel position (u, v) is undistorted in normalised coordinates (`undistort`), then its
    camera-space direction (x, -y, -1) is rotated by the camera's c2w. For zero distortion this is
    exactly `camera_rays` at the pixel centres (u, v) = (column + 0.5, row + 0.5).

    Args:
        cameras: the cameras; the rays are computed on the device and in the dtype of `cameras.c2w`.
        camera_index: (B,) integer index of each ray's camera, in [0, len(cameras)).
        u: (B,) pixel coordinate to the right, from the left edge of the image (the centre of
            column j is j + 0.5).
        v: (B,) pixel coordinate down, from the top edge of the image (the centre of row i is i + 0.5).

    Returns:
        origins: (B, 3) camera centres, world units.
        directions: (B, 3) unit directions in world coordinates.

    Raises:
        NfieldError: shapes disagree, `camera_index` is not integer, or an index is out of range.

    Example::

        >>> origins, directions = pixel_rays(cameras, torch.tensor([0, 0]), torch.tensor([0.5, 10.5]), torch.tensor([0.5, 3.5]))
    """
    c2w = cameras.c2w
    camera_index = torch.as_tensor(camera_index, device=c2w.device)
    u = torch.as_tensor(u, dtype=c2w.dtype, device=c2w.device)
    v = torch.as_tensor(v, dtype=c2w.dtype, device=c2w.device)
    if camera_index.dim() != 1 or u.shape != camera_index.shape or v.shape != camera_index.shape:
        raise NfieldError(
            "pixel_rays: camera_index, u and v must be 1-D of the same length, got shapes "
            f"{tuple(camera_index.shape)}, {tuple(u.shape)}, {tuple(v.shape)}"
        )
    if camera_index.is_floating_point() or camera_index.is_complex() or camera_index.dtype == torch.bool:
        raise NfieldError(f"pixel_rays: camera_index must be an integer tensor, got {camera_index.dtype}")
    if len(camera_index) and not (0 <= int(camera_index.min()) and int(camera_index.max()) < len(cameras)):
        raise NfieldError(
            f"pixel_rays: camera_index must lie in [0, {len(cameras)}), got values in "
            f"[{int(camera_index.min())}, {int(camera_index.max())}]"
        )
    fx, fy = cameras.fx[camera_index].to(c2w.dtype), cameras.fy[camera_index].to(c2w.dtype)
    cx, cy = cameras.cx[camera_index].to(c2w.dtype), cameras.cy[camera_index].to(c2w.dtype)
    x, y = undistort((u - cx) / fx, (v - cy) / fy, cameras.distortion[camera_index].to(c2w.dtype))
    local = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    pose = c2w[camera_index]
    directions = (local[:, None, :] @ pose[:, :3, :3].transpose(1, 2))[:, 0]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return pose[:, :3, 3].clone(), directions


def image_rays(cameras: CameraSet, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre of camera `index`, row-major (row 0 at the top), distortion removed.

    Args:
        cameras: the cameras; rays are on the device and in the dtype of `cameras.c2w`.
        index: which camera, in [0, len(cameras)).

    Returns:
        origins: (H * W, 3) the camera centre, repeated.
        directions: (H * W, 3) unit vectors; pixel (row, column) is entry row * W + column.

    Example::

        >>> origins, directions = image_rays(cameras, 0)  # a full image, e.g. for rendering a test view
    """
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(cameras)):
        raise NfieldError(f"image_rays: index must be an integer in [0, {len(cameras)}), got {index!r}")
    options = {"dtype": cameras.c2w.dtype, "device": cameras.c2w.device}
    rows = torch.arange(int(cameras.height[index]), **options) + 0.5
    columns = torch.arange(int(cameras.width[index]), **options) + 0.5
    v, u = torch.meshgrid(rows, columns, indexing="ij")
    camera_index = torch.full((u.numel(),), index, dtype=torch.int64, device=cameras.c2w.device)
    return pixel_rays(cameras, camera_index, u.reshape(-1), v.reshape(-1))


def _check_n_frames(name: str, n_frames: int) -> None:
    if not (isinstance(n_frames, int) and not isinstance(n_frames, bool) and n_frames >= 1):
        raise NfieldError(f"{name}: n_frames must be a positive integer, got {n_frames!r}")


def _positive(name: str, key: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise NfieldError(f"{name}: {key} must be a positive finite number, got {value!r}")
    return float(value)


def _training_poses(name: str, cameras: CameraSet) -> torch.Tensor:
    """(N, 4, 4) float64 CPU copy of at least two training poses, or NfieldError."""
    if len(cameras) < 2:
        raise NfieldError(f"{name}: needs at least 2 training cameras, got {len(cameras)}")
    poses = cameras.c2w.detach().to("cpu", torch.float64)
    if not torch.isfinite(poses).all():
        raise NfieldError(f"{name}: the training poses contain NaN or infinite values")
    return poses


def _nearest_point_to_axes(name: str, poses: torch.Tensor) -> torch.Tensor:
    """(3,) least-squares point nearest to all cameras' optical axes, or NfieldError if they are parallel."""
    axes = poses[:, :3, 2]  # the optical axis is -z; its sign does not matter
    projectors = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]
    matrix = projectors.sum(0)
    if torch.linalg.eigvalsh(matrix)[0] <= 1e-6 * len(poses):
        raise NfieldError(f"{name}: the training cameras' optical axes are (nearly) parallel; pass the scene centre explicitly")
    return torch.linalg.solve(matrix, (projectors @ poses[:, :3, 3, None]).sum(0))[:, 0]


def _mean_up(name: str, poses: torch.Tensor) -> torch.Tensor:
    """(3,) unit mean of the cameras' +y axes, or NfieldError if they cancel out."""
    up = poses[:, :3, 1].mean(0)
    if up.norm() < 1e-6:
        raise NfieldError(f"{name}: the training cameras' up axes cancel out; pass an up vector explicitly")
    return up / up.norm()


def scene_orbit(
    cameras: CameraSet,
    n_frames: int,
    radius: float | None = None,
    elevation_deg: float | None = None,
    center: Vector | None = None,
    up: Vector | None = None,
) -> torch.Tensor:
    """A 360-degree turntable around the scene, fitted to the training cameras (see `orbit_poses`).

    Defaults, all inferred from the training cameras:
        center: the point nearest to all optical axes in the least-squares sense.
        up: the normalised mean of the cameras' +y (image up) axes.
        radius: the median distance from the cameras to `center`.
        elevation_deg: the median angle of the cameras above the plane through `center` orthogonal to `up`.

    Args:
        cameras: >= 2 training cameras.
        n_frames: number of poses, >= 1; the last is one step short of the first (a seamless loop).
        radius: orbit radius, world units, > 0.
        elevation_deg: elevation, degrees in (-90, 90).
        center: (3,) the point every frame looks at.
        up: (3,) the orbit axis, also up in every image.

    Returns:
        (n_frames, 4, 4) float32 camera-to-world matrices on the device of `cameras.c2w`; frame 0 at
        `orbit_poses`' azimuth 0.

    Raises:
        NfieldError: fewer than 2 cameras, n_frames < 1, parallel optical axes without `center`, or
            an impossible radius or elevation.

    Example::

        >>> poses = scene_orbit(cameras, 120)  # a 120-frame orbit video around a captured object
    """
    name = "scene_orbit"
    _check_n_frames(name, n_frames)
    poses = _training_poses(name, cameras)
    center = _nearest_point_to_axes(name, poses) if center is None else _vector(f"{name}: center", center)
    if up is None:
        up = _mean_up(name, poses)
    else:
        up = _vector(f"{name}: up", up)
        if up.norm() == 0:
            raise NfieldError(f"{name}: up must be a non-zero direction")
        up = up / up.norm()
    offsets = poses[:, :3, 3] - center
    distances = offsets.norm(dim=-1)
    if radius is None:
        radius = float(distances.median())
    _positive(name, "radius", radius)
    if elevation_deg is None:
        sines = (offsets @ up / distances.clamp_min(1e-12)).clamp(-1.0, 1.0)
        elevation_deg = math.degrees(float(torch.asin(sines).median()))
    if not -90.0 < elevation_deg < 90.0:
        raise NfieldError(f"{name}: elevation_deg must lie in (-90, 90), got {elevation_deg!r}")
    return orbit_poses(n_frames, radius, elevation_deg, center, up).to(cameras.c2w.device)


def _average_pose(poses: torch.Tensor) -> torch.Tensor:
    """(4, 4) float64 LLFF average pose: mean centre, mean view direction, mean up made orthogonal."""
    z = poses[:, :3, 2].sum(0)
    z = z / z.norm()
    x = torch.linalg.cross(poses[:, :3, 1].sum(0), z)
    x = x / x.norm()
    average = torch.eye(4, dtype=torch.float64)
    average[:3, 0], average[:3, 1], average[:3, 2] = x, torch.linalg.cross(z, x), z
    average[:3, 3] = poses[:, :3, 3].mean(0)
    return average


def spiral_path(
    cameras: CameraSet,
    n_frames: int,
    n_rotations: float = 2.0,
    radius_scale: float = 1.0,
    focus_distance: float | None = None,
) -> torch.Tensor:
    """LLFF-style spiral for forward-facing captures, around the average training pose.

    The average pose has the mean camera centre, the normalised mean view direction and the mean
    up axis made orthogonal to it. Frame k sits in the average pose's x/y plane at
    (rx cos t, ry sin t) with t = 2 pi n_rotations k / n_frames, where rx and ry are
    `radius_scale` times the 90th percentile of |x| and |y| of the training camera centres in the
    average pose's frame. Every frame looks at the focus point `focus_distance` in front of the
    average pose, with the average up axis up. Unlike LLFF there is no motion along the view axis.

    Args:
        cameras: >= 2 training cameras.
        n_frames: number of poses, >= 1.
        n_rotations: number of turns over the path, > 0.
        radius_scale: factor on the spiral radii, > 0.
        focus_distance: distance from the average centre to the focus point, world units, > 0;
            default the median distance from the training cameras to the point nearest to their
            optical axes (which must converge in front of the average pose).

    Returns:
        (n_frames, 4, 4) float32 camera-to-world matrices on the device of `cameras.c2w`.

    Raises:
        NfieldError: fewer than 2 cameras, n_frames < 1, a non-positive argument, or, without
            `focus_distance`, optical axes that are parallel or meet behind the cameras.

    Example::

        >>> poses = spiral_path(cameras, 120, n_rotations=2)  # an LLFF-style video of a forward-facing scene
    """
    name = "spiral_path"
    _check_n_frames(name, n_frames)
    n_rotations = _positive(name, "n_rotations", n_rotations)
    radius_scale = _positive(name, "radius_scale", radius_scale)
    poses = _training_poses(name, cameras)
    average = _average_pose(poses)
    if focus_distance is None:
        center = _nearest_point_to_axes(name, poses)
        if float((center - average[:3, 3]) @ average[:3, 2]) >= 0:
            raise NfieldError(f"{name}: the training cameras' optical axes meet behind them; pass focus_distance explicitly")
        focus_distance = float((poses[:, :3, 3] - center).norm(dim=-1).median())
    focus_distance = _positive(name, "focus_distance", focus_distance)
    local = (poses[:, :3, 3] - average[:3, 3]) @ average[:3, :3]  # centres in the average pose's frame
    radii = radius_scale * torch.quantile(local[:, :2].abs(), 0.9, dim=0)
    focus = average[:3, 3] - focus_distance * average[:3, 2]
    angles = 2 * math.pi * n_rotations * torch.arange(n_frames, dtype=torch.float64) / n_frames
    offsets = radii[0] * torch.cos(angles)[:, None] * average[:3, 0] + radii[1] * torch.sin(angles)[:, None] * average[:3, 1]
    eyes = average[:3, 3] + offsets
    return torch.stack([look_at(eye, focus, average[:3, 1]) for eye in eyes]).to(cameras.c2w.device)


def _quaternion_from_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z), Shepperd's method."""
    m = rotation
    diagonal = torch.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],  # 4 w^2
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],  # 4 x^2
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],  # 4 y^2
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],  # 4 z^2
        ],
        dim=-1,
    )
    wx, wy, wz = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]  # 4 w x, ...
    xy, xz, yz = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]  # 4 x y, ...
    candidates = (
        torch.stack(
            [
                torch.stack([diagonal[..., 0], wx, wy, wz], dim=-1),
                torch.stack([wx, diagonal[..., 1], xy, xz], dim=-1),
                torch.stack([wy, xy, diagonal[..., 2], yz], dim=-1),
                torch.stack([wz, xz, yz, diagonal[..., 3]], dim=-1),
            ],
            dim=-2,
        )
        / (2 * diagonal.clamp_min(1e-12).sqrt())[..., None]
    )  # row i divides by 4 q_i, using the largest q_i
    best = diagonal.argmax(dim=-1)[..., None, None].expand(*diagonal.shape[:-1], 1, 4)
    quaternion = candidates.gather(-2, best)[..., 0, :]
    return quaternion / quaternion.norm(dim=-1, keepdim=True)


def _matrix_from_quaternion(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised here -> (..., 3, 3) rotation matrices."""
    w, x, y, z = (quaternion / quaternion.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) quaternions (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def _quaternion_log(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions -> (..., 3) half rotation vectors: q = (cos a, sin a n) -> a n."""
    vector = quaternion[..., 1:]
    sine = vector.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sine, quaternion[..., :1])
    return vector * torch.where(sine > 1e-12, angle / sine.clamp_min(1e-12), torch.ones_like(sine))


def _quaternion_exp(vector: torch.Tensor) -> torch.Tensor:
    """(..., 3) half rotation vectors -> (..., 4) unit quaternions, the inverse of `_quaternion_log`."""
    angle = vector.norm(dim=-1, keepdim=True)
    return torch.cat([torch.cos(angle), vector * torch.sinc(angle / math.pi)], dim=-1)


def _quaternion_conjugate(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z) -> (w, -x, -y, -z), the inverse rotation for unit quaternions."""
    return quaternion * quaternion.new_tensor([1.0, -1.0, -1.0, -1.0])


def _shortest(reference: torch.Tensor, quaternion: torch.Tensor) -> torch.Tensor:
    """`quaternion` or its negative (the same rotation), whichever is nearer to `reference`."""
    return torch.where((reference * quaternion).sum(-1, keepdim=True) < 0, -quaternion, quaternion)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from unit quaternions a (t = 0) to b (t = 1) the short way; t is (..., 1)."""
    relative = _quaternion_multiply(_quaternion_conjugate(a), _shortest(a, b))
    return _quaternion_multiply(a, _quaternion_exp(t * _quaternion_log(relative)))


def interpolated_path(cameras: CameraSet, n_frames: int) -> torch.Tensor:
    """A smooth closed loop through the training poses in their given order.

    Camera centres follow a uniform Catmull-Rom spline and orientations a squad (spherical
    quadrangle) spline of quaternions, both closed (the last camera leads back to the first) and
    with continuous velocity. Frame k sits at spline parameter s = N k / n_frames for N cameras,
    camera i at s = i, so with n_frames a multiple of N, frame i * n_frames / N is exactly camera i.

    Args:
        cameras: >= 2 training cameras, in path order.
        n_frames: number of poses, >= 1.

    Returns:
        (n_frames, 4, 4) float32 camera-to-world matrices on the device of `cameras.c2w`.

    Raises:
        NfieldError: fewer than 2 cameras or n_frames < 1.

    Example::

        >>> poses = interpolated_path(cameras, 30 * len(cameras))  # 30 frames between neighbouring cameras
    """
    name = "interpolated_path"
    _check_n_frames(name, n_frames)
    poses = _training_poses(name, cameras)
    n = len(poses)
    parameter = n * torch.arange(n_frames, dtype=torch.float64) / n_frames
    segment = parameter.floor().long().clamp_max(n - 1)
    t = (parameter - segment)[:, None]
    before, start, end, after = ((segment + offset) % n for offset in (-1, 0, 1, 2))

    p0, p1, p2, p3 = (poses[index, :3, 3] for index in (before, start, end, after))
    centres = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)

    quaternions = _quaternion_from_matrix(poses[:, :3, :3])
    q1 = quaternions[start]
    q0, q2 = _shortest(q1, quaternions[before]), _shortest(q1, quaternions[end])
    q3 = _shortest(q2, quaternions[after])

    def control(previous: torch.Tensor, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        """Squad's inner control point at `current`, so the rotation's velocity is continuous there."""
        inverse = _quaternion_conjugate(current)
        tangent = _quaternion_log(_quaternion_multiply(inverse, following)) + _quaternion_log(
            _quaternion_multiply(inverse, previous)
        )
        return _quaternion_multiply(current, _quaternion_exp(-tangent / 4))

    a, b = control(q0, q1, q2), control(q1, q2, q3)
    rotations = _slerp(_slerp(q1, q2, t), _slerp(a, b, t), 2 * t * (1 - t))

    path = torch.eye(4, dtype=torch.float64).repeat(n_frames, 1, 1)
    path[:, :3, :3] = _matrix_from_quaternion(rotations)
    path[:, :3, 3] = centres
    return path.float().to(cameras.c2w.device)


def _numbers(where: str, value: object, shape: tuple[int, ...]) -> torch.Tensor:
    """float64 tensor of `shape` from a (nested) JSON list of finite numbers, or NfieldError."""
    try:
        tensor = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        tensor = None
    if tensor is None or tensor.shape != shape or not torch.isfinite(tensor).all():
        shown = "x".join(map(str, shape))
        raise NfieldError(f"{where} must be a list of {shown} finite numbers, got {str(value)[:80]}")
    return tensor


def _rigid(where: str, matrix: torch.Tensor) -> torch.Tensor:
    """A (3, 4) or (4, 4) pose as (4, 4), checking that a 4th row is (0, 0, 0, 1)."""
    if len(matrix) == 4 and not torch.allclose(matrix[3], matrix.new_tensor([0.0, 0.0, 0.0, 1.0])):
        raise NfieldError(f"{where} has last row {matrix[3].tolist()}, not (0, 0, 0, 1): is it stored column-major?")
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3] = matrix[:3]
    return pose


def load_camera_path(
    path: str, ngp_scale: float = 0.33, ngp_offset: Vector = (0.5, 0.5, 0.5)
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int] | None]:
    """Read a camera path for rendering a video: nerfstudio's format or instant-ngp's.

    nerfstudio (the viewer's "camera path" export): {"camera_path": [{"camera_to_world": 16
    numbers, row-major 4x4, "fov": vertical field of view in degrees, ...}, ...], "render_width",
    "render_height", "camera_type": "perspective" (others are refused)}. Poses are OpenGL
    camera-to-world matrices, as here, returned unchanged: they live in the frame nerfstudio
    trained in (after its dataparser's normalisation), which this function cannot undo.

    instant-ngp (the GUI's base_cam.json): {"path": [{"R": [x, y, z, w] quaternion, "T": [3],
    "fov": degrees, "scale", "slice", "aperture_size"}, ...]}. R and T are the rotation and centre
    of ngp's internal camera (x right, y down, z forward, axes cycled and the scene scaled by
    ngp's `nerf_matrix_to_ngp`); they are mapped back to the NeRF frame of the dataset's
    transforms.json by the inverse of that transform with `ngp_scale` and `ngp_offset`, which
    must be the dataset's "scale" and "offset" (instant-ngp's defaults are 0.33 and 0.5). The fov
    is read as vertical (ngp's default fov axis); `scale`, `slice` and the aperture are ignored.
    These are ngp's spline control points, not frames: interpolate them for a video. Not
    handled: paths saved in instant-ngp's "relative to first" mode, and datasets whose cameras ngp
    moved by more than scale and offset. An entry may instead hold a "transform_matrix" (3x4 or 4x4 nested rows, NeRF
    convention, as in transforms.json), taken as is, with an optional "fov".

    Args:
        path: the JSON file.
        ngp_scale, ngp_offset: instant-ngp's scene scale (> 0) and (3,) offset, for "R"/"T" entries.

    Returns:
        poses: (n, 4, 4) float32 camera-to-world matrices, on the CPU.
        fov_y_deg: (n,) float32 vertical fields of view in degrees, or None if the file has none.
        size: (width, height) in pixels, or None if the file does not say.

    Raises:
        NfieldError: an unreadable or malformed file (the message names the bad entry).

    Example::

        >>> poses, fov_y_deg, size = load_camera_path("camera_paths/orbit.json")
    """
    name = f"load_camera_path: {path}"
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except OSError as error:
        raise NfieldError(f"{name}: cannot read the file ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NfieldError(f"{name}: not a JSON file ({error})") from None
    if isinstance(data, dict) and "camera_path" in data:
        key = "camera_path"
    elif isinstance(data, dict) and "path" in data:
        key = "path"
    else:
        raise NfieldError(f"{name}: expected a nerfstudio camera path ('camera_path') or an instant-ngp one ('path')")
    entries = data[key]
    if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
        raise NfieldError(f"{name}: '{key}' must be a non-empty list of camera objects")
    ngp_scale = _positive(name, "ngp_scale", ngp_scale)
    ngp_offset = _vector(f"{name}: ngp_offset", ngp_offset)

    poses, fovs = [], []
    for k, entry in enumerate(entries):
        where = f"{name}: {key}[{k}]"
        if key == "camera_path":
            if "camera_to_world" not in entry:
                raise NfieldError(f"{where} has no 'camera_to_world'")
            pose = _rigid(
                f"{where}.camera_to_world", _numbers(f"{where}.camera_to_world", entry["camera_to_world"], (16,)).view(4, 4)
            )
        elif "transform_matrix" in entry:
            rows = entry["transform_matrix"]
            shape = (len(rows), 4) if isinstance(rows, list) and len(rows) in (3, 4) else (4, 4)
            pose = _rigid(f"{where}.transform_matrix", _numbers(f"{where}.transform_matrix", rows, shape))
        elif "R" in entry and "T" in entry:
            x, y, z, w = _numbers(f"{where}.R", entry["R"], (4,))
            if float(torch.stack([w, x, y, z]).norm()) == 0:
                raise NfieldError(f"{where}.R is a zero quaternion")
            ngp = torch.cat(
                [_matrix_from_quaternion(torch.stack([w, x, y, z])), _numbers(f"{where}.T", entry["T"], (3,))[:, None]], 1
            )
            ngp[:, 3] = (ngp[:, 3] - ngp_offset) / ngp_scale
            ngp[:, 1:3] = -ngp[:, 1:3]
            pose = _rigid(where, ngp[[2, 0, 1]])  # undo ngp's cycling of the axes (x, y, z) <- (y, z, x)
        else:
            raise NfieldError(f"{where} needs 'R' and 'T' (instant-ngp) or a 'transform_matrix'")
        poses.append(pose)
        fov = entry.get("fov")
        if fov is not None and not (isinstance(fov, (int, float)) and not isinstance(fov, bool) and 0 < fov < 180):
            raise NfieldError(f"{where}.fov must be a vertical field of view in (0, 180) degrees, got {fov!r}")
        fovs.append(fov)

    if key == "camera_path" and data.get("camera_type", "perspective") != "perspective":
        raise NfieldError(f"{name}: camera_type {data['camera_type']!r} is not supported; only 'perspective'")
    if any(fov is None for fov in fovs) and not all(fov is None for fov in fovs):
        raise NfieldError(f"{name}: some cameras have a 'fov' and others not; give every camera one")
    fov_y_deg = None if fovs[0] is None else torch.tensor(fovs, dtype=torch.float32)
    size = None
    if "render_width" in data or "render_height" in data:
        width, height = data.get("render_width"), data.get("render_height")
        if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (width, height)):
            raise NfieldError(f"{name}: render_width and render_height must be positive integers, got {width!r} and {height!r}")
        size = (width, height)
    return torch.stack(poses).float(), fov_y_deg, size
