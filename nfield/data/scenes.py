"""NeRF scenes: posed photographs read from ``transforms.json`` files in three dialects.

`load_scene` reads a scene folder (or its json file) into one `Scene`: a train and a test split of
uint8 images with their `CameraSet`, and the world-space box `aabb` that fields map to [-1, 1]^3.
World coordinates are always the file's own; poses are camera-to-world matrices in the NeRF /
OpenGL convention of `nfield.render.cameras` (the camera looks along -z, +y up, +x right), which
all three dialects share.

Dialects, told apart by the files and keys present:

- ``blender`` (the NeRF synthetic scenes): a folder with ``transforms_train.json`` and
  ``transforms_test.json`` (``transforms_val.json`` is ignored). Each holds ``camera_angle_x``, the
  horizontal field of view in radians, so fx = fy = (W / 2) / tan(camera_angle_x / 2) and the
  principal point is the image centre. Frames name their images without the extension
  (``./train/r_0``); ".png" is added. The images are RGBA and stay so. Box: [-1.5, 1.5]^3.
- ``instant-ngp``: one ``transforms.json`` without ``camera_model``. Intrinsics ``fl_x fl_y cx cy w h``
  and distortion ``k1 k2 p1 p2`` are global or per frame (a frame's own win); ``camera_angle_x`` and
  ``camera_angle_y`` stand in for missing focal lengths, fl_y defaults to fl_x, cx and cy to the
  image centre, w and h to the image size. instant-ngp maps a point p of the file to its unit cube
  by p * scale + offset (``scale`` 0.33 and ``offset`` [0.5, 0.5, 0.5] by default, per axis of the
  file) and marches the cube [0.5 - aabb_scale / 2, 0.5 + aabb_scale / 2]^3 (``aabb_scale`` 1 by
  default), so here aabb = ((0.5 -+ aabb_scale / 2) - offset) / scale per axis.
- ``nerfstudio``: one ``transforms.json`` with ``camera_model``; the same intrinsic keys, of which
  ``fl_x`` and ``fl_y`` are required. Only pinhole models with at most OpenCV's k1 k2 p1 p2
  (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV) are read. The file holds no box, so it is
  taken from the cameras: the cube centred on the bounding box of the camera centres, its half
  side `NERFSTUDIO_MARGIN` (1.1) times that box's longest half side, so every camera is inside with
  a 10% margin. A warning says when this looks wrong: camera centres spanning no volume (the half
  side is then 1 world unit), or fewer than half of the cameras having the box centre within 75
  degrees of their view direction (outward- or forward-facing captures, whose scene lies outside).

The dialects with one file have no test split: after sorting the frames by file name, every
`holdout_every`-th one (frames 0, 8, 16, ... by default) is held out as the test split.

Images are read with imageio on a thread pool and kept as (N, H, W, C) uint8 on the CPU, C = 3
(RGB) or 4 (RGBA, straight alpha): grey images become RGB, and a split mixing RGB and RGBA gets an
opaque alpha on its RGB images. `downscale` d box-filters them: each output pixel is the mean of a
d x d block, rounded half up back to uint8; a size that is not a multiple of d is first cropped at
the right and bottom edges to one. The intrinsics follow: fx, fy, cx, cy are divided by d (cx, cy
count from the top-left corner, which the crop keeps) and width, height become W // d, H // d;
distortion coefficients act on normalised coordinates and do not change.

Poses are checked: every transform_matrix must be a finite 4 x 4 rigid transform, its last row
[0, 0, 0, 1] and its rotation part R orthonormal, max |R^T R - I| <= `RIGID_TOLERANCE` (1e-3, room
for the rounding noise in real files but not for a scale), with det R = +1 (no reflection). Poses
are kept as written, not re-orthonormalised. Every bad input raises `NfieldError` with one line.

Example::

    >>> scene = load_scene("data/nerf/fox", downscale=8)  # doctest: +SKIP
    >>> scene.dialect, scene.train.images.shape, len(scene.test)  # doctest: +SKIP
    ('instant-ngp', torch.Size([43, 240, 135, 3]), 7)
"""

from __future__ import annotations

import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfield.errors import NfieldError
from nfield.render.cameras import CameraSet

