"""The browser's camera and nfield's camera-to-world poses, one from the other.

The viewer's page (viser) describes its camera by a camera-to-world rotation as a unit quaternion
``wxyz`` in the OpenCV convention (the camera looks along its +z, image y points down), a position
and a vertical field of view in radians. nfield's poses (`nfield.render.cameras`) use the OpenGL /
Blender convention: the camera looks along its -z, image y points up. The two differ by a rotation
of pi about the camera's x axis: ``R_opengl = R_opencv @ diag(1, -1, -1)``.

Example::

    >>> c2w = look_at((0.0, -4.0, 1.0), up=(0.0, 0.0, 1.0))            # doctest: +SKIP
    >>> wxyz, position = browser_pose(c2w)                              # doctest: +SKIP
    >>> torch.allclose(pose_from_browser(wxyz, position), c2w, atol=1e-6)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nfield.render.cameras import PinholeCamera

#: diag(1, -1, -1): flips the camera's y and z axes between the OpenCV and OpenGL conventions.
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


def quaternion_to_matrix(wxyz: np.ndarray) -> np.ndarray:
    """(4,) quaternion (w, x, y, z), normalised here -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method:
    the largest of the four squared components decides which formula is stable)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    squares = [trace, m[0, 0], m[1, 1], m[2, 2]]
    k = int(np.argmax(squares))
    if k == 0:
        s = 2 * math.sqrt(max(1 + trace, 1e-12))
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif k == 1:
        s = 2 * math.sqrt(max(1 + m[0, 0] - m[1, 1] - m[2, 2], 1e-12))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif k == 2:
        s = 2 * math.sqrt(max(1 + m[1, 1] - m[0, 0] - m[2, 2], 1e-12))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2 * math.sqrt(max(1 + m[2, 2] - m[0, 0] - m[1, 1], 1e-12))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def pose_from_browser(wxyz: np.ndarray, position: np.ndarray) -> torch.Tensor:
    """The browser camera's (wxyz, position) -> (4, 4) float32 camera-to-world pose in nfield's
    (OpenGL) convention."""
    c2w = np.eye(4)
    c2w[:3, :3] = quaternion_to_matrix(wxyz) @ _FLIP_YZ
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return torch.from_numpy(c2w).float()


def browser_pose(c2w: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) camera-to-world pose in nfield's convention -> (wxyz, position) of the browser camera."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return matrix_to_quaternion(c2w[:3, :3] @ _FLIP_YZ), c2w[:3, 3].copy()


@dataclass(frozen=True)
class ViewCamera:
    """One frame to draw: where from, and how large.

    Attributes:
        c2w: (4, 4) float32 camera-to-world pose (nfield's convention).
        fov_y: vertical field of view, radians in (0, pi).
        width, height: the frame in pixels.
    """

    c2w: torch.Tensor
    fov_y: float
    width: int
    height: int

    def rows(self, first: int, last: int) -> PinholeCamera:
        """The pinhole camera of rows [first, last) of this frame: same focal length, principal point
        moved up by `first` rows, so the rows' rays are those of the whole frame."""
        focal = 0.5 * self.height / math.tan(self.fov_y / 2)
        return PinholeCamera(self.width, last - first, focal, focal, self.width / 2, self.height / 2 - first)

    def key(self) -> tuple:
        """A hashable summary (a new key means a different picture)."""
        return (tuple(np.round(self.c2w.numpy().ravel(), 6)), round(self.fov_y, 6), self.width, self.height)


def frame_size(aspect: float, height: int) -> tuple[int, int]:
    """(width, height) in pixels of a frame `height` pixels tall at the browser's aspect ratio
    (width / height), each at least 1."""
    aspect = aspect if math.isfinite(aspect) and aspect > 0 else 1.0
    return max(1, round(height * aspect)), max(1, int(height))
