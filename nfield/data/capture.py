"""From a folder of photos or a video to a NeRF scene folder: ``nfield process-data``.

The scene is what `nfield.data.scenes.load_scene` reads as instant-ngp's dialect, the way
instant-ngp's ``colmap2nerf.py`` and nerfstudio's ``ns-process-data`` make it::

    SCENE/transforms.json     one shared camera (fl_x fl_y cx cy w h and the distortion k1 k2 p1 p2
                              train-nerf undistorts), aabb_scale, and a frame per registered image
    SCENE/images/             the images (a video's sampled frames as JPEG)
    SCENE/images_2/ ...       box-filtered copies at 1/2, 1/4, 1/8 (--downscale)
    SCENE/colmap/sparse/0/    COLMAP's sparse model (cameras, images, points3D)

Steps:

1. A video is sampled to `CaptureOptions.frames` frames: its frames are split into that many
   windows of consecutive frames, and each window keeps its sharpest frame (the variance of the
   Laplacian of its grey image, as colmap2nerf scores sharpness).
2. COLMAP (`nfield.data.colmap`) registers the images, or ``--colmap-model`` gives a model made
   before. Fewer than half of the images registered is an error naming the dropped ones; of several
   disconnected models the largest is kept (with a warning when it lacks images another one holds).
3. The poses are oriented and normalised as the anchors do: the world is turned so that the mean
   of the cameras' up axes is +z, moved so that the point the cameras look at (the least-squares
   closest point to their optical axes; their mean centre when the axes are near parallel) is the
   origin, and scaled so that the cameras' mean distance from it is `CAMERA_DISTANCE` (4, "NeRF
   sized"). ``aabb_scale`` is the smallest power of two whose box (instant-ngp's, as nfield reads
   it: half side aabb_scale / (2 x 0.33)) holds every camera.

The scene is written into a temporary folder beside SCENE and renamed into place at the end, so a
failure at any step leaves no SCENE behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import imageio.v3 as iio
import numpy as np

from nfield.data.colmap import Registration, choose_matcher, read_colmap_model, run_colmap
from nfield.data.images import quiet_probing
from nfield.data.scenes import box_downscale
from nfield.errors import NfieldError
from nfield.outputs import check_writable_directory
from nfield.progress import progress_bar

#: The photos a folder is searched for (not recursive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
#: Fewest images a scene is made from.
MIN_IMAGES = 3
#: The cameras' mean distance from the scene's centre after normalisation (colmap2nerf's).
CAMERA_DISTANCE = 4.0
#: instant-ngp's default scale of a transforms.json's coordinates into its unit cube.
NGP_SCALE = 0.33
#: Largest aabb_scale written (instant-ngp's).
MAX_AABB_SCALE = 128
#: A least-squares focus point is used only when the optical axes constrain it this well (the
#: smallest eigenvalue of the system over the largest); else the mean camera centre.
FOCUS_CONDITION = 1e-3


@dataclass(frozen=True)
class CaptureOptions:
    """How a capture becomes a scene.

    Attributes:
        frames: a video's frames to keep (the sharpest of each of as many windows).
        matcher: auto (sequential for a video, exhaustive for photos, vocab_tree with `vocab_tree`),
            exhaustive, sequential or vocab_tree.
        vocab_tree: a COLMAP vocabulary tree file for the vocab_tree matcher.
        camera_model: COLMAP's camera model (`nfield.data.colmap.CAMERA_MODELS`).
        single_camera: one camera shared by every image.
        colmap_model: an existing COLMAP sparse model of the images to convert instead of running COLMAP.
        downscales: factors of the downscaled copies (images_2/, images_4/, ...).
        overwrite: replace an existing scene folder.
        progress: show a progress bar for each phase.
    """

    frames: int = 150
    matcher: Literal["auto", "exhaustive", "sequential", "vocab_tree"] = "auto"
    vocab_tree: Path | None = None
    camera_model: str = "OPENCV"
    single_camera: bool = True
    colmap_model: Path | None = None
    downscales: tuple[int, ...] = (2, 4, 8)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.frames < MIN_IMAGES:
            raise NfieldError(f"--frames must be at least {MIN_IMAGES}, got {self.frames}")
        if any(d < 2 for d in self.downscales):
            raise NfieldError(f"--downscale factors must be integers of at least 2, got {list(self.downscales)}")
        if self.matcher == "vocab_tree" and self.vocab_tree is None:
            raise NfieldError("--matcher vocab_tree needs --vocab-tree FILE (a COLMAP vocabulary tree)")
        if self.vocab_tree is not None and not Path(self.vocab_tree).is_file():
            raise NfieldError(f"--vocab-tree {self.vocab_tree}: no such file")


def process_capture(source: Path, out: Path, options: CaptureOptions = CaptureOptions()) -> dict[str, Any]:
    """Make the scene folder `out` from `source`, a folder of photos or a video file (see the module
    docstring). Returns the summary: images registered of given, mean reprojection error (pixels),
    sparse points, aabb_scale and the seconds of each phase."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise NfieldError(f"{source}: no such folder or video file")
    _check_out(out, options.overwrite)
    from_video = source.is_file()
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        summary = _process(source, work, from_video, options)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    summary["scene"] = str(out)
    return summary


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NfieldError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise NfieldError(f"--out {out}: is not empty; pass --overwrite to replace it")
        if not (out / "transforms.json").is_file():
            raise NfieldError(f"--out {out}: is a non-empty folder that is not a scene; refusing to delete it")
    check_writable_directory(out.parent if not out.exists() else out)


