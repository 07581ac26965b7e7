"""The ``nfield`` command line: tyro over the task configs.

Every training command takes ``--steps``, ``--out``, ``--seed``, ``--device`` and ``--resume``;
``nfield eval RUN_DIR`` prints its metrics as one JSON object on the last stdout line. A user
error prints one line on stderr and exits with status 1 (2 for malformed command lines).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Literal, Optional

import torch
import tyro

import nfield
from nfield.backends import choose_backend
from nfield.cli.distill import distill
from nfield.cli.image import evaluate_image, fit_image, render_image
from nfield.cli.nerf import evaluate_nerf, render_nerf, train_nerf
from nfield.cli.sdf import evaluate_sdf, fit_sdf, mesh, render_sdf
from nfield.encodings.grid import GRID_BACKENDS
from nfield.errors import NfieldError
from nfield.fields.kilonerf import load_kilonerf
from nfield.networks.mlp import MLP_BACKENDS
from nfield.render.volume import RENDER_BACKENDS
from nfield.run import read_config, require_checkpoint
from nfield.train import resolve_device


def render(
    run_dir: tyro.conf.Positional[Path],
    path: Optional[str] = None,
    orbit: bool = False,
    frames: int = 120,
    fps: int = 30,
    out: Optional[Path] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    depth: bool = False,
    lod: Optional[int] = None,
    shading: Literal["matcap", "normal"] = "matcap",
    elevation: float = 20.0,
    azimuth: float = 30.0,
    distance: float = 3.4,
    fov: float = 40.0,
    half: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> None:
    """Render a trained run: a NeRF along a camera path to an mp4, or a fitted SDF by sphere tracing
    (one view and its depth map, or a turntable with --orbit).

    Args:
        run_dir: a run directory written by train-nerf or fit-sdf.
        path: camera path: orbit, spiral, interp (through the training views) or a nerfstudio
            camera-path JSON (NeRF runs; default orbit). For SDF runs, orbit is the same as --orbit.
        orbit: render a 360-degree orbit video (the same as --path orbit).
        frames: frames of the video.
        fps: frames per second of the video.
        out: output file (NeRF: RUN_DIR/<path>.mp4; SDF: RUN_DIR/render.png or RUN_DIR/turntable.mp4).
        width: frame width in pixels (NeRF default: the training images'; SDF: 1280).
        height: frame height in pixels (NeRF default: the training images'; SDF: 720).
        depth: NeRF runs: also write the depth video, <out>_depth.mp4.
        lod: SDF runs: level of detail (default the finest).
        shading: SDF runs: matcap (clay look) or normal (normals as colours).
        elevation: SDF runs: camera elevation in degrees above the horizontal plane.
        azimuth: SDF runs: camera azimuth in degrees (the turntable's first frame).
        distance: SDF runs: camera distance from the centre, in normalised box units.
        fov: SDF runs: vertical field of view in degrees.
        half: NeRF runs: evaluate the field in half precision (float16 on CUDA, bfloat16 on CPU).
        device: auto, cpu, cuda, cuda:N.
        progress: show the progress bar.
    """
    if frames < 1 or fps < 1:
        raise NfieldError(f"--frames and --fps must be positive, got {frames} and {fps}")
    task = read_config(run_dir).get("task")
    if task == "nerf":
        if lod is not None:
            raise NfieldError("--lod applies to SDF runs only")
        nerf_path = "orbit" if orbit else path or "orbit"
        render_nerf(run_dir, nerf_path, frames, fps, out, width, height, depth, device, progress, half)
    elif task == "sdf":
        if half:
            raise NfieldError("--half applies to NeRF runs only")
        if path not in (None, "orbit"):
            raise NfieldError(f"--path {path}: SDF runs render one view, or an orbit with --orbit")
        orbit = orbit or path == "orbit"
        view = (lod, width or 1280, height or 720, shading, elevation, azimuth, distance, fov)
        render_sdf(run_dir, orbit, frames, fps, out, *view, device, progress)
    else:
        raise NfieldError(f"{run_dir}: is an '{task}' run; render works on NeRF and SDF runs (use render-image for images)")


def evaluate(
    run_dir: tyro.conf.Positional[Path],
    image: Optional[str] = None,
    scene: Optional[str] = None,
    shape: Optional[Path] = None,
    lod: Optional[int] = None,
    resolution: int = 256,
    half: bool = False,
    device: str = "auto",
) -> None:
    """Evaluate a run against its target; prints one JSON object on the last line.

    Image runs: PSNR and SSIM. NeRF runs: PSNR and SSIM over every held-out view. SDF runs:
    chamfer_l1 and normal_consistency between a mesh extracted
    at --resolution and the input surface (normalised [-1, 1] box units), and the volumetric iou.

    Args:
        run_dir: a run directory.
        image: image runs: target image (default: the one the run was fitted to).
        scene: NeRF runs: scene folder (default: the one the run was trained on).
        shape: SDF runs: reference mesh or point cloud (default: the one the run was fitted to).
        lod: SDF runs: level of detail (default the finest).
        resolution: SDF runs: marching-cubes samples per axis.
        half: NeRF runs: evaluate the field in half precision (float16 on CUDA, bfloat16 on CPU).
        device: auto, cpu, cuda, cuda:N.
    """
    task = read_config(run_dir).get("task")
    if half and task != "nerf":
        raise NfieldError("--half applies to NeRF runs only")
    if task == "image":
        metrics = evaluate_image(run_dir, image, device)
    elif task == "sdf":
        metrics = evaluate_sdf(run_dir, shape, lod, resolution, device)
    elif task == "nerf":
        metrics = evaluate_nerf(run_dir, scene, device, half)
    else:
        raise NfieldError(f"{run_dir}: unknown task '{task}' in config.json")
    print(json.dumps(metrics))


def info(run_dir: tyro.conf.Positional[Optional[Path]] = None) -> None:
    """Print versions, the compute device and available backends, or a run's summary.

    Args:
        run_dir: a run directory to describe (optional).
    """
    if run_dir is not None:
        _describe_run(run_dir)
        return
    print(f"nfield {nfield.__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    print(f"torch {torch.__version__}")
    import numpy

    print(f"numpy {numpy.__version__}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(
                f"device cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                f"compute capability {props.major}.{props.minor}"
            )
    else:
        print(f"device cpu ({torch.get_num_threads()} threads); CUDA not available")
    print("backends:")
    print("  torch (reference): available")
    for module, label in (("triton", "triton kernels"), ("tinycudann", "tiny-cuda-nn")):
        try:
            imported = __import__(module)
            version = getattr(imported, "__version__", "installed")
            usable = "usable" if torch.cuda.is_available() else "installed, needs CUDA"
            print(f"  {label}: {version} ({usable})")
        except Exception:
            print(f"  {label}: not installed")
    device = resolve_device("auto")
    chosen = {
        "HashGrid, DenseGrid": choose_backend("HashGrid", "auto", device, GRID_BACKENDS),
        "MLP": choose_backend("MLP", "auto", device, MLP_BACKENDS, auto_triton=False),
        "composite, render_weights": choose_backend("composite", "auto", device, RENDER_BACKENDS),
        "OccupancyGrid.march": choose_backend("OccupancyGrid.march", "auto", device, RENDER_BACKENDS),
    }
    print(f"backend 'auto' on {device}: " + "; ".join(f"{name} -> {backend}" for name, backend in chosen.items()))


def _describe_run(run_dir: Path) -> None:
    from safetensors.torch import load_file

    config = read_config(run_dir)
    checkpoint = require_checkpoint(run_dir)
    n_values = sum(t.numel() for t in load_file(str(checkpoint.model_file)).values())
    print(f"run {run_dir}: task {config['task']}, model {config.get('model')}")
    print(f"checkpoint: step {checkpoint.step} of {config.get('train', {}).get('steps')}")
    print(f"weights: {n_values:,} values, {checkpoint.model_file.stat().st_size / 2**20:.2f} MiB")
    print(f"field: {json.dumps(config.get('field'))}")
    ran = _logged_backends(Path(run_dir))
    if ran:
        print("backends (first training step): " + ", ".join(f"{name} {backend}" for name, backend in sorted(ran.items())))
    if "teacher" in config:
        teacher = config["teacher"]
        print(f"distilled from: {teacher.get('run_dir')} ({teacher.get('model')}, step {teacher.get('step')})")
    export = Path(run_dir) / "kilonerf.safetensors"
    if export.is_file():
        field, occupied = load_kilonerf(export)
        n_occupied = "unknown" if occupied is None else f"{int(occupied.sum()):,}"
        print(
            f"kilonerf: {'x'.join(map(str, field.resolution))} = {field.n_cells:,} cells, {n_occupied} occupied, "
            f"{field.parameter_count():,} parameters, {export.stat().st_size / 2**20:.2f} MB ({export.name})"
        )


def _logged_backends(run_dir: Path) -> dict[str, str]:
    """The backends the run's last training session logged for its first step (metrics.jsonl)."""
    path = run_dir / "metrics.jsonl"
    found: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("kind") == "backends" and isinstance(record.get("backends"), dict):
                found = record["backends"]
    return found


COMMANDS = {
    "fit-image": fit_image,
    "render-image": render_image,
    "fit-sdf": fit_sdf,
    "train-nerf": train_nerf,
    "distill": distill,
    "mesh": mesh,
    "render": render,
    "eval": evaluate,
    "info": info,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nfield`` console script; returns the exit status."""
    try:
        tyro.extras.subcommand_cli_from_dict(
            COMMANDS,
            prog="nfield",
            args=argv,
            description="nfield: neural fields from the command line",
            config=(tyro.conf.DisallowNone, tyro.conf.PositionalMetavarFromFieldName),
        )
    except NfieldError as err:
        print(f"nfield: error: {err}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("nfield: error: out of GPU memory; lower --batch-size (or render at a smaller --scale)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nfield: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`nfield info | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
