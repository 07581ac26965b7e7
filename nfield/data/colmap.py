"""Camera poses from photographs with COLMAP, through its Python bindings (pycolmap).

`run_colmap` runs COLMAP's sparse pipeline on a folder of images: SIFT features, a matcher chosen
for the input (sequential for video frames, exhaustive for photo sets, a vocabulary tree when one is
given), and incremental mapping, with one shared camera by default. `read_colmap_model` reads a
sparse model (COLMAP's cameras/images/points3D files, binary or text) that exists already. Both
return a `Registration`: the registered images' camera-to-world poses in the OpenGL convention of
`nfield.render.cameras` (the camera looks along -z, +y up), in COLMAP's world, with the camera's
intrinsics in the keys of a transforms.json (``fl_x fl_y cx cy w h k1 k2 p1 p2``).

pycolmap is an optional dependency (``pip install 'nfield[capture]'``); `require_pycolmap` says so
in one line when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Literal

import numpy as np

from nfield.errors import NfieldError

Matcher = Literal["exhaustive", "sequential", "vocab_tree"]
#: COLMAP camera models whose parameters a transforms.json can state: name -> the keys of its
#: parameters, in COLMAP's order ("f" is both focal lengths, "k" is k1).
CAMERA_MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fl_x", "fl_y", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2"),
}
#: COLMAP's (glog's) least severe message shown: 2, errors.
COLMAP_LOG_LEVEL = 2
#: Images that call exhaustive matching slow on a CPU (its pairs grow with the square of the count).
EXHAUSTIVE_WARNING_IMAGES = 200


@dataclass
class Registration:
    """What COLMAP recovered from a set of images.

    Attributes:
        names: the registered images' file names, sorted.
        c2w: (N, 4, 4) float64 camera-to-world poses of `names`, OpenGL convention, COLMAP's world.
        cameras: per image name, its intrinsics as transforms.json keys (fl_x, fl_y, cx, cy, w, h and
            the distortion k1, k2, p1, p2 the model has).
        points: (P, 3) float64 sparse points in COLMAP's world.
        mean_reprojection_error: pixels.
        dropped: the images given that no model registered.
        n_models: how many disconnected models COLMAP made (the largest is kept).
        seconds: each phase's wall time.
    """

    names: list[str]
    c2w: np.ndarray
    cameras: dict[str, dict[str, float]]
    points: np.ndarray
    mean_reprojection_error: float
    dropped: list[str] = field(default_factory=list)
    n_models: int = 1
    seconds: dict[str, float] = field(default_factory=dict)


def require_pycolmap() -> Any:
    """The pycolmap module, or `NfieldError` saying how to install it. COLMAP's own log (a line per
    step of every phase) is kept to its errors: the phases show progress bars instead."""
    try:
        import pycolmap
    except ImportError:
        raise NfieldError("process-data needs COLMAP's Python bindings: pip install 'nfield[capture]' (pycolmap)") from None
    pycolmap.logging.minloglevel = COLMAP_LOG_LEVEL
    return pycolmap


def choose_matcher(n_images: int, from_video: bool, vocab_tree: Path | None) -> Matcher:
    """Sequential matching for video frames (neighbours in time overlap), a vocabulary tree when one
    is given, else exhaustive matching, with a warning about the time for a large photo set."""
    if from_video:
        return "sequential"
    if vocab_tree is not None:
        return "vocab_tree"
    if n_images > EXHAUSTIVE_WARNING_IMAGES:
        import warnings

        warnings.warn(
            f"exhaustive matching of {n_images} images compares {n_images * (n_images - 1) // 2:,} pairs and may take "
            "long on a CPU; pass --vocab-tree FILE (a COLMAP vocabulary tree) for large photo sets",
            stacklevel=2,
        )
    return "exhaustive"


def run_colmap(
    image_dir: Path,
    names: list[str],
    work_dir: Path,
    matcher: Matcher,
    vocab_tree: Path | None = None,
    camera_model: str = "OPENCV",
    single_camera: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> Registration:
    """COLMAP's sparse reconstruction of `names` in `image_dir`, working in `work_dir` (its
    database and models are left there: ``database.db``, ``sparse/0``).

    Args:
        image_dir: the folder of the images.
        names: the file names to use, in order (video frames: in time order).
        work_dir: an empty folder for COLMAP's files.
        matcher: exhaustive, sequential or vocab_tree (`vocab_tree` is then the tree's file).
        camera_model: one of `CAMERA_MODELS`; OPENCV (focal lengths, centre, k1 k2 p1 p2) by default.
        single_camera: one camera shared by every image (a phone or one camera at one zoom).
        progress: called as ``progress(phase, done, total)`` while a phase advances.
    """
    pycolmap = require_pycolmap()
    if camera_model not in CAMERA_MODELS:
        raise NfieldError(f"--camera-model {camera_model}: one of {', '.join(CAMERA_MODELS)}")
    report = progress or (lambda phase, done, total: None)
    work_dir.mkdir(parents=True, exist_ok=True)
    database = work_dir / "database.db"
    seconds: dict[str, float] = {}

    started = perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.PER_IMAGE
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    chunk = max(1, len(names) // 20)
    for first in range(0, len(names), chunk):  # in chunks, so the phase shows its progress
        batch = names[first : first + chunk]
        pycolmap.extract_features(
            database, image_dir, image_names=batch, camera_mode=mode, reader_options=reader, extraction_options=extraction
        )
        if single_camera:  # the later chunks share the first chunk's camera (the database's first, id 1)
            reader.existing_camera_id = 1
        report("features", min(first + chunk, len(names)), len(names))
    seconds["features"] = perf_counter() - started

    started = perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    report("matching", 0, 1)
    if matcher == "sequential":
        pycolmap.match_sequential(database, matching_options=matching)
    elif matcher == "vocab_tree":
        pairing = pycolmap.VocabTreePairingOptions()
        pairing.vocab_tree_path = str(vocab_tree)
        pycolmap.match_vocabtree(database, matching_options=matching, pairing_options=pairing)
    else:
        pycolmap.match_exhaustive(database, matching_options=matching)
    report("matching", 1, 1)
    seconds["matching"] = perf_counter() - started

    started = perf_counter()
    sparse = work_dir / "sparse"
    sparse.mkdir(exist_ok=True)
    options = pycolmap.IncrementalPipelineOptions()
    registered = [0]

    def next_image() -> None:
        registered[0] += 1
        report("mapping", min(registered[0], len(names)), len(names))

    models = pycolmap.incremental_mapping(database, image_dir, sparse, options=options, next_image_callback=next_image)
    seconds["mapping"] = perf_counter() - started
    if not models:
        raise NfieldError(
            f"COLMAP registered none of the {len(names)} images (too little overlap or texture); "
            "try more images with more overlap, or --frames for a video"
        )
    largest = max(models, key=lambda k: models[k].num_reg_images())
    chosen = sparse / str(largest)
    if largest != 0:  # the kept model at sparse/0, where the anchors' tools look for it
        others = sparse / "others"
        others.mkdir()
        for key in models:
            (sparse / str(key)).rename(others / str(key))
        (others / str(largest)).rename(sparse / "0")
        chosen = sparse / "0"
    registration = _registration(models[largest], names)
    registration.n_models = len(models)
    registration.seconds = seconds
    if not chosen.is_dir():  # pycolmap wrote nothing on disk for it: keep the model we read
        chosen.mkdir(parents=True)
        models[largest].write(chosen)
    return registration


def read_colmap_model(model_dir: Path, names: list[str] | None = None) -> Registration:
    """The registration a COLMAP sparse model holds (a folder with cameras, images and points3D,
    ``.bin`` or ``.txt``); `names`: the images it was made from (to name the dropped ones)."""
    pycolmap = require_pycolmap()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NfieldError(f"--colmap-model {model_dir}: no such folder")
    if not any((model_dir / f"cameras.{suffix}").is_file() for suffix in ("bin", "txt")):
        raise NfieldError(f"--colmap-model {model_dir}: not a COLMAP sparse model (no cameras.bin or cameras.txt)")
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises its own errors for damaged files
        raise NfieldError(
            f"--colmap-model {model_dir}: unreadable ({(str(err).splitlines() or [type(err).__name__])[0]})"
        ) from None
    return _registration(reconstruction, names)


def _registration(reconstruction: Any, names: list[str] | None) -> Registration:
    """A pycolmap `Reconstruction` as a `Registration` (poses converted to the OpenGL convention)."""
    images = sorted(reconstruction.images.values(), key=lambda image: image.name)
    images = [image for image in images if image.has_pose]
    if not images:
        raise NfieldError("the COLMAP model has no registered image")
    c2w, cameras = [], {}
    for image in images:
        world_to_camera = image.cam_from_world()
        w2c = np.eye(4)
        w2c[:3, :4] = world_to_camera.matrix()
        pose = np.linalg.inv(w2c)
        pose[:3, 1:3] *= -1  # COLMAP's camera looks along +z with +y down; OpenGL's along -z with +y up
        c2w.append(pose)
        cameras[image.name] = camera_keys(reconstruction.cameras[image.camera_id])
    points = np.array([point.xyz for point in reconstruction.points3D.values()], dtype=np.float64).reshape(-1, 3)
    registered = [image.name for image in images]
    dropped = sorted(set(names) - set(registered)) if names is not None else []
    return Registration(
        registered, np.stack(c2w), cameras, points, float(reconstruction.compute_mean_reprojection_error()), dropped
    )


def camera_keys(camera: Any) -> dict[str, float]:
    """A pycolmap camera's intrinsics as transforms.json keys (fl_x fl_y cx cy w h k1 k2 p1 p2)."""
    model = camera.model_name if isinstance(getattr(camera, "model_name", None), str) else str(camera.model).split(".")[-1]
    if model not in CAMERA_MODELS:
        raise NfieldError(
            f"COLMAP camera model {model} cannot be written as a transforms.json (one of {', '.join(CAMERA_MODELS)}); "
            "undistort the images with COLMAP first"
        )
    values = dict(zip(CAMERA_MODELS[model], (float(v) for v in camera.params)))
    if "f" in values:
        values["fl_x"] = values["fl_y"] = values.pop("f")
    keys = {"fl_x": values["fl_x"], "fl_y": values["fl_y"], "cx": values["cx"], "cy": values["cy"]}
    keys.update(w=float(camera.width), h=float(camera.height))
    keys.update({k: values[k] for k in ("k1", "k2", "p1", "p2") if k in values})
    return keys