def _process(source: Path, work: Path, from_video: bool, options: CaptureOptions) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    images = work / "images"
    images.mkdir(parents=True)
    started = perf_counter()
    if from_video:
        names, sharpness = sample_video(source, images, options.frames, options.progress)
    else:
        names, sharpness = _copy_photos(source, images, options.progress), {}
    seconds["frames" if from_video else "images"] = perf_counter() - started
    if len(names) < MIN_IMAGES:
        raise NfieldError(f"{source}: {len(names)} image(s); a scene needs at least {MIN_IMAGES}")

    if options.colmap_model is not None:
        started = perf_counter()
        registration = read_colmap_model(Path(options.colmap_model), names)
        model_dir = work / "colmap" / "sparse" / "0"
        shutil.copytree(options.colmap_model, model_dir)
        seconds["colmap model"] = perf_counter() - started
    else:
        matcher = options.matcher if options.matcher != "auto" else choose_matcher(len(names), from_video, options.vocab_tree)
        bars: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                for bar in bars.values():
                    bar.close()
                bars[phase] = progress_bar(
                    total=total, desc=f"COLMAP {phase}", unit="image" if total > 1 else "phase", enabled=options.progress
                )
            bars[phase].update(done - bars[phase].n)

        try:
            registration = run_colmap(
                images, names, work / "colmap", matcher, options.vocab_tree, options.camera_model, options.single_camera, progress
            )
        finally:
            for bar in bars.values():
                bar.close()
        (work / "colmap" / "database.db").unlink(missing_ok=True)
        seconds.update(registration.seconds)
    _check_registered(registration, names, from_video)

    started = perf_counter()
    c2w, points, aabb_scale = normalise_poses(registration.c2w, registration.points)
    _write_transforms(work, registration, c2w, aabb_scale, sharpness)
    _write_downscaled(images, registration.names, options.downscales, options.progress)
    seconds["scene"] = perf_counter() - started
    return {
        "registered": len(registration.names),
        "images": len(names),
        "dropped": registration.dropped,
        "models": registration.n_models,
        "mean_reprojection_error": round(registration.mean_reprojection_error, 4),
        "points": int(len(registration.points)),
        "aabb_scale": aabb_scale,
        "seconds": {phase: round(s, 2) for phase, s in seconds.items()},
    }


def _copy_photos(source: Path, images: Path, progress: bool) -> list[str]:
    """Copy the photos of the folder `source` into `images` (their names kept); the names, sorted."""
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise NfieldError(f"{source}: no images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}) in this folder")
    for path in progress_bar(files, desc="copying images", unit="image", enabled=progress):
        try:
            with quiet_probing():
                iio.improps(path)  # a file that is not an image fails here, before COLMAP
        except Exception:
            raise NfieldError(f"{path}: cannot read it as an image") from None
        shutil.copyfile(path, images / path.name)
    return [p.name for p in files]


def sharpness_of(frame: np.ndarray) -> float:
    """The variance of the Laplacian of the frame's grey image (H, W, C) uint8: higher is sharper."""
    from scipy.ndimage import laplace

    grey = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(laplace(grey).var())


