"""The ``nfield`` command line: tyro over the task configs.

Every training command takes ``--steps``, ``--out``, ``--seed``, ``--device`` and ``--resume``;
``nfield eval RUN_DIR`` prints its metrics as one JSON object on the last stdout line. A user
error prints one line on stderr and exits with status 1 (2 for malformed command lines).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import torch
import tyro

import nfield
from nfield.checkpoint import load_model_weights
from nfield.components import config_from_dict
from nfield.data.images import load_image, save_image
from nfield.errors import NfieldError
from nfield.fields import Field, field_config_from_dict, field_config_to_dict
from nfield.run import prepare_run_dir, read_config, require_checkpoint, write_config
from nfield.tasks.image import ImageTask, ImageTaskConfig, render_field
from nfield.tasks.image_models import IMAGE_MODELS, ModelOptions, resolve_image_model
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything


@dataclass(frozen=True)
class TrainOptions:
    """Training overrides; unset keys keep the model's default (or, with --resume, the run's)."""

    steps: Optional[int] = None  # total steps of the run (default 2000)
    lr: Optional[float] = None  # peak learning rate (default: the model's)
    lr_schedule: Optional[Literal["constant", "cosine", "exponential"]] = None  # learning-rate schedule (default cosine)
    lr_warmup_steps: Optional[int] = None  # steps of linear warm-up (default 0)
    lr_final_factor: Optional[float] = None  # final lr relative to the peak (default 0.1)
    grad_clip: Optional[float] = None  # max gradient norm, 0 = off
    mixed_precision: Optional[Literal["on", "off"]] = None  # float16 autocast on CUDA (default: on where the model tolerates it)
    eval_every: Optional[int] = None  # steps between evaluations (default 500)
    checkpoint_every: Optional[int] = None  # steps between checkpoints (default 500)
    keep_checkpoints: Optional[int] = None  # checkpoints kept on disk (default 2)
    log_every: Optional[int] = None  # steps between metrics.jsonl lines (default 25)

    def apply(self, base: TrainConfig, progress: bool = True) -> TrainConfig:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "mixed_precision" in given:
            given["mixed_precision"] = given["mixed_precision"] == "on"
        given["progress"] = progress
        if "steps" in given and given["steps"] <= 0:
            raise NfieldError(f"--steps must be a positive number of steps, got {given['steps']}")
        return dataclasses.replace(base, **given)


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


def evaluate(run_dir: tyro.conf.Positional[Path], image: Optional[str] = None, device: str = "auto") -> None:
    """Evaluate a run against its target; prints one JSON object on the last line.

    Args:
        run_dir: a run directory.
        image: target image (default: the one the run was fitted to).
        device: auto, cpu, cuda, cuda:N.
    """
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
    print(json.dumps({"step": step, **task.evaluate()}))


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


def _describe_run(run_dir: Path) -> None:
    from safetensors.torch import load_file

    config = read_config(run_dir)
    checkpoint = require_checkpoint(run_dir)
    n_values = sum(t.numel() for t in load_file(str(checkpoint.model_file)).values())
    print(f"run {run_dir}: task {config['task']}, model {config.get('model')}")
    print(f"checkpoint: step {checkpoint.step} of {config.get('train', {}).get('steps')}")
    print(f"weights: {n_values:,} values, {checkpoint.model_file.stat().st_size / 2**20:.2f} MiB")
    print(f"field: {json.dumps(config.get('field'))}")


COMMANDS = {"fit-image": fit_image, "render-image": render_image, "eval": evaluate, "info": info}


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
