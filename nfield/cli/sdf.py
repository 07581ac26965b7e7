"""SDF commands: ``fit-sdf``, ``mesh``, ``render`` and the SDF side of ``eval``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import torch
import tyro

import nfield
from nfield.checkpoint import load_model_weights
from nfield.cli.options import TrainOptions
from nfield.components import config_from_dict
from nfield.data.meshes import Normalisation, TriangleMesh, load_shape
from nfield.errors import NfieldError
from nfield.export import check_extraction_memory, extract_mesh
from nfield.fields.sdf import build_sdf_field, check_lod, distance_fn, sdf_field_config_from_dict, sdf_field_config_to_dict
from nfield.run import prepare_run_dir, read_config, require_checkpoint, write_config
from nfield.tasks.sdf import SDFTask, SDFTaskConfig, export_mesh, geometry_report
from nfield.tasks.sdf_models import SDFModelOptions, resolve_sdf_model
from nfield.tasks.sdf_views import render_turntable, render_view_to_files
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything


def fit_sdf(
    shape: tyro.conf.Positional[str],
    model: Optional[str] = None,
    out: Optional[Path] = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = SDFTaskConfig.batch_size,
    mesh_resolution: int = SDFTaskConfig.mesh_resolution,
    metric_points: int = SDFTaskConfig.metric_points,
    sdf_backend: Literal["auto", "triton", "torch", "libigl", "open3d"] = "auto",
    eikonal_weight: Optional[float] = None,
    progress: bool = True,
    train: Annotated[TrainOptions, tyro.conf.OmitArgPrefixes] = TrainOptions(),
    model_options: Annotated[SDFModelOptions, tyro.conf.OmitArgPrefixes] = SDFModelOptions(),
) -> None:
    """Fit a neural signed distance function to a mesh (OBJ/PLY/STL/OFF/GLB) or an oriented point
    cloud (PLY with normals, XYZ with six columns).

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, mesh.ply (in the input's
    coordinates), render.png and eval.json; prints the final metrics as JSON on the last line.

    Args:
        shape: mesh or oriented point cloud file.
        model: nglod, siren, hash, dense, relu-pe (default nglod).
        out: run directory (default runs/sdf/<shape>-<model>).
        seed: random seed for initialisation and sampling.
        device: auto (CUDA when available), cpu, cuda, cuda:N.
        resume: continue the run in --out from its last checkpoint up to --steps in total.
        overwrite: replace an existing run in --out.
        batch_size: training points per step.
        mesh_resolution: marching-cubes samples per axis for the exported mesh.
        metric_points: surface samples per side for the final Chamfer-L1 and normal consistency.
        sdf_backend: ground-truth distances: auto (triton on CUDA, libigl on CPU), triton, torch, libigl, open3d.
        eikonal_weight: weight of the eikonal term (default: the model's).
        progress: show the progress bar.
    """
    train.apply(TrainConfig())  # reject impossible step counts before any work
    if resume:
        out = out or Path("runs/sdf") / f"{Path(shape).stem}-{model or 'nglod'}"
        config = read_config(out)
        if config.get("task") != "sdf":
            raise NfieldError(f"{out}: is a '{config.get('task')}' run, not an SDF run")
        if model is not None and model != config["model"]:
            raise NfieldError(f"{out}: was trained with --model {config['model']}; resume it without changing the model")
        if model_options.given():
            raise NfieldError("model options cannot change when resuming; start a new run to change the model")
        model, seed = config["model"], config["seed"]
        source = config["shape"]["source"]
        normalisation = Normalisation.from_dict(config["shape"]["normalisation"])
        field_cfg = sdf_field_config_from_dict(config["field"])
        train_cfg = train.apply(config_from_dict(TrainConfig, config["train"]), progress)
        task_cfg = config_from_dict(SDFTaskConfig, config["task_config"])
    else:
        model = model or "nglod"
        preset = resolve_sdf_model(model, model_options)
        out = out or Path("runs/sdf") / f"{Path(shape).stem}-{model}"
        source, normalisation, field_cfg = shape, None, preset.field
        train_cfg = train.apply(TrainConfig(steps=2000, lr=preset.lr, mixed_precision=False, seed=seed), progress)
        task_cfg = SDFTaskConfig(
            batch_size=batch_size,
            mesh_resolution=mesh_resolution,
            metric_points=metric_points,
            sdf_backend=sdf_backend,
            eikonal_weight=preset.eikonal_weight if eikonal_weight is None else eikonal_weight,
        )
    train_cfg.validate()
    task_cfg.validate()
    check_extraction_memory(task_cfg.mesh_resolution)
    target = load_shape(source, normalisation)
    run_device = resolve_device(device)
    prepare_run_dir(out, resume, overwrite)
    write_config(
        out,
        {
            "task": "sdf",
            "nfield_version": nfield.__version__,
            "model": model,
            "seed": seed,
            "shape": {
                "source": str(Path(source).resolve()),
                "kind": "mesh" if isinstance(target, TriangleMesh) else "points",
                "normalisation": target.normalisation.to_dict(),
            },
            "field": sdf_field_config_to_dict(field_cfg),
            "train": dataclasses.asdict(train_cfg),
            "task_config": dataclasses.asdict(task_cfg),
        },
    )
    seed_everything(seed)
    task = SDFTask(target, field_cfg, task_cfg, device=run_device, seed=seed)
    trainer = Trainer(task, train_cfg, out, device=run_device)
    if resume:
        trainer.resume()
    sizes = task.model.lod_parameter_counts()
    kind = f"{len(target.faces):,} triangles" if isinstance(target, TriangleMesh) else f"{len(target.points):,} oriented points"
    print(
        f"fitting {target.source} ({kind}) with {model} [{sum(p.numel() for p in task.model.parameters()):,} parameters"
        + (f", {len(sizes)} LODs: " + ", ".join(f"{n * 4 / 1024:.0f} KB" for n in sizes) if len(sizes) > 1 else "")
        + f"] on {run_device}, {train_cfg.steps} steps -> {out}",
        file=sys.stderr,
    )
    metrics = trainer.fit()
    report = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else {}
    print(f"wrote {out / 'mesh.ply'} and {out / 'render.png'}", file=sys.stderr)
    print(
        json.dumps(
            {"step": trainer.step, **metrics, **report, "train_seconds": round(trainer.train_seconds, 3), "run_dir": str(out)}
        )
    )


def load_sdf_run(run_dir: Path, device: str) -> tuple[dict[str, Any], torch.nn.Module, int]:
    """(config, the field with its newest weights, checkpoint step) from a run directory alone."""
    config = read_config(run_dir)
    if config["task"] != "sdf":
        raise NfieldError(f"{run_dir}: is a '{config['task']}' run; this command needs an SDF run (fit-sdf)")
    try:
        field_cfg = sdf_field_config_from_dict(config["field"])
        Normalisation.from_dict(config["shape"]["normalisation"])
    except KeyError as err:
        raise NfieldError(f"{run_dir}/config.json: missing key {err}") from None
    model = build_sdf_field(field_cfg)
    checkpoint = require_checkpoint(run_dir)
    load_model_weights(model, checkpoint)
    return config, model.to(resolve_device(device)).eval(), checkpoint.step


def mesh(
    run_dir: tyro.conf.Positional[Path],
    resolution: int = 256,
    lod: Optional[int] = None,
    out: Optional[Path] = None,
    device: str = "auto",
    progress: bool = True,
) -> None:
    """Extract the fitted surface by marching cubes, in the input's coordinates.

    Args:
        run_dir: a run directory written by fit-sdf.
        resolution: samples per axis over the normalised box (memory grows with its square).
        lod: level of detail (default the finest).
        out: output mesh, .ply/.obj/.stl/.off/.glb (default RUN_DIR/mesh_r<resolution>[_lod<k>].ply).
        device: auto, cpu, cuda, cuda:N.
        progress: show the progress bar.
    """
    if resolution < 2:
        raise NfieldError(f"--resolution must be at least 2, got {resolution}")
    check_extraction_memory(resolution)
    config, model, _ = load_sdf_run(run_dir, device)
    check_lod(lod, model.n_lods)
    out = out or Path(run_dir) / (f"mesh_r{resolution}" + ("" if lod is None else f"_lod{lod}") + ".ply")
    normalisation = Normalisation.from_dict(config["shape"]["normalisation"])
    vertices, faces = export_mesh(model, out, normalisation, resolution, lod=lod, progress=progress)
    print(f"wrote {out} ({len(vertices):,} vertices, {len(faces):,} faces)", file=sys.stderr)


def render_sdf(
    run_dir: Path,
    orbit: bool,
    frames: int,
    fps: int,
    out: Optional[Path],
    lod: Optional[int],
    width: int,
    height: int,
    shading: str,
    elevation: float,
    azimuth: float,
    distance: float,
    fov: float,
    device: str,
    progress: bool,
) -> None:
    """The SDF side of ``nfield render``: one sphere-traced view (and its depth map), or a turntable."""
    if width < 1 or height < 1 or width * height > 2**26:
        raise NfieldError(f"--width/--height: {width}x{height} is not a renderable size (1 to 2^26 pixels)")
    if not 0 < fov < 180 or not distance > 0:
        raise NfieldError(f"--fov must be in (0, 180) degrees and --distance positive, got {fov} and {distance}")
    _, model, _ = load_sdf_run(run_dir, device)
    check_lod(lod, model.n_lods)
    view = dict(lod=lod, width=width, height=height, shading=shading, elevation=elevation, distance=distance, fov=fov)
    if orbit:
        out = out or Path(run_dir) / "turntable.mp4"
        if out.suffix.lower() not in (".mp4", ".gif"):
            raise NfieldError(f"--out {out}: a turntable is written as .mp4 (or .gif)")
        written, seconds = render_turntable(model, out, frames=frames, fps=fps, start_azimuth=azimuth, progress=progress, **view)
        print(f"wrote {written} ({frames} frames at {width}x{height}, {frames / seconds:.1f} frames/s rendered)", file=sys.stderr)
    else:
        out = out or Path(run_dir) / "render.png"
        depth_path = render_view_to_files(model, out, azimuth=azimuth, **view)
        print(f"wrote {out} and {depth_path}", file=sys.stderr)


def evaluate_sdf(run_dir: Path, shape: Optional[Path], lod: Optional[int], resolution: int, device: str) -> dict[str, Any]:
    """chamfer_l1, normal_consistency and iou of an SDF run at `lod` (see `geometry_report`)."""
    if resolution < 2:
        raise NfieldError(f"--resolution must be at least 2, got {resolution}")
    check_extraction_memory(resolution)
    config, model, step = load_sdf_run(run_dir, device)
    check_lod(lod, model.n_lods)
    normalisation = Normalisation.from_dict(config["shape"]["normalisation"])
    target = load_shape(shape or config["shape"]["source"], normalisation).to(next(model.parameters()).device)
    task_cfg = config_from_dict(SDFTaskConfig, config.get("task_config", {}))
    vertices, faces = extract_mesh(
        distance_fn(model, lod), resolution, chunk=task_cfg.chunk, device=next(model.parameters()).device
    )
    report = geometry_report(model, target, vertices, faces, task_cfg, lod=lod)
    return {"step": step, "lod": model.n_lods - 1 if lod is None else lod, "resolution": resolution, **report}