def sample_video(path: Path, images: Path, n_frames: int, progress: bool = True) -> tuple[list[str], dict[str, float]]:
    """Write the sharpest frame of each of `n_frames` windows of consecutive frames of the video
    `path` into `images` as JPEG (all frames, when it has no more); returns the names in time order
    and their sharpness. Two passes over the video: one scores every frame, one writes the chosen."""
    scores = []
    try:
        with quiet_probing():
            bar = progress_bar(desc="scoring video frames", unit="frame", enabled=progress)
            for frame in iio.imiter(path):
                scores.append(sharpness_of(np.asarray(frame)))
                bar.update(1)
            bar.close()
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NfieldError(f"{path}: cannot read it as a video ({type(err).__name__}: {first[:120]})") from None
    if len(scores) < MIN_IMAGES:
        raise NfieldError(f"{path}: holds {len(scores)} frame(s); a scene needs at least {MIN_IMAGES}")
    windows = np.array_split(np.arange(len(scores)), min(n_frames, len(scores)))
    chosen = {int(window[np.argmax([scores[i] for i in window])]) for window in windows}
    names, sharpness = [], {}
    with quiet_probing():
        bar = progress_bar(total=len(chosen), desc="writing frames", unit="frame", enabled=progress)
        for index, frame in enumerate(iio.imiter(path)):
            if index in chosen:
                name = f"frame_{index + 1:05d}.jpg"
                iio.imwrite(images / name, np.ascontiguousarray(np.asarray(frame)[..., :3]), quality=95)
                names.append(name)
                sharpness[name] = round(scores[index], 3)
                bar.update(1)
        bar.close()
    return names, sharpness


def _check_registered(registration: Registration, names: list[str], from_video: bool) -> None:
    """`NfieldError` when COLMAP registered fewer than half of the images (naming the dropped ones);
    a warning when it made several models (the largest is kept)."""
    if 2 * len(registration.names) < len(names):
        dropped = registration.dropped
        shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8 else "")
        hint = (
            "sample more frames (--frames) or film more slowly"
            if from_video
            else "try --matcher exhaustive or add overlapping photos"
        )
        raise NfieldError(f"COLMAP registered {len(registration.names)} of {len(names)} images (dropped: {shown}); {hint}")
    if registration.n_models > 1 and registration.dropped:  # a model of images the kept one lacks
        warnings.warn(
            f"COLMAP made {registration.n_models} disconnected models; kept the largest ({len(registration.names)} of "
            f"{len(names)} images); the others are in colmap/sparse/others",
            stacklevel=2,
        )


def normalise_poses(c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Orient, centre and scale camera-to-world poses (N, 4, 4) and points (P, 3) as the module
    docstring says; returns (poses, points, aabb_scale)."""
    c2w, points = c2w.astype(np.float64).copy(), points.astype(np.float64).reshape(-1, 3)
    up = c2w[:, :3, 1].mean(axis=0)
    if np.linalg.norm(up) < 1e-9:
        raise NfieldError("the cameras' up axes cancel out; the capture has no common up direction")
    turn = np.eye(4)
    turn[:3, :3] = rotation_between(up / np.linalg.norm(up), np.array([0.0, 0.0, 1.0]))
    c2w = turn @ c2w
    points = points @ turn[:3, :3].T
    centre = focus_point(c2w[:, :3, 3], -c2w[:, :3, 2])
    c2w[:, :3, 3] -= centre
    points = points - centre
    distance = np.linalg.norm(c2w[:, :3, 3], axis=1)
    scale = CAMERA_DISTANCE / max(float(distance.mean()), 1e-12)
    c2w[:, :3, 3] *= scale
    points = points * scale
    reach = float(distance.max() * scale)
    aabb_scale = 1
    while aabb_scale / (2 * NGP_SCALE) < reach and aabb_scale < MAX_AABB_SCALE:
        aabb_scale *= 2
    return c2w, points, aabb_scale


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation turning the unit vector `a` onto the unit vector `b` (Rodrigues)."""
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        other = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        axis = np.cross(a, other)
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)  # a half turn about an axis orthogonal to a
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / sin
    return np.eye(3) + sin * k + (1 - cos) * (k @ k)


