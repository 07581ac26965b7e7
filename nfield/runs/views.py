"""What the commands that read a finished run make of it: renders, evaluations, meshes, summaries.

Every function takes a `LoadedRun` (`nfield.runs.single.load_run`) and works on each run kind it applies
to, so ``nfield render``, ``eval``, ``mesh`` and ``info`` have one path for image, SDF, NeRF,
KiloNeRF and distilled runs; an option or a command that does not apply to a kind is refused in
one line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import imageio.v3 as iio
import numpy as np
import torch

from nfield.colormap import inferno
from nfield.data.audio import save_audio
from nfield.data.images import save_image
from nfield.errors import NfieldError
from nfield.fields.kilonerf import load_kilonerf
from nfield.fields.sdf import check_lod
from nfield.flag_hints import STATED
from nfield.geometry.marching_cubes import MESH_SUFFIXES, available_memory_bytes, check_extraction_memory
from nfield.outputs import IMAGE_SUFFIXES, check_writable_directory, writable_file
from nfield.render.camera_path_files import load_camera_path
from nfield.render.camera_paths import interpolated_path, scene_orbit, spiral_path
from nfield.render.cameras import PinholeCamera
from nfield.render.radiance import half_precision, render_poses
from nfield.render.radiance import render_image as render_nerf_image
from nfield.run_directory import RunDirectory, read_records
from nfield.runs.single import LoadedRun, train_config
from nfield.tasks.image import render_field
from nfield.tasks.nerf import BACKGROUNDS, cameras_from_json
from nfield.tasks.nerf_geometry import (
    DEFAULT_DOWNSCALE,
    DEFAULT_MIN_OPACITY,
    DEFAULT_POINTS,
    check_geometry_suffix,
    default_level,
    extract_nerf_mesh,
    nerf_point_cloud,
    render_steps_per_ray,
    write_colored_mesh,
    write_point_cloud,
)
from nfield.tasks.sdf_views import render_turntable, render_view_to_files
from nfield.tasks.video import to_uint8_frames
from nfield.video import write_video

#: Largest picture `render_image` makes, in values (pixels x channels): 1 GiB of float32.
MAX_IMAGE_VALUES = 2**28
#: Bytes a rendered value costs until its file is written: float32, its 8-bit copy and the encoder's.
RENDER_BYTES_PER_VALUE = 12
#: Largest frame of a video or a view, in pixels.
MAX_FRAME_PIXELS = 2**26
NERF_PATHS = ("orbit", "spiral", "interp")


@dataclass(frozen=True)
class RenderOptions:
    """How `nfield render` draws a run: the camera or path, the frames, the size and the output file."""

    path: Annotated[Optional[str], STATED] = None
    """NeRF runs: camera path: orbit, spiral, interp (through the training views) or a nerfstudio
    camera-path JSON (default orbit). SDF runs: orbit is the same as --orbit."""
    orbit: bool = False  # render a 360-degree orbit video (the same as --path orbit)
    frames: Annotated[Optional[int], STATED] = None  # frames of the video (default 120; video runs: the video's own count)
    fps: Annotated[Optional[float], STATED] = None
    """frames per second of the video (default 30; video runs: the video's own rate)"""
    out: Annotated[Optional[Path], STATED] = None
    """output file (image: RUN_DIR/render.png; NeRF: RUN_DIR/<path>.mp4; SDF: RUN_DIR/render.png or
    RUN_DIR/turntable.mp4)"""
    width: Annotated[Optional[int], STATED] = None
    """width in pixels (default: image, video and NeRF runs the training images', SDF 1280). Image and video
    runs keep the fitted frames' aspect ratio: with only --width or --height the other follows it, with
    both the picture is the largest of that aspect inside them"""
    height: Annotated[Optional[int], STATED] = None
    """height in pixels (default: image, video and NeRF runs the training images', SDF 720); image and video
    runs: see --width"""
    depth: bool = False  # NeRF runs: also write the depth video, <out>_depth.mp4
    lod: Annotated[Optional[int], STATED] = None  # image and SDF runs: level of detail (default the finest)
    shading: Literal["matcap", "normal"] = "matcap"  # SDF runs: matcap (clay look) or normal (normals as colours)
    elevation: float = 20.0  # SDF runs: camera elevation in degrees above the horizontal plane
    azimuth: float = 30.0  # SDF runs: camera azimuth in degrees (the turntable's first frame)
    distance: float = 3.4  # SDF runs: camera distance from the centre, in normalised box units
    fov: float = 40.0  # SDF runs: vertical field of view in degrees
    half: bool = False  # NeRF runs: evaluate the field in half precision (float16 on CUDA, bfloat16 on CPU)
    sample_rate: Annotated[Optional[int], STATED] = None
    """audio runs: samples per second (default: the clip's; more = finer in time)"""
    progress: bool = True  # show the progress bar


def render(run: LoadedRun, options: RenderOptions) -> str:
    """Render `run` as `options` say; returns the line saying what was written."""
    if (options.frames is not None and options.frames < 1) or (options.fps is not None and not options.fps > 0):
        raise NfieldError(f"--frames and --fps must be positive, got {options.frames} and {options.fps}")
    if options.half and run.kind != "nerf":
        raise NfieldError("--half applies to NeRF runs only")
    if run.kind == "nerf":
        if options.lod is not None:
            raise NfieldError("--lod applies to image and SDF runs")
        return _render_nerf(run, options)
    if run.kind == "sdf":
        return _render_sdf(run, options)
    if run.kind == "audio":
        return _render_audio(run, options)
    if run.kind == "video":
        return _render_video(run, options)
    if options.orbit or options.path is not None or options.depth:
        raise NfieldError(
            f"{run.run_dir}: an image run renders one picture; --orbit, --path and --depth apply to NeRF and SDF runs"
        )
    fitted = run.config["image"]
    width, height = aspect_kept_size(fitted["width"], fitted["height"], options.width, options.height)
    written = render_image(run, width, height, options.out or run.run_dir / "render.png", options.lod, options.progress)
    asked = (options.width, options.height)
    if None not in asked and (width, height) != asked:
        written += f"; the fitted image is {fitted['width']}x{fitted['height']}: its aspect kept inside {asked[0]}x{asked[1]}"
    return written


def aspect_kept_size(fitted_width: int, fitted_height: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The size an image run renders at for ``--width`` and ``--height``, keeping the fitted
    image's aspect ratio: neither given, the fitted size; one given, the other follows the aspect;
    both given, the largest picture of the fitted aspect inside width x height (their own size when
    it has that aspect, to the rounding of a pixel)."""
    if (width is not None and width < 1) or (height is not None and height < 1):
        raise NfieldError(f"--width and --height must be positive numbers of pixels, got {width} and {height}")
    aspect = fitted_width / fitted_height
    if width is None and height is None:
        return fitted_width, fitted_height
    if height is None:
        return width, max(1, round(width / aspect))
    if width is None:
        return max(1, round(height * aspect)), height
    if round(width / aspect) == height or round(height * aspect) == width:
        return width, height
    if width / height > aspect:  # wider than the image: the height decides
        return max(1, round(height * aspect)), height
    return width, max(1, round(width / aspect))


def render_image(run: LoadedRun, width: int, height: int, out: Path, lod: int | None = None, progress: bool = True) -> str:
    """An image run's field at every pixel centre of a width x height picture, streamed chunk by
    chunk with a progress bar, written to `out`: PNG/JPEG in 8 bits, or .tif for the raw float32
    values (HDR runs keep their range). Sizes beyond `MAX_IMAGE_VALUES` are refused up front."""
    channels = run.config["image"]["channels"]
    if width < 1 or height < 1:
        raise NfieldError(f"a {width}x{height} picture is empty")
    available = available_memory_bytes()
    fits = min(MAX_IMAGE_VALUES, MAX_IMAGE_VALUES if available is None else available // RENDER_BYTES_PER_VALUE)
    if width * height * channels > fits:
        fitted = run.config["image"]
        scale = (fits / (fitted["width"] * fitted["height"] * channels)) ** 0.5
        why = (
            "one render holds" if fits == MAX_IMAGE_VALUES else f"this machine's {available / 2**30:.1f} GiB of free memory holds"
        )
        raise NfieldError(
            f"a {width}x{height} picture is {width * height * channels:,} values, over the {fits:,} that "
            f"{why}; the largest --scale for this run is {int(scale * 100) / 100:g}"
        )
    if lod is not None and not 0 <= lod < run.task.model.n_lods:
        raise NfieldError(f"--lod {lod}: this model has LODs 0..{run.task.model.n_lods - 1}")
    out = writable_file(out, IMAGE_SUFFIXES, "an image")  # before the render, not after it
    image = render_field(run.task.model, height, width, lod=lod, out_device="cpu", progress=progress)
    if out.suffix.lower() in (".tif", ".tiff"):
        out.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out, image.squeeze(-1).numpy() if image.shape[-1] == 1 else image.numpy())
    else:
        save_image(out, image / run.config["image"]["data_range"])
    return f"wrote {out} ({width}x{height})"


def _render_video(run: LoadedRun, options: RenderOptions) -> str:
    """The video's span at any frame count, rate and size, as an mp4 (default render.mp4)."""
    clip = run.config["video"]
    frames, fps = options.frames or clip["frames"], options.fps or clip["fps"]
    width, height = aspect_kept_size(clip["width"], clip["height"], options.width, options.height)
    _check_frame(width, height)
    out = Path(options.out or run.run_dir / "render.mp4")
    if out.suffix.lower() != ".mp4":
        raise NfieldError(f"--out {out}: a video is written as .mp4")
    rendered = run.task.render(frames, height, width, progress=options.progress)
    written = write_video(out, to_uint8_frames(rendered), fps)
    return f"wrote {written} ({frames} frames of {width}x{height} at {fps:g} fps)"


def _render_audio(run: LoadedRun, options: RenderOptions) -> str:
    """The clip re-sampled at `options.sample_rate` over its span, as a sound file (default render.wav)."""
    clip = run.config["audio"]
    rate = options.sample_rate or clip["sample_rate"]
    n_samples = round(clip["n_samples"] * rate / clip["sample_rate"])
    if not 1 <= rate <= 10**6 or n_samples < 2:
        raise NfieldError(f"--sample-rate {rate}: use 1 to 1,000,000 samples per second")
    out = save_audio(options.out or run.run_dir / "render.wav", run.task.render(n_samples, options.progress), rate)
    return f"wrote {out} ({n_samples:,} samples at {rate} Hz)"


def _render_sdf(run: LoadedRun, options: RenderOptions) -> str:
    """One sphere-traced view (and its depth map), or a turntable video with --orbit."""
    if options.path not in (None, "orbit"):
        raise NfieldError(f"--path {options.path}: SDF runs render one view, or an orbit with --orbit")
    width, height = options.width or 1280, options.height or 720
    _check_frame(width, height)
    if not 0 < options.fov < 180 or not options.distance > 0:
        raise NfieldError(f"--fov must be in (0, 180) degrees and --distance positive, got {options.fov} and {options.distance}")
    model = run.task.model
    check_lod(options.lod, model.n_lods)
    view = dict(lod=options.lod, width=width, height=height, shading=options.shading, elevation=options.elevation)
    view.update(distance=options.distance, fov=options.fov)
    if options.orbit or options.path == "orbit":
        out = Path(options.out or run.run_dir / "turntable.mp4")
        if out.suffix.lower() not in (".mp4", ".gif"):
            raise NfieldError(f"--out {out}: a turntable is written as .mp4 (or .gif)")
        frames = options.frames or 120
        written, seconds = render_turntable(
            model, out, frames=frames, fps=options.fps or 30, start_azimuth=options.azimuth, progress=options.progress, **view
        )
        return f"wrote {written} ({frames} frames at {width}x{height}, {frames / seconds:.1f} frames/s rendered)"
    out = Path(options.out or run.run_dir / "render.png")
    depth_path = render_view_to_files(model, out, azimuth=options.azimuth, progress=options.progress, **view)
    return f"wrote {out} and {depth_path}"


def _render_nerf(run: LoadedRun, options: RenderOptions) -> str:
    """A camera path through a radiance field to an mp4 (and its depth video)."""
    cameras = _training_cameras(run)
    path = "orbit" if options.orbit else options.path or "orbit"
    frames, fps, width, height, fov = options.frames or 120, options.fps or 30, options.width, options.height, None
    if path == "orbit":
        poses = scene_orbit(cameras, frames)
    elif path == "spiral":
        poses = spiral_path(cameras, frames)
    elif path == "interp":
        poses = interpolated_path(cameras, frames)
    else:
        poses, fov, size = load_camera_path(Path(path))
        if size is not None:
            width, height = width or size[0], height or size[1]
    train_height, train_width = run.config["scene"]["height"], run.config["scene"]["width"]
    width, height = width or train_width, height or train_height
    _check_frame(width, height)
    focal = float(cameras.fy[0]) * height / train_height  # keep the training cameras' field of view
    if fov is not None:
        focal = 0.5 * height / float(np.tan(np.radians(float(fov[0])) / 2))
    camera = PinholeCamera(width, height, focal, focal, width / 2, height / 2)
    task = run.task
    background = torch.tensor(BACKGROUNDS[task.cfg.eval_background], device=task.device)
    out = Path(options.out or run.run_dir / f"{Path(path).stem}.mp4")
    if out.suffix.lower() != ".mp4":
        raise NfieldError(f"--out {out}: a camera path is written as an .mp4 video")
    started = time.perf_counter()
    with half_precision(task.device, options.half):
        rendered = render_poses(task.model, task.cfg.render_settings(), task.near, poses, camera, background, options.progress)
    render_fps = len(rendered) / (time.perf_counter() - started)
    video = np.stack([(frame["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy() for frame in rendered])
    written = [write_video(out, video, fps)]
    if options.depth:
        depths = torch.stack([frame["depth"] for frame in rendered])
        scale = depths[torch.stack([frame["opacity"] for frame in rendered]) > 0.5]
        far = float(scale.max()) if scale.numel() else 1.0
        depth_video = (inferno(1 - (depths / far).clamp(0, 1)) * 255 + 0.5).to(torch.uint8).numpy()
        written.append(write_video(out.with_name(f"{out.stem}_depth.mp4"), depth_video, fps))
    return (
        f"wrote {' and '.join(map(str, written))} ({len(rendered)} frames at {width}x{height} and {fps:g} fps, "
        f"rendered at {render_fps:.2f} frames/s{' in half precision' if options.half else ''})"
    )


def _training_cameras(run: LoadedRun):
    """A NeRF run's training cameras, from its cameras.json (`CameraSet` on the CPU)."""
    cameras_file = RunDirectory(run.run_dir).cameras
    if not cameras_file.is_file():
        raise NfieldError(f"{run.run_dir}: no cameras.json (the training cameras); was it written by train-nerf?")
    return cameras_from_json(json.loads(cameras_file.read_text()))


def _check_frame(width: int, height: int) -> None:
    if width < 1 or height < 1 or width * height > MAX_FRAME_PIXELS:
        raise NfieldError(f"--width/--height: {width}x{height} is not a renderable size (1 to 2^26 pixels)")


def evaluate(
    run: LoadedRun, lod: int | None = None, resolution: int = 256, half: bool = False, progress: bool = False
) -> dict[str, Any]:
    """The run's metrics against its data (load the run with ``data=True``): image runs PSNR and
    SSIM (per LOD too); NeRF runs PSNR and SSIM over every held-out view; SDF runs chamfer_l1,
    normal_consistency and iou of a mesh extracted at `resolution` and `lod`. `progress` shows a
    bar over each phase (the NeRF views' rays, the SDF's mesh extraction and metrics, the pixels
    or samples of a signal)."""
    if half and run.kind != "nerf":
        raise NfieldError("--half applies to NeRF runs only")
    if lod is not None and run.kind != "sdf":
        raise NfieldError("--lod applies to SDF runs (image runs report every LOD's PSNR)")
    if run.kind == "sdf":
        _check_resolution(resolution)
        return {"step": run.step, **run.task.geometry(resolution, lod, progress=progress)}
    if run.kind == "nerf":
        with half_precision(run.task.device, half):
            metrics = run.task.evaluate(views=0, progress=progress)
        return {"step": run.step, **metrics, "views": len(run.task.scene.test.images), **({"half": True} if half else {})}
    if run.kind == "video":
        return {"step": run.step, **run.task.evaluate(frames=0, progress=progress)}
    return {"step": run.step, **run.task.evaluate(progress=progress)}


def extract_mesh(
    run: LoadedRun,
    resolution: int = 256,
    lod: int | None = None,
    out: Path | None = None,
    progress=True,
    level: float | None = None,
) -> str:
    """Marching cubes of an SDF run's surface at `resolution`, in the input's coordinates, written
    to `out` (default RUN_DIR/mesh_r<resolution>[_lod<k>].ply); returns what was written.

    NeRF runs (KiloNeRF and distilled ones too): the density's `level` set (None: the density at
    which one march step is half opaque) over the scene box with vertex colours, as .ply, .obj or
    .glb (`nfield.tasks.nerf_geometry.extract_nerf_mesh`)."""
    if run.kind == "nerf":
        return _mesh_nerf(run, resolution, lod, out, progress, level)
    if run.kind != "sdf":
        raise NfieldError(
            f"{run.run_dir}: is a '{run.kind}' run; mesh extracts the surface of SDF runs (fit-sdf) "
            "and the density's level set of NeRF runs (train-nerf, distill)"
        )
    if level is not None:
        raise NfieldError("--level applies to NeRF runs (an SDF run's surface is its zero level set)")
    _check_resolution(resolution)
    check_lod(lod, run.task.model.n_lods)
    default = run.run_dir / (f"mesh_r{resolution}" + ("" if lod is None else f"_lod{lod}") + ".ply")
    out = writable_file(out or default, MESH_SUFFIXES, "a mesh")  # before the marching cubes, not after
    vertices, faces = run.task.extract_mesh(out, resolution, lod=lod, progress=progress)
    return f"wrote {out} ({len(vertices):,} vertices, {len(faces):,} faces)"


def _mesh_nerf(run: LoadedRun, resolution: int, lod: int | None, out: Path | None, progress: bool, level: float | None) -> str:
    """A NeRF run's density level set with vertex colours (default RUN_DIR/mesh_r<resolution>.ply)."""
    if lod is not None:
        raise NfieldError("--lod applies to SDF runs")
    _check_resolution(resolution)
    out = check_geometry_suffix(out or run.run_dir / f"mesh_r{resolution}.ply")
    check_writable_directory(out.parent)
    task = run.task
    if level is None:
        level = default_level(task.model["field"].aabb.cpu(), render_steps_per_ray(task.cfg))
    vertices, faces, colors = extract_nerf_mesh(task.model, resolution, level, progress=progress)
    write_colored_mesh(out, vertices, faces, colors)
    return f"wrote {out} ({len(vertices):,} vertices, {len(faces):,} faces, vertex colours; density level {level:.4g})"


def export_point_cloud(
    run: LoadedRun,
    out: Path | None = None,
    points: int = DEFAULT_POINTS,
    downscale: int = DEFAULT_DOWNSCALE,
    min_opacity: float = DEFAULT_MIN_OPACITY,
    progress: bool = True,
) -> str:
    """A NeRF run's training views rendered at 1 / `downscale`, each pixel more than `min_opacity`
    opaque back-projected at its expected depth with its colour, at most `points` of them (a
    uniform random subset, fixed seed), written to `out` (.ply, .obj or .glb; default
    RUN_DIR/points.ply); returns what was written (`nfield.tasks.nerf_geometry.nerf_point_cloud`)."""
    if run.kind != "nerf":
        raise NfieldError(
            f"{run.run_dir}: is a '{run.kind}' run; export --point-cloud renders the training views of NeRF runs "
            "(train-nerf, distill)"
        )
    out = check_geometry_suffix(out or run.run_dir / "points.ply", "a point cloud")
    cameras, task = _training_cameras(run), run.task
    black = torch.zeros(3, device=task.device)

    def render_rays(origins: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
        return render_nerf_image(task.model, task.cfg.render_settings(), task.near, origins, directions, black)

    cloud, colors = nerf_point_cloud(
        render_rays,
        cameras.to(task.device),
        downscale=downscale,
        min_opacity=min_opacity,
        max_points=points,
        progress=progress,
    )
    write_point_cloud(out, cloud, colors)
    return (
        f"wrote {out} ({len(cloud):,} points from {len(cameras)} training views at 1/{downscale} size, "
        f"opacity above {min_opacity:g})"
    )


def _check_resolution(resolution: int) -> None:
    if resolution < 2:
        raise NfieldError(f"--resolution must be at least 2, got {resolution}")
    check_extraction_memory(resolution)


def describe(run: LoadedRun) -> list[str]:
    """The lines ``nfield info RUN`` prints: task, model, progress, weights, field, backends, and for
    distilled runs each phase and the teacher, for KiloNeRF exports their size."""
    config, run_dir = run.config, run.run_dir
    checkpoint = RunDirectory(run_dir).latest_checkpoint()
    model_file = checkpoint.model_file
    parameters = sum(p.numel() for p in run.task.model.parameters())
    buffers = sum(b.numel() for b in run.task.model.buffers())
    lines = [f"run {run_dir}: task {run.kind}, model {config.get('model')}"]
    if "distill" in config:
        settings = config["distill"]
        distilled = RunDirectory(run_dir).distill.latest_checkpoint()
        lines.append(f"distillation: step {distilled.step if distilled else 0} of {settings.get('steps')}")
        finetune = settings.get("finetune_steps", 0)
        lines.append(f"fine-tuning: step {run.step if finetune else 0} of {finetune}" + ("" if finetune else " (none asked for)"))
    else:
        lines.append(f"checkpoint: step {run.step} of {train_config(config, run_dir).steps}")
    stored = f" + {buffers:,} buffer values" if buffers else ""
    lines.append(f"weights: {parameters:,} parameters{stored}, {model_file.stat().st_size / 2**20:.2f} MiB ({model_file.name})")
    lines.append(f"field: {json.dumps(config.get('field'))}")
    ran = logged_backends(run_dir)
    if ran:
        lines.append("backends (first training step): " + ", ".join(f"{name} {backend}" for name, backend in sorted(ran.items())))
    if "teacher" in config:
        teacher = config["teacher"]
        lines.append(f"distilled from: {teacher.get('run_dir')} ({teacher.get('model')}, step {teacher.get('step')})")
    export = run_dir / "kilonerf.safetensors"
    if export.is_file():
        field, occupied = load_kilonerf(export)
        n_occupied = "unknown" if occupied is None else f"{int(occupied.sum()):,}"
        lines.append(
            f"kilonerf: {'x'.join(map(str, field.resolution))} = {field.n_cells:,} cells, {n_occupied} occupied, "
            f"{field.parameter_count():,} parameters, {export.stat().st_size / 2**20:.2f} MB ({export.name})"
        )
    return lines


def logged_backends(run_dir: Path) -> dict[str, str]:
    """The backends the run's last training session logged for its first step (metrics.jsonl)."""
    path = RunDirectory(run_dir).metrics
    found: dict[str, str] = {}
    for record in read_records(path) if path.is_file() else []:
        if record.get("kind") == "backends" and isinstance(record.get("backends"), dict):
            found = record["backends"]
    return found
