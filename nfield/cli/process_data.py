"""``nfield process-data``: a folder of photos or a video made into a NeRF scene (COLMAP's poses)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from nfield.data.capture import CaptureOptions, print_summary, process_capture
from nfield.data.colmap import CAMERA_MODELS
from nfield.flag_hints import STATED


@dataclass(frozen=True)
class ProcessData:
    """Make a NeRF scene from your own photos or video: COLMAP (through pycolmap,
    ``pip install 'nfield[capture]'``) finds the camera poses, and SCENE gets transforms.json (instant-ngp's
    format, which train-nerf reads), the images, downscaled copies and COLMAP's sparse model.

    A video is sampled to --frames frames, the sharpest of each stretch. The poses are turned so the
    cameras' mean up is +z, centred on the point they look at and scaled to a mean distance of 4;
    aabb_scale is chosen to hold every camera. Prints a summary as JSON on the last line.
    """

    input: tyro.conf.Positional[Path]  # a folder of photos, or a video file
    out: Path  # the scene folder to write (SCENE_DIR)
    frames: int = CaptureOptions.frames  # video: frames to keep, the sharpest of each of as many stretches
    matcher: Literal["auto", "exhaustive", "sequential", "vocab_tree"] = "auto"
    """auto: sequential for a video, exhaustive for photos (vocab_tree when --vocab-tree is given)"""
    vocab_tree: Annotated[Optional[Path], STATED] = None  # a COLMAP vocabulary tree file (for large photo sets)
    camera_model: Literal[tuple(CAMERA_MODELS)] = "OPENCV"  # type: ignore[valid-type]
    """COLMAP's camera model; its distortion is written as k1 k2 p1 p2, which train-nerf undistorts"""
    per_image_camera: bool = False  # a camera per image instead of one shared (photos from several cameras or zooms)
    colmap_model: Annotated[Optional[Path], STATED] = None
    """an existing COLMAP sparse model (cameras/images/points3D) of these images to convert instead of running COLMAP"""
    downscale: tuple[int, ...] = CaptureOptions.downscales  # factors of the downscaled copies (images_2/ ...)
    overwrite: bool = False  # replace an existing scene in --out
    progress: bool = True  # show a progress bar for each phase

    def __call__(self) -> None:
        options = CaptureOptions(
            frames=self.frames,
            matcher=self.matcher,
            vocab_tree=self.vocab_tree,
            camera_model=self.camera_model,
            single_camera=not self.per_image_camera,
            colmap_model=self.colmap_model,
            downscales=tuple(self.downscale),
            overwrite=self.overwrite,
            progress=self.progress,
        )
        summary = process_capture(self.input, self.out, options)
        print_summary(summary)
        print(json.dumps(summary))
