"""Pinhole cameras, camera poses and per-pixel rays, in the NeRF / Blender / OpenGL convention.

A pose is a camera-to-world matrix c2w (4, 4): its columns are the camera's +x (image right),
+y (image up) and +z axes in world coordinates, then the camera centre. The camera looks along its
own -z axis. Pixel (row, column) has its centre at (column + 0.5, row + 0.5) in pixel units,
row 0 at the top of the image, so its camera-space direction is
((column + 0.5 - cx) / fx, -(row + 0.5 - cy) / fy, -1).

Camera paths for videos are in `nfield.render.camera_paths`; `nfield.render.camera_path_files`
reads them from files.

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
