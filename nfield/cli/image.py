"""Image commands: ``fit-image``, ``render-image`` and the image side of ``eval``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import tyro

import nfield
from nfield.checkpoint import load_model_weights
from nfield.cli.options import TrainOptions
from nfield.components import config_from_dict
from nfield.data.images import load_image, save_image
from nfield.errors import NfieldError
from nfield.fields import Field, field_config_from_dict, field_config_to_dict
from nfield.run import prepare_run_dir, read_config, require_checkpoint, write_config
from nfield.tasks.image import ImageTask, ImageTaskConfig, render_field
from nfield.tasks.image_models import IMAGE_MODELS, ModelOptions, resolve_image_model
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything


def fit_image(
    image: tyro.conf.Positional[str],
    model: Optional[str] = None,
    out: Optional[Path] = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    downscale: int = 1,
    batch_size: int = ImageTaskConfig.batch_size,
    progress: bool = True,
    train: Annotated[TrainOptions, tyro.conf.OmitArgPrefixes] = TrainOptions(),
    model_options: Annotated[ModelOptions, tyro.conf.OmitArgPrefixes] = ModelOptions(),
) -> None:
    """Fit a neural field to an image (PNG/JPEG/TIFF/EXR/HDR, or a bundled name such as 'camera').

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, reconstruction.png and
    error.png; prints the final metrics as JSON on the last line.

    Args:
        image: image file, or a scikit-image sample name: camera, astronaut, coffee, chelsea, ...
        model: relu, relu-pe, fourier, learnable-fourier, siren, spder, progressive, pins, sape, hash, dense (default siren).
        out: run directory (default runs/image/<image>-<model>).
        seed: random seed for initialisation and sampling.
        device: auto (CUDA when available), cpu, cuda, cuda:N.
        resume: continue the run in --out from its last checkpoint up to --steps in total.
        overwrite: replace an existing run in --out.
        downscale: integer box-filter downscaling of the image before fitting.
        batch_size: pixels per step; smaller images train full-batch.
        progress: show the progress bar.
    """
    train.apply(TrainConfig())  # reject impossible step counts before any work
    if resume:
        if out is None:
            out = Path("runs/image") / f"{Path(image).stem}-{model or 'siren'}"
        config = read_config(out)
        if config.get("task") != "image":
            raise NfieldError(f"{out}: is a '{config.get('task')}' run, not an image run")
        if model is not None and model != config["model"]:
            raise NfieldError(f"{out}: was trained with --model {config['model']}; resume it without changing the model")
        if model_options.overrides():
            raise NfieldError("model options cannot change when resuming; start a new run to change the model")
        source, downscale, model = config["image"]["source"], config["image"]["downscale"], config["model"]
        field_cfg = field_config_from_dict(config["field"])
        train_cfg = train.apply(config_from_dict(TrainConfig, config["train"]), progress)
        task_cfg = config_from_dict(ImageTaskConfig, config["task_config"])
        seed = config["seed"]
    else:
        model = model or "siren"
        if model not in IMAGE_MODELS:
            raise NfieldError(f"unknown model '{model}'; choose one of: {', '.join(IMAGE_MODELS)}")
        if batch_size <= 0:
            raise NfieldError(f"--batch-size must be positive, got {batch_size}")
        out = out or Path("runs/image") / f"{Path(image).stem}-{model}"
        source = image
        task_cfg = ImageTaskConfig(batch_size=batch_size)
    target = load_image(source, downscale)
    if not resume:
        preset = resolve_image_model(model, model_options, target.height, target.width)
        field_cfg = preset.field
        train_cfg = train.apply(
            TrainConfig(steps=2000, lr=preset.lr, mixed_precision=preset.mixed_precision, seed=seed), progress
        )
    train_cfg.validate()
    run_device = resolve_device(device)
    prepare_run_dir(out, resume, overwrite)
    write_config(
        out,
        {
            "task": "image",
            "nfield_version": nfield.__version__,
            "model": model,
            "seed": seed,
            "image": {
                "source": str(Path(source).resolve()) if Path(source).exists() else source,
                "downscale": downscale,
                "height": target.height,
                "width": target.width,
                "channels": target.channels,
                "high_dynamic_range": target.high_dynamic_range,
                "data_range": target.data_range,
            },
            "field": field_config_to_dict(field_cfg),
            "train": dataclasses.asdict(train_cfg),
            "task_config": dataclasses.asdict(task_cfg),
        },
    )
    seed_everything(seed)
    task = ImageTask(target, field_cfg, task_cfg, device=run_device, seed=seed)
    trainer = Trainer(task, train_cfg, out, device=run_device)
    if resume:
        trainer.resume()
    n_params = sum(p.numel() for p in task.model.parameters())
    print(
        f"fitting {target.source} ({target.width}x{target.height}x{target.channels}) with {model} "
        f"[{type(task.model.encoding).__name__} -> {type(task.model.network).__name__}, {n_params:,} parameters] "
        f"on {run_device}, {train_cfg.steps} steps -> {out}",
        file=sys.stderr,
    )
    metrics = trainer.fit()
    print(f"wrote {out / 'reconstruction.png'} and {out / 'error.png'}", file=sys.stderr)
    print(json.dumps({"step": trainer.step, **metrics, "train_seconds": round(trainer.train_seconds, 3), "run_dir": str(out)}))


def _load_image_run(run_dir: Path, device: str) -> tuple[dict[str, Any], Field, int]:
    config = read_config(run_dir)
    if config["task"] != "image":
        raise NfieldError(f"{run_dir}: is a '{config['task']}' run; this command needs an image run")
    try:
        field_cfg = field_config_from_dict(config["field"])
        channels = int(config["image"]["channels"])
    except KeyError as err:
        raise NfieldError(f"{run_dir}/config.json: missing key {err}") from None
    model = Field(2, channels, field_cfg).to(resolve_device(device))
    checkpoint = require_checkpoint(run_dir)
    load_model_weights(model, checkpoint)
    return config, model, checkpoint.step


def render_image(
    run_dir: tyro.conf.Positional[Path],
    scale: float = 1.0,
    out: Optional[Path] = None,
    level: Optional[int] = None,
    device: str = "auto",
) -> None:
    """Re-render a fitted image at any resolution (super-resolution) from its run directory alone.

    Args:
        run_dir: a run directory written by fit-image.
        scale: output size relative to the fitted image (4 = four times wider and taller).
        out: output image (default RUN_DIR/render_x<scale>.png): PNG/JPEG in 8 bits, or .tif for
            the raw float32 values (HDR runs keep their range).
        level: level of detail for models that have levels (pins); default the finest.
        device: auto, cpu, cuda, cuda:N.
    """
    if not scale > 0:
        raise NfieldError(f"--scale must be positive, got {scale}")
    config, model, _ = _load_image_run(run_dir, device)
    if level is not None and not 0 <= level < model.n_levels:
        raise NfieldError(f"--level {level}: this model has levels 0..{model.n_levels - 1}")
    height, width = round(config["image"]["height"] * scale), round(config["image"]["width"] * scale)
    if height < 1 or width < 1:
        raise NfieldError(f"--scale {scale} gives an empty {width}x{height} image")
    if height * width * config["image"]["channels"] > 2**32:
        raise NfieldError(f"--scale {scale}: a {width}x{height} image is too large to render in memory (max 2^32 values)")
    out = out or Path(run_dir) / f"render_x{scale:g}.png"
    image = render_field(model, height, width, level=level, out_device="cpu")
    if out.suffix.lower() in (".tif", ".tiff"):
        import imageio.v3 as iio

        out.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out, image.squeeze(-1).numpy() if image.shape[-1] == 1 else image.numpy())
    else:
        save_image(out, image / config["image"]["data_range"])
    print(f"wrote {out} ({width}x{height})", file=sys.stderr)


def evaluate_image(run_dir: Path, image: Optional[str] = None, device: str = "auto") -> dict[str, Any]:
    """PSNR/SSIM of an image run against its target (default: the image it was fitted to)."""
    config, model, step = _load_image_run(run_dir, device)
    target = load_image(image or config["image"]["source"], config["image"]["downscale"])
    fitted = config["image"]
    if (target.height, target.width, target.channels) != (fitted["height"], fitted["width"], fitted["channels"]):
        raise NfieldError(
            f"{target.source}: is {target.width}x{target.height}x{target.channels}, "
            f"the run was fitted to {fitted['width']}x{fitted['height']}x{fitted['channels']}"
        )
    task_cfg = config_from_dict(ImageTaskConfig, config.get("task_config", {}))
    task = ImageTask(target, field_config_from_dict(config["field"]), task_cfg, device=next(model.parameters()).device)
    task.model.load_state_dict(model.state_dict())
    return {"step": step, **task.evaluate()}