BLENDER_HALF_SIDE = 1.5  # the synthetic scenes fit in [-1.5, 1.5]^3
RIGID_TOLERANCE = 1e-3  # max |R^T R - I| accepted for a pose's rotation part
NEAR_FRACTION = 0.01  # Scene.near as a fraction of the box's longest side
NERFSTUDIO_MARGIN = 1.1  # box half side / half extent of the camera centres
NERFSTUDIO_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")

_NUMBER_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2", "camera_angle_x", "camera_angle_y")
_MAX_VIEW_ANGLE_DEG = 75.0  # the nerfstudio box centre should lie within this angle of most view directions


@dataclass
class SceneSplit:
    """Posed images of one split.

    Attributes:
        images: (N, H, W, C) uint8 on the CPU, row 0 at the top; C = 3 (RGB) or 4 (RGBA, straight alpha).
        cameras: the N cameras, intrinsics in pixels of `images` (already scaled by the downscale factor).
        names: N image file names relative to the scene folder, POSIX style (``"train/r_0.png"``).
    """

    images: torch.Tensor
    cameras: CameraSet
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Scene:
    """A NeRF scene.

    Attributes:
        train, test: the splits.
        aabb: (2, 3) float32 world-space box [min, max], world units, that fields map to [-1, 1]^3.
        near: ray start distance in world units (`NEAR_FRACTION` of the box's longest side).
        dialect: ``"blender"``, ``"instant-ngp"`` or ``"nerfstudio"``.
        source: the path it was loaded from.
    """

    train: SceneSplit
    test: SceneSplit
    aabb: torch.Tensor
    near: float
    dialect: str
    source: str


@dataclass
class _Frame:
    """One frame of a json file, checked but not yet read."""

    name: str  # image path relative to the scene folder, POSIX style
    path: Path  # the image file
    c2w: np.ndarray  # (4, 4) float64 rigid camera-to-world matrix
    camera: dict[str, float]  # intrinsic keys: the frame's own over the file's global ones
    where: str  # "scene/transforms.json, frame 3 (images/0004.jpg)", for messages


def load_scene(path: str | Path, downscale: int = 1, holdout_every: int = 8, skip_missing_images: bool = False) -> Scene:
    """Read a NeRF scene in the Blender, instant-ngp or nerfstudio dialect (see the module docstring).

    Args:
        path: the scene folder, or its ``transforms.json`` (any name for the single-file dialects;
            one of the ``transforms_*.json`` of a Blender folder reads that folder).
        downscale: positive integer factor by which images are box-filtered and intrinsics divided.
        holdout_every: for the single-file dialects, every holdout_every-th frame by sorted file
            name (0, k, 2k, ...) goes to the test split; at least 2. Blender scenes have their own.
        skip_missing_images: drop frames whose image file is missing, with a warning, instead of
            raising (some published captures list more frames than they ship).

    Returns:
        A `Scene` with images on the CPU.

    Raises:
        NfieldError: one line naming the file, and the frame or key, for any bad input.
    """
    _check_int("downscale", downscale, 1)
    _check_int("holdout_every", holdout_every, 2)
    path = Path(path)
    if not path.exists():
        raise NfieldError(f"{path}: no such scene folder or transforms.json file")
    folder = path if path.is_dir() else path.parent
    if (folder / "transforms_train.json").is_file() and (path.is_dir() or path.name.startswith("transforms_")):
        train_file, test_file = folder / "transforms_train.json", folder / "transforms_test.json"
        if not test_file.is_file():
            raise NfieldError(f"{folder}: has transforms_train.json but no transforms_test.json; a Blender scene needs both")
        required = (("camera_angle_x",),)
        train = _frames(_read_json(train_file), train_file, folder, required, skip_missing_images)
        test = _frames(_read_json(test_file), test_file, folder, required, skip_missing_images)
        aabb = torch.tensor([[-BLENDER_HALF_SIDE] * 3, [BLENDER_HALF_SIDE] * 3])
        dialect = "blender"
    else:
        json_path = folder / "transforms.json" if path.is_dir() else path
        if not json_path.is_file():
            raise NfieldError(f"{folder}: holds neither transforms.json nor transforms_train.json; pass a NeRF scene folder")
        header = _read_json(json_path)
        if "camera_model" in header:
            dialect = "nerfstudio"
            if header["camera_model"] not in NERFSTUDIO_CAMERA_MODELS:
                raise NfieldError(
                    f"{json_path}: camera_model {header['camera_model']!r} is not supported (only "
                    f"{', '.join(NERFSTUDIO_CAMERA_MODELS)}); undistort the images to a PINHOLE model first"
                )
            frames = _frames(header, json_path, folder, (("fl_x",), ("fl_y",)), skip_missing_images)
            aabb = _camera_box(np.stack([frame.c2w for frame in frames]))
        else:
            dialect = "instant-ngp"
            frames = _frames(header, json_path, folder, (("fl_x", "camera_angle_x"),), skip_missing_images)
            aabb = _ngp_box(header, json_path)
        frames = sorted(frames, key=lambda frame: frame.name)
        test = frames[::holdout_every]
        train = [frame for index, frame in enumerate(frames) if index % holdout_every]
        if not train:
            raise NfieldError(f"{json_path}: only {len(frames)} frame(s), none left to train on after the holdout; add frames")
    near = NEAR_FRACTION * float((aabb[1] - aabb[0]).max())
    return Scene(_load_split(train, downscale), _load_split(test, downscale), aabb.float(), near, dialect, str(path))