def focus_point(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(3,) the point closest, in least squares, to the lines through `origins` (N, 3) along
    `directions` (N, 3): where the cameras look; their mean centre when the lines are near parallel."""
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (N, 3, 3): off-axis component
    a = projectors.sum(axis=0)
    eigenvalues = np.linalg.eigvalsh(a)
    if eigenvalues[0] < FOCUS_CONDITION * eigenvalues[-1]:
        return origins.mean(axis=0)
    return np.linalg.solve(a, (projectors @ origins[:, :, None]).sum(axis=0)[:, 0])


def compare_poses(c2w: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far poses (N, 4, 4) are from `reference` (N, 4, 4, the same cameras) in another world
    frame: (N,) rotation errors in degrees, once the poses are turned by the rotation that best maps
    their orientations onto the reference's (the chordal mean of R_ref R^T), and (N,) centre errors
    as a share of the capture's extent (the largest distance between two reference centres), once
    their centres are mapped by the similarity that best fits the reference's (Umeyama)."""
    turn = _nearest_rotation(np.einsum("nij,nkj->ik", reference[:, :3, :3], c2w[:, :3, :3]))
    relative = np.einsum("nji,njk->nik", reference[:, :3, :3], turn @ c2w[:, :3, :3])  # R_ref^T R_turned
    angles = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)))
    source, target = c2w[:, :3, 3], reference[:, :3, 3]
    source_mean, target_mean = source.mean(0), target.mean(0)
    covariance = (target - target_mean).T @ (source - source_mean) / len(source)
    rotation = _nearest_rotation(covariance)
    singular = np.linalg.svd(covariance, compute_uv=False)
    sign = np.sign(np.linalg.det(covariance)) or 1.0
    scale = float((singular[0] + singular[1] + sign * singular[2]) / ((source - source_mean) ** 2).sum(1).mean())
    aligned = scale * (source - source_mean) @ rotation.T + target_mean
    extent = max(float(np.linalg.norm(target[:, None] - target[None], axis=-1).max()), 1e-12)
    return angles, np.linalg.norm(aligned - target, axis=1) / extent


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation nearest to `matrix` in the Frobenius norm (a proper one: det +1)."""
    u, _, vt = np.linalg.svd(matrix)
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ sign @ vt


def _write_transforms(work: Path, registration: Registration, c2w: np.ndarray, aabb_scale: int, sharpness: dict) -> None:
    """transforms.json: the shared camera at the top (per frame when the images have their own)."""
    cameras = [registration.cameras[name] for name in registration.names]
    shared = all(camera == cameras[0] for camera in cameras)
    header: dict[str, Any] = dict(cameras[0]) if shared else {}
    if shared:
        header["camera_angle_x"] = 2 * math.atan(header["w"] / (2 * header["fl_x"]))
        header["camera_angle_y"] = 2 * math.atan(header["h"] / (2 * header["fl_y"]))
    header["aabb_scale"] = aabb_scale
    frames = []
    for name, camera, pose in zip(registration.names, cameras, c2w):
        frame: dict[str, Any] = {"file_path": f"images/{name}"}
        if name in sharpness:
            frame["sharpness"] = sharpness[name]
        if not shared:
            frame.update(camera)
        frame["transform_matrix"] = pose.tolist()
        frames.append(frame)
    (work / "transforms.json").write_text(json.dumps({**header, "frames": frames}, indent=2) + "\n")


def _write_downscaled(images: Path, names: list[str], factors: tuple[int, ...], progress: bool) -> None:
    """images_<f>/ with every registered image box-filtered by f (same names)."""
    if not factors:
        return
    for factor in factors:
        (images.parent / f"images_{factor}").mkdir()
    for name in progress_bar(names, desc="downscaled copies", unit="image", enabled=progress):
        with quiet_probing():
            array = np.asarray(iio.imread(images / name))
        if array.ndim == 2:
            array = array[..., None]
        for factor in factors:
            small = box_downscale(array[..., : min(array.shape[-1], 4)], factor)
            iio.imwrite(images.parent / f"images_{factor}" / name, small.squeeze(-1) if small.shape[-1] == 1 else small)


def print_summary(summary: dict[str, Any]) -> None:
    """The summary a person reads at the end, on stderr."""
    phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in summary["seconds"].items())
    print(
        f"registered {summary['registered']} of {summary['images']} images, mean reprojection error "
        f"{summary['mean_reprojection_error']:.3f} px, {summary['points']:,} points, aabb_scale {summary['aabb_scale']} "
        f"-> {summary['scene']} ({phases})",
        file=sys.stderr,
    )
