"""NeRF commands: ``train-nerf``, and the NeRF side of ``render`` and ``eval``."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
import tyro

import nfield
from nfield.checkpoint import load_model_weights
from nfield.cli.options import TrainOptions
from nfield.colormap import inferno
from nfield.components import config_from_dict
from nfield.data.scenes import load_scene
from nfield.errors import NfieldError
from nfield.fields.radiance import radiance_config_from_dict, radiance_config_to_dict
from nfield.render.cameras import PinholeCamera, interpolated_path, load_camera_path, scene_orbit, spiral_path
from nfield.run import prepare_run_dir, read_config, require_checkpoint, write_config
from nfield.tasks.nerf import (
    BACKGROUNDS,
    NeRFTask,
    NeRFTaskConfig,
    build_nerf_model,
    cameras_from_json,
    half_precision,
    render_poses,
    write_cameras,
)
from nfield.tasks.nerf_models import NeRFModelOptions, resolve_nerf_model
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything
from nfield.video import write_video

PATHS = ("orbit", "spiral", "interp")


def train_nerf(
    scene: tyro.conf.Positional[str],
    model: Optional[str] = None,
    out: Optional[Path] = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    downscale: int = 1,
    batch_rays: int = NeRFTaskConfig.batch_rays,
    loss: Literal["mse", "huber"] = "mse",
    background: Literal["random", "white", "black"] = "random",
    eval_views: int = NeRFTaskConfig.eval_views,
    skip_missing_images: bool = False,
    progress: bool = True,
    train: Annotated[TrainOptions, tyro.conf.OmitArgPrefixes] = TrainOptions(),
    model_options: Annotated[NeRFModelOptions, tyro.conf.OmitArgPrefixes] = NeRFModelOptions(),
) -> None:
    """Train a radiance field on a NeRF scene (a folder with transforms.json in the Blender,
    instant-ngp or nerfstudio format); reports PSNR/SSIM on held-out views.

    Writes a run directory with config.json, cameras.json, metrics.jsonl, checkpoints/ and
    renders/ (every held-out view next to its ground truth); prints the final metrics as JSON.

    Args:
        scene: scene folder (or its transforms.json).
        model: ngp, vanilla, kilonerf, siren, fourier (default ngp).
        out: run directory (default runs/nerf/<scene>-<model>).
        seed: random seed for initialisation and ray sampling.
        device: auto (CUDA when available), cpu, cuda, cuda:N.
        resume: continue the run in --out from its last checkpoint up to --steps in total.
        overwrite: replace an existing run in --out.
        downscale: integer downscaling of the images (and intrinsics).
        batch_rays: rays per step.
        loss: photometric loss, mse or huber.
        background: background of transparent training pixels: random per ray, white or black.
        eval_views: held-out views per periodic evaluation (0: all).
        skip_missing_images: drop frames whose image file is missing (with a warning) instead of failing.
        progress: show the progress bar.
    """
    train.apply(TrainConfig())
    if resume:
        out = out or Path("runs/nerf") / f"{Path(scene).name}-{model or 'ngp'}"
        config = read_config(out)
        if config.get("task") != "nerf":
            raise NfieldError(f"{out}: is a '{config.get('task')}' run, not a NeRF run")
        if model is not None and model != config["model"]:
            raise NfieldError(f"{out}: was trained with --model {config['model']}; resume it without changing the model")
        if model_options.given():
            raise NfieldError("model options cannot change when resuming; start a new run to change the model")
        skip_missing_images = config["scene"].get("skip_missing_images", False)
        model, seed, source, downscale = config["model"], config["seed"], config["scene"]["source"], config["scene"]["downscale"]
        field_cfg = radiance_config_from_dict(config["field"])
        task_cfg = config_from_dict(NeRFTaskConfig, config["task_config"])
        train_cfg = train.apply(config_from_dict(TrainConfig, config["train"]), progress)
    else:
        model = model or "ngp"
        preset = resolve_nerf_model(model, model_options)
        out = out or Path("runs/nerf") / f"{Path(scene).name}-{model}"
        source, field_cfg = scene, preset.field
        task_cfg = model_options.apply(
            NeRFTaskConfig(
                batch_rays=batch_rays, sampler=preset.sampler, loss=loss, train_background=background, eval_views=eval_views
            )
        )
        train_cfg = train.apply(
            TrainConfig(steps=5000, lr=preset.lr, mixed_precision=preset.mixed_precision, eval_every=1000, seed=seed), progress
        )
    train_cfg.validate()
    task_cfg.validate()
    if downscale < 1:
        raise NfieldError(f"--downscale must be a positive integer, got {downscale}")
    loaded = load_scene(source, downscale, skip_missing_images=skip_missing_images)
    run_device = resolve_device(device)
    prepare_run_dir(out, resume, overwrite)
    write_config(
        out,
        {
            "task": "nerf",
            "nfield_version": nfield.__version__,
            "model": model,
            "seed": seed,
            "scene": {
                "source": str(Path(source).resolve()),
                "dialect": loaded.dialect,
                "downscale": downscale,
                "skip_missing_images": skip_missing_images,
                "aabb": loaded.aabb.tolist(),
                "near": loaded.near,
                "train_views": len(loaded.train.images),
                "test_views": len(loaded.test.images),
                "height": int(loaded.train.images.shape[1]),
                "width": int(loaded.train.images.shape[2]),
            },
            "field": radiance_config_to_dict(field_cfg),
            "train": dataclasses.asdict(train_cfg),
            "task_config": dataclasses.asdict(task_cfg),
        },
    )
    write_cameras(out, loaded.train.cameras)
    seed_everything(seed)
    task = NeRFTask(loaded, field_cfg, task_cfg, device=run_device, seed=seed)
    trainer = Trainer(task, train_cfg, out, device=run_device)
    if resume:
        trainer.resume()
    n_params = sum(p.numel() for p in task.model.parameters())
    print(
        f"training {model} on {loaded.source} ({loaded.dialect}, {len(loaded.train.images)} train / "
        f"{len(loaded.test.images)} test views of {loaded.train.images.shape[2]}x{loaded.train.images.shape[1]}, "
        f"{n_params:,} parameters) on {run_device}, {train_cfg.steps} steps -> {out}",
        file=sys.stderr,
    )
    metrics = trainer.fit()
    print(f"wrote {out / 'renders'}", file=sys.stderr)
    print(json.dumps({"step": trainer.step, **metrics, "train_seconds": round(trainer.train_seconds, 3), "run_dir": str(out)}))


def load_nerf_run(run_dir: Path, device: str) -> tuple[dict[str, Any], torch.nn.ModuleDict, NeRFTaskConfig, int]:
    """(config, the trained modules, the task config, checkpoint step) from a run directory alone."""
    config = read_config(run_dir)
    try:
        field_cfg = radiance_config_from_dict(config["field"])
        task_cfg = config_from_dict(NeRFTaskConfig, config["task_config"])
        aabb = torch.tensor(config["scene"]["aabb"], dtype=torch.float32)
    except KeyError as err:
        raise NfieldError(f"{run_dir}/config.json: missing key {err}") from None
    run_device = resolve_device(device)
    model = build_nerf_model(field_cfg, task_cfg, aabb, torch.device("cpu"))
    checkpoint = require_checkpoint(run_dir)
    load_model_weights(model, checkpoint)
    model = model.to(run_device).eval()
    if "grid" in model:
        model["grid"].density_fn = model["field"].density
    return config, model, task_cfg, checkpoint.step


def render_nerf(
    run_dir: Path,
    path: str,
    frames: int,
    fps: int,
    out: Optional[Path],
    width: Optional[int],
    height: Optional[int],
    depth: bool,
    device: str,
    progress: bool,
    half: bool = False,
) -> None:
    """The NeRF side of ``nfield render``: a camera path to an mp4 (and its depth video)."""
    config, model, task_cfg, _ = load_nerf_run(run_dir, device)
    cameras_file = Path(run_dir) / "cameras.json"
    if not cameras_file.is_file():
        raise NfieldError(f"{run_dir}: no cameras.json (the training cameras); was it written by train-nerf?")
    cameras = cameras_from_json(json.loads(cameras_file.read_text()))
    fov = None
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
    train_height, train_width = config["scene"]["height"], config["scene"]["width"]
    width, height = width or train_width, height or train_height
    if width < 1 or height < 1 or width * height > 2**26:
        raise NfieldError(f"--width/--height: {width}x{height} is not a renderable size (1 to 2^26 pixels)")
    focal = float(cameras.fy[0]) * height / train_height  # keep the training cameras' field of view
    if fov is not None:
        focal = 0.5 * height / float(np.tan(np.radians(float(fov[0])) / 2))
    camera = PinholeCamera(width, height, focal, focal, width / 2, height / 2)
    background = torch.tensor(BACKGROUNDS[task_cfg.eval_background], device=next(model.parameters()).device)
    out = Path(out or Path(run_dir) / f"{Path(path).stem}.mp4")
    if out.suffix.lower() != ".mp4":
        raise NfieldError(f"--out {out}: a camera path is written as an .mp4 video")
    started = time.perf_counter()
    with half_precision(background.device, half):
        rendered = render_poses(model, task_cfg, config["scene"]["near"], poses, camera, background, progress)
    render_fps = len(rendered) / (time.perf_counter() - started)
    video = np.stack([(frame["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy() for frame in rendered])
    written = [write_video(out, video, fps)]
    if depth:
        depths = torch.stack([frame["depth"] for frame in rendered])
        scale = depths[torch.stack([frame["opacity"] for frame in rendered]) > 0.5]
        far = float(scale.max()) if scale.numel() else 1.0
        colours = inferno(1 - (depths / far).clamp(0, 1))
        depth_video = (colours * 255 + 0.5).to(torch.uint8).numpy()
        written.append(write_video(out.with_name(f"{out.stem}_depth.mp4"), depth_video, fps))
    print(
        f"wrote {' and '.join(map(str, written))} ({len(rendered)} frames at {width}x{height}, "
        f"rendered at {render_fps:.2f} frames/s{' in half precision' if half else ''})",
        file=sys.stderr,
    )


def evaluate_nerf(run_dir: Path, scene: Optional[str], device: str, half: bool = False) -> dict[str, Any]:
    """PSNR/SSIM of a NeRF run on every held-out view of its scene (default: the one it trained on)."""
    config, model, task_cfg, step = load_nerf_run(run_dir, device)
    loaded = load_scene(
        scene or config["scene"]["source"],
        config["scene"]["downscale"],
        skip_missing_images=config["scene"].get("skip_missing_images", False),
    )
    task = NeRFTask(
        loaded,
        radiance_config_from_dict(config["field"]),
        dataclasses.replace(task_cfg, eval_views=0),
        device=next(model.parameters()).device,
    )
    task.model = model
    with half_precision(task.device, half):
        metrics = task.evaluate()
    return {"step": step, **metrics, "views": len(loaded.test.images), **({"half": True} if half else {})}