def _check_int(name: str, value: object, minimum: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise NfieldError(f"load_scene: {name} must be an integer >= {minimum}, got {value!r}")


def _read_json(path: Path) -> dict:
    """The top-level object of a json file, or NfieldError pointing at the syntax error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NfieldError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise NfieldError(f"{path}: cannot read it: {err}") from None
    if not isinstance(data, dict):
        raise NfieldError(f"{path}: expected a JSON object with 'frames' at the top level, got a {type(data).__name__}")
    return data


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NfieldError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _frames(
    header: dict, json_path: Path, folder: Path, required: tuple[tuple[str, ...], ...], skip_missing: bool
) -> list[_Frame]:
    """Parse and check the frames of one json file; `required` lists alternatives of keys, one of each must be set."""
    frames = header.get("frames")
    if frames is None:
        raise NfieldError(f"{json_path}: missing key 'frames' (the list of posed images)")
    if not isinstance(frames, list):
        raise NfieldError(f"{json_path}: 'frames' must be a list of frames, got a {type(frames).__name__}")
    if not frames:
        raise NfieldError(f"{json_path}: 'frames' is empty; a scene needs posed images")
    defaults = {key: _number(header[key], f"{json_path}: '{key}'") for key in _NUMBER_KEYS if key in header}
    parsed, missing = [], []
    for index, frame in enumerate(frames):
        where = f"{json_path}, frame {index}"
        if not isinstance(frame, dict):
            raise NfieldError(f"{where}: expected an object with 'file_path' and 'transform_matrix', got {frame!r:.40}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise NfieldError(f"{where}: missing key '{key}'")
        if not isinstance(frame["file_path"], str) or not frame["file_path"]:
            raise NfieldError(f"{where}: 'file_path' must be a non-empty string, got {frame['file_path']!r}")
        relative = Path(frame["file_path"])
        if not relative.suffix:
            relative = relative.with_suffix(".png")
        where = f"{where} ({relative.as_posix()})"
        camera = defaults | {key: _number(frame[key], f"{where}: '{key}'") for key in _NUMBER_KEYS if key in frame}
        for alternatives in required:
            if not any(key in camera for key in alternatives):
                alias = "".join(f" (or '{key}')" for key in alternatives[1:])
                raise NfieldError(f"{json_path}: missing key '{alternatives[0]}'{alias}, needed globally or in frame {index}")
        entry = _Frame(relative.as_posix(), folder / relative, _rigid(frame["transform_matrix"], where), camera, where)
        (parsed if entry.path.is_file() else missing).append(entry)
    if missing and not skip_missing:
        raise NfieldError(
            f"{json_path}: {len(missing)} of {len(frames)} frames point to missing images (first: {missing[0].path}); "
            "restore them, or drop those frames with --skip-missing-images (skip_missing_images=True in Python)"
        )
    if missing:
        warnings.warn(f"{json_path}: dropped {len(missing)} of {len(frames)} frames whose images are missing", stacklevel=3)
    if not parsed:
        raise NfieldError(f"{json_path}: none of the {len(frames)} frames has its image; the scene is empty")
    return parsed


def _rigid(matrix: object, where: str) -> np.ndarray:
    """(4, 4) float64 from a transform_matrix, or NfieldError saying why it is not a rigid transform."""
    try:
        c2w = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise NfieldError(f"{where}: transform_matrix must be 4 rows of 4 numbers") from None
    if c2w.shape != (4, 4):
        raise NfieldError(f"{where}: transform_matrix must be 4 x 4, got shape {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise NfieldError(f"{where}: transform_matrix has NaN or infinite entries")
    if not np.allclose(c2w[3], (0.0, 0.0, 0.0, 1.0), rtol=0.0, atol=1e-6):
        raise NfieldError(f"{where}: transform_matrix's last row is {c2w[3].tolist()}, not [0, 0, 0, 1]")
    rotation = c2w[:3, :3]
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > RIGID_TOLERANCE:
        raise NfieldError(
            f"{where}: transform_matrix is not rigid (max |R^T R - I| = {error:.3g} > {RIGID_TOLERANCE}); "
            "its rotation part must be orthonormal, without scale"
        )
    if np.linalg.det(rotation) < 0:
        raise NfieldError(f"{where}: transform_matrix is a reflection (det -1), not a rotation; flip one camera axis back")
    c2w[3] = (0.0, 0.0, 0.0, 1.0)
    return c2w


def _ngp_box(header: dict, json_path: Path) -> torch.Tensor:
    """(2, 3) float64 instant-ngp box in the file's coordinates: ((0.5 -+ aabb_scale / 2) - offset) / scale."""
    aabb_scale = _number(header.get("aabb_scale", 1), f"{json_path}: 'aabb_scale'")
    scale = _number(header.get("scale", 0.33), f"{json_path}: 'scale'")
    offset = header.get("offset", [0.5, 0.5, 0.5])
    if not (isinstance(offset, list) and len(offset) == 3):
        raise NfieldError(f"{json_path}: 'offset' must be a list of 3 numbers, got {offset!r}")
    offset = torch.tensor([_number(value, f"{json_path}: 'offset'") for value in offset], dtype=torch.float64)
    if not (aabb_scale > 0 and scale > 0):
        raise NfieldError(f"{json_path}: 'aabb_scale' and 'scale' must be positive, got {aabb_scale} and {scale}")
    corners = torch.tensor([[0.5 - aabb_scale / 2], [0.5 + aabb_scale / 2]], dtype=torch.float64)
    return (corners - offset) / scale


def _camera_box(c2w: np.ndarray) -> torch.Tensor:
    """(2, 3) float64 cube around camera centres of poses `c2w` (N, 4, 4); warns when it looks wrong."""
    centres = c2w[:, :3, 3]
    low, high = centres.min(axis=0), centres.max(axis=0)
    middle, half = (low + high) / 2, float((high - low).max()) / 2 * NERFSTUDIO_MARGIN
    if half <= 1e-6 * (1.0 + float(np.abs(middle).max())):
        warnings.warn("nerfstudio scene: the camera centres span no volume; using a box of half side 1 around them", stacklevel=3)
        half = 1.0
    else:
        to_middle = middle - centres
        distance = np.linalg.norm(to_middle, axis=1)
        cosine = np.einsum("ni,ni->n", -c2w[:, :3, 2], to_middle) / np.maximum(distance, 1e-12)
        facing = (cosine >= math.cos(math.radians(_MAX_VIEW_ANGLE_DEG))) | (distance < 1e-9 * half)
        if facing.mean() < 0.5:
            warnings.warn(
                f"nerfstudio scene: only {int(facing.sum())} of {len(c2w)} cameras look towards the centre of the box "
                "fitted to them (outward- or forward-facing capture?); the scene may lie outside the box",
                stacklevel=3,
            )
    return torch.tensor(np.stack([middle - half, middle + half]))


def _read_image(frame: _Frame, downscale: int) -> tuple[tuple[int, int], np.ndarray]:
    """((H, W) as stored, (H // d, W // d, C) uint8 RGB or RGBA) for one frame."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(frame.path))
    except Exception as err:  # imageio raises many types; all mean "not readable as an image"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NfieldError(f"{frame.where}: cannot read {frame.path} as an image: {reason}") from None
    if array.dtype != np.uint8:
        raise NfieldError(f"{frame.where}: {array.dtype} pixels; scenes hold 8-bit images, convert it to 8 bits")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise NfieldError(f"{frame.where}: expected a grey, RGB or RGBA image, got an array of shape {array.shape}")
    if array.shape[2] < 3:  # grey (+ alpha) -> RGB (+ alpha)
        array = np.concatenate([array[..., :1].repeat(3, axis=2), array[..., 1:]], axis=2)
    height, width = array.shape[:2]
    if height < downscale or width < downscale:
        raise NfieldError(f"{frame.where}: a {width}x{height} image cannot be downscaled by {downscale}; use a smaller factor")
    return (height, width), box_downscale(array, downscale)


def box_downscale(array: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H // f, W // f, C) uint8 block means rounded half up, cropping the remainder."""
    if factor == 1:
        return array
    height, width, channels = array.shape[0] // factor, array.shape[1] // factor, array.shape[2]
    blocks = array[: height * factor, : width * factor].reshape(height, factor, width, factor, channels)
    area = factor * factor
    sums = blocks.sum(axis=1, dtype=np.uint32).sum(axis=2)  # rows first: 4x faster than axis=(1, 3)
    return ((sums + area // 2) // area).astype(np.uint8)


def _intrinsics(frame: _Frame, width: int, height: int) -> list[float]:
    """[fx, fy, cx, cy, k1, k2, p1, p2] in pixels of the stored image (width, height)."""
    camera = frame.camera

    def focal(key: str, angle_key: str, size: int) -> float | None:
        if key in camera:
            return camera[key]
        if angle_key in camera:
            if not 0 < camera[angle_key] < math.pi:
                raise NfieldError(
                    f"{frame.where}: '{angle_key}' must be a field of view in (0, pi) radians, got {camera[angle_key]}"
                )
            return 0.5 * size / math.tan(camera[angle_key] / 2)
        return None

    fx = focal("fl_x", "camera_angle_x", width)
    assert fx is not None, "load_scene requires fl_x or camera_angle_x for every frame"
    fy = focal("fl_y", "camera_angle_y", height)
    fy = fx if fy is None else fy
    if not (fx > 0 and fy > 0):
        raise NfieldError(f"{frame.where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}")
    for key in ("k3", "k4"):
        if camera.get(key, 0.0) != 0.0:
            raise NfieldError(f"{frame.where}: '{key}' is not supported (only k1 k2 p1 p2); undistort the images first")
    distortion = [camera.get(key, 0.0) for key in ("k1", "k2", "p1", "p2")]
    return [fx, fy, camera.get("cx", width / 2), camera.get("cy", height / 2), *distortion]


def _load_split(frames: list[_Frame], downscale: int) -> SceneSplit:
    """Read and downscale the images of `frames` in parallel and build their cameras."""
    with ThreadPoolExecutor() as pool:
        results = list(pool.map(lambda frame: _read_image(frame, downscale), frames))
    first_size = results[0][0]
    for frame, ((height, width), _) in zip(frames, results):
        stated = (frame.camera.get("h", height), frame.camera.get("w", width))
        if stated != (height, width):
            raise NfieldError(
                f"{frame.where}: the image is {width}x{height} pixels but the json says w={stated[1]:g}, h={stated[0]:g}; "
                "fix w/h or the image"
            )
        if (height, width) != first_size:
            raise NfieldError(
                f"{frame.where}: the image is {width}x{height} pixels but {frames[0].name} is "
                f"{first_size[1]}x{first_size[0]}; the images of a split must share one size"
            )
    arrays = [array for _, array in results]
    if len({array.shape[2] for array in arrays}) > 1:  # mixed RGB and RGBA: make all RGBA
        opaque = np.full(arrays[0].shape[:2] + (1,), 255, dtype=np.uint8)
        arrays = [array if array.shape[2] == 4 else np.concatenate([array, opaque], axis=2) for array in arrays]
    images = torch.from_numpy(np.stack(arrays))
    height, width = first_size
    values = torch.tensor([_intrinsics(frame, width, height) for frame in frames], dtype=torch.float64)
    count = len(frames)
    cameras = CameraSet(
        c2w=torch.from_numpy(np.stack([frame.c2w for frame in frames])).float(),
        fx=(values[:, 0] / downscale).float(),
        fy=(values[:, 1] / downscale).float(),
        cx=(values[:, 2] / downscale).float(),
        cy=(values[:, 3] / downscale).float(),
        width=torch.full((count,), width // downscale, dtype=torch.int64),
        height=torch.full((count,), height // downscale, dtype=torch.int64),
        distortion=values[:, 4:].float(),
    )
    return SceneSplit(images, cameras, [frame.name for frame in frames])
