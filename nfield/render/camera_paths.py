"""Camera paths for rendering videos: a turntable around a point (`orbit_poses`), and paths fitted
to a set of training cameras: a turntable around the scene (`scene_orbit`), an LLFF-style spiral for
forward-facing captures (`spiral_path`) and a smooth loop through the cameras (`interpolated_path`).

Poses are camera-to-world matrices in the convention of `nfield.render.cameras`.
"""

from __future__ import annotations

import math

import torch

from nfield.errors import NfieldError
from nfield.render.cameras import CameraSet, Vector, _vector, look_at


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
