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
