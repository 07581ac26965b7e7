"""Pictures of a fitted SDF: a sphere-traced view with its depth map, and turntable videos.

Cameras orbit the normalised box's centre with +y up (the usual up axis of mesh files). NGLOD
fields are traced by `nfield.fields.nglod_tracing` (one fused launch per frame on CUDA; on the CPU
the PyTorch path), jumping over the empty cells of the queried LOD's octree; other fields by
`nfield.render.sphere_tracing.sdf_tracer`.
"""

from __future__ import annotations

import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from nfield.colormap import inferno
from nfield.data.images import save_image
from nfield.errors import NfieldError
from nfield.fields.nglod_tracing import DEFAULTS, nglod_tracer
from nfield.fields.sdf import NGLODField, SDFField, distance_fn
from nfield.progress import progress_bar
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import PinholeCamera
from nfield.render.sphere_tracing import SurfaceTracer, render_surface, sdf_tracer
from nfield.video import write_video

#: Sphere tracing settings for fitted fields (normalised units): learned distances are only
#: approximately 1-Lipschitz, so steps are shortened a little.
TRACE = dict(max_steps=DEFAULTS["max_steps"], hit_eps=DEFAULTS["hit_eps"], step_scale=DEFAULTS["step_scale"])


def surface_tracer(model: SDFField | NGLODField, lod: int | None = None, skip_empty: bool = True) -> SurfaceTracer:
    """How `model` is traced at `lod`: NGLOD's own tracer (skipping empty octree cells) unless
    `skip_empty` is False, else sphere tracing the field with normals by autograd."""
    if skip_empty and isinstance(model, NGLODField):
        return nglod_tracer(model, lod)
    return sdf_tracer(distance_fn(model, lod), **TRACE)


def render_view(
    model: SDFField | NGLODField,
    c2w: torch.Tensor,
    width: int,
    height: int,
    lod: int | None = None,
    shading: str = "matcap",
    fov: float = 40.0,
    skip_empty: bool = True,
) -> dict:
    """Render `model` from the camera-to-world pose `c2w` (4, 4); see `render_surface` for the result.
    NGLOD fields skip empty octree cells unless `skip_empty` is False."""
    device = next(model.parameters()).device
    return render_surface(
        surface_tracer(model, lod, skip_empty), PinholeCamera.from_fov(width, height, fov), c2w.to(device), shading=shading
    )


def render_view_to_files(
    model: SDFField | NGLODField,
    out: Path,
    width: int = 1280,
    height: int = 720,
    lod: int | None = None,
    shading: str = "matcap",
    elevation: float = 20.0,
    azimuth: float = 30.0,
    distance: float = 3.4,
    fov: float = 40.0,
    progress: bool = False,
    label: str = "render",
) -> Path:
    """Write the shaded image to `out` and its depth map (inferno, near = bright) next to it as
    ``<stem>_depth.png``; returns the depth map's path. `progress` shows a one-view bar labelled
    `label` (seconds on a CPU at 1280x720)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise NfieldError(f"--out {out}: a single view is written as .png or .jpg (use --orbit for a video)")
    c2w = orbit_poses(1, distance, elevation, start_azimuth_deg=azimuth)[0]
    with progress_bar(total=1, desc=label, unit="view", enabled=progress) as bar:
        result = render_view(model, c2w, width, height, lod, shading, fov)
        bar.update(1)
    save_image(out, result["rgb"].cpu())
    depth_path = out.with_name(f"{out.stem}_depth.png")
    save_image(depth_path, depth_image(result["depth"], result["hit"]).cpu())
    return depth_path


def depth_image(depth: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) colour map of hit depths (near = bright), black where rays miss."""
    if not bool(hit.any()):
        return torch.zeros(*depth.shape, 3)
    near, far = depth[hit].min(), depth[hit].max()
    scaled = 1 - (depth - near) / (far - near).clamp_min(1e-6)
    return torch.where(hit[..., None], inferno(scaled.clamp(0, 1)), torch.zeros(()))


def render_turntable(
    model: SDFField | NGLODField,
    out: Path,
    frames: int = 120,
    fps: int = 30,
    width: int = 1280,
    height: int = 720,
    lod: int | None = None,
    shading: str = "matcap",
    elevation: float = 20.0,
    start_azimuth: float = 30.0,
    distance: float = 3.4,
    fov: float = 40.0,
    progress: bool = True,
) -> tuple[Path, float]:
    """Render a 360-degree turntable to `out` (.mp4 via imageio-ffmpeg, or .gif); returns the path
    written (`out`, or a folder of PNG frames where no ffmpeg binary is found, see `write_video`)
    and the seconds spent rendering (excluding encoding)."""
    poses = orbit_poses(frames, distance, elevation, start_azimuth_deg=start_azimuth)
    images, seconds = [], 0.0
    for c2w in progress_bar(poses, desc="render", unit="frame", enabled=progress):
        started = time.perf_counter()
        rgb = render_view(model, c2w, width, height, lod, shading, fov)["rgb"]
        images.append((rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
        seconds += time.perf_counter() - started
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    video = np.stack(images)
    if out.suffix.lower() == ".gif":
        iio.imwrite(out, video, duration=1000 / fps, loop=0)
        return out, seconds
    return write_video(out, video, fps), seconds
