"""Reading camera paths from files: nerfstudio's camera-path export and instant-ngp's saved
camera paths (`load_camera_path`), as camera-to-world matrices in the convention of
`nfield.render.cameras`.
"""

from __future__ import annotations

import json

import torch

from nfield.errors import NfieldError
from nfield.render.camera_paths import _matrix_from_quaternion, _positive
from nfield.render.cameras import Vector, _vector


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
