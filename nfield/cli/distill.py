"""``nfield distill``: turn a trained radiance field into a KiloNeRF (distillation, then fine-tuning)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import torch
import tyro

import nfield
from nfield.checkpoint import latest_checkpoint
from nfield.cli.nerf import load_nerf_run
from nfield.components import config_from_dict
from nfield.data.scenes import load_scene
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig, grid_resolution
from nfield.fields.radiance import radiance_config_from_dict, radiance_config_to_dict
from nfield.run import prepare_run_dir, read_config, write_config
from nfield.tasks.distill import DistillConfig, DistillTask, check_box_contains, student_task_config, teacher_occupancy
from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig, cameras_from_json, march_step, write_cameras
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything

DISTILL_DIR = "distill"  # the distillation phase's checkpoints and metrics, inside the run directory


def distill(
    teacher: tyro.conf.Positional[Path],
    out: Optional[Path] = None,
    scene: Optional[str] = None,
    aabb: Optional[tuple[float, float, float, float, float, float]] = None,
    longest_axis_cells: int = KiloNeRFConfig.longest_axis_cells,
    hidden: int = KiloNeRFConfig.hidden,
    position_frequencies: int = KiloNeRFConfig.position_frequencies,
    distill_steps: int = 3000,
    distill_lr: float = 5e-3,
    batch_points: int = DistillConfig.batch_points,
    finetune_steps: int = 2000,
    finetune_lr: float = 5e-3,
    l2_last_layers: float = 1e-6,
    eval_every: int = 0,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Distil a trained radiance-field run (ngp, vanilla, ...) into a KiloNeRF: a grid of tiny
    MLPs that renders the same views much faster.

    Phase 1 regresses the student on the teacher's alpha and colour at points in the occupied
    cells and along training rays; phase 2 fine-tunes it on the training images with the volume
    renderer (L2 on its output layers). The run directory is an ordinary NeRF run (render, eval
    and info work on it); its config.json records the teacher. Prints the teacher's, the
    distilled and the fine-tuned PSNR/SSIM on held-out views as JSON.

    Args:
        teacher: the run directory of a trained radiance field (train-nerf or distill).
        out: run directory (default runs/nerf/<teacher>-kilonerf).
        scene: scene folder for fine-tuning and evaluation (default: the teacher's).
        aabb: the KiloNeRF box, xmin ymin zmin xmax ymax zmax (default: the teacher's scene box);
            must contain the teacher's occupied region.
        longest_axis_cells: cells along the box's longest axis (others in proportion).
        hidden: neurons of each tiny MLP's hidden layers.
        position_frequencies: octaves of the cells' position encoding.
        distill_steps: distillation steps (0 skips distillation).
        distill_lr: peak learning rate of distillation.
        batch_points: teacher points per distillation step.
        finetune_steps: fine-tuning steps on the training images (0 skips fine-tuning).
        finetune_lr: peak learning rate of fine-tuning.
        l2_last_layers: weight of the L2 penalty on the output layers while fine-tuning.
        eval_every: steps between held-out evaluations within each phase (0: at the end only).
        seed: random seed.
        device: auto (CUDA when available), cpu, cuda, cuda:N.
        resume: continue the run in --out (either phase) from its last checkpoint.
        overwrite: replace an existing run in --out.
        progress: show the progress bars.
    """
    teacher_config = read_config(teacher)
    if teacher_config.get("task") != "nerf":
        raise NfieldError(
            f"{teacher}: is a '{teacher_config.get('task')}' run; distill needs a radiance-field run (from train-nerf)"
        )
    out = Path(out or Path("runs/nerf") / f"{Path(teacher).name}-kilonerf")
    if resume:
        config = read_config(out)
        if "teacher" not in config:
            raise NfieldError(f"{out}: is not a distilled run (no 'teacher' in config.json); resume it with train-nerf")
        settings = config["distill"]
        recorded = config["teacher"].get("run_dir")
        if recorded and Path(recorded) != Path(teacher).resolve():
            raise NfieldError(f"{out}: was distilled from {recorded}, not {teacher}; resume it with the same teacher")
    else:
        box = teacher_config["scene"]["aabb"] if aabb is None else [list(aabb[:3]), list(aabb[3:])]
        settings = {
            "student": dataclasses.asdict(
                KiloNeRFConfig(longest_axis_cells=longest_axis_cells, hidden=hidden, position_frequencies=position_frequencies)
            ),
            "aabb": box,
            "config": dataclasses.asdict(DistillConfig(batch_points=batch_points)),
            "steps": distill_steps,
            "lr": distill_lr,
            "l2_last_layers": l2_last_layers,
            "finetune_steps": finetune_steps,
            "finetune_lr": finetune_lr,
            "eval_every": eval_every,
            "seed": seed,
        }
    student_cfg = config_from_dict(KiloNeRFConfig, settings["student"])
    distill_cfg = config_from_dict(DistillConfig, settings["config"])
    distill_cfg.validate()
    box = torch.tensor(settings["aabb"], dtype=torch.float32)
    if box.shape != (2, 3) or not bool((box[1] > box[0]).all()) or not bool(box.isfinite().all()):
        raise NfieldError(f"--aabb must be xmin ymin zmin xmax ymax zmax with each min < max, got {box.flatten().tolist()}")
    for name in ("steps", "finetune_steps", "eval_every"):
        if settings[name] < 0:
            flag = "distill-steps" if name == "steps" else name.replace("_", "-")
            raise NfieldError(f"--{flag} must be >= 0, got {settings[name]}")
    if settings["steps"] == 0 and settings["finetune_steps"] == 0:
        raise NfieldError("--distill-steps and --finetune-steps are both 0: nothing to do")
    for name in ("lr", "finetune_lr"):
        if not (settings[name] > 0 and math.isfinite(settings[name])):
            flag = "distill-lr" if name == "lr" else "finetune-lr"
            raise NfieldError(f"--{flag} must be a positive finite number, got {settings[name]}")
    if settings["l2_last_layers"] < 0:
        raise NfieldError(f"--l2-last-layers must be >= 0, got {settings['l2_last_layers']}")

    run_device = resolve_device(device)
    _, teacher_model, teacher_task_cfg, teacher_step = load_nerf_run(teacher, str(run_device))
    teacher_model.requires_grad_(False)
    task_cfg = student_task_config(teacher_task_cfg, settings["l2_last_layers"])
    seed_everything(settings["seed"])  # the grid's random probes, then the student's initialisation
    grid = teacher_occupancy(teacher_model, task_cfg.occupancy, march_step(box.to(run_device), task_cfg))
    check_box_contains(box.to(run_device), grid)  # bad inputs fail before the run directory is written
    grid_resolution(student_cfg.longest_axis_cells, box)
    scene_info = teacher_config["scene"]
    source = scene or scene_info["source"]
    loaded = load_scene(source, scene_info["downscale"], skip_missing_images=scene_info.get("skip_missing_images", False))
    prepare_run_dir(out, resume, overwrite)
    finetune_cfg = TrainConfig(
        steps=max(settings["finetune_steps"], 1),
        lr=settings["finetune_lr"],
        mixed_precision=False,
        eval_every=settings["eval_every"],
        seed=settings["seed"],
        progress=progress,
    )
    if not resume:
        write_config(
            out,
            {
                "task": "nerf",
                "nfield_version": nfield.__version__,
                "model": "kilonerf",
                "seed": settings["seed"],
                "scene": {**scene_info, "source": str(Path(source).resolve()), "aabb": box.tolist()},
                "field": radiance_config_to_dict(student_cfg),
                "train": dataclasses.asdict(finetune_cfg),
                "task_config": dataclasses.asdict(task_cfg),
                "teacher": {
                    "run_dir": str(Path(teacher).resolve()),
                    "model": teacher_config.get("model"),
                    "field": teacher_config.get("field", {}).get("otype"),
                    "step": teacher_step,
                },
                "distill": settings,
            },
        )
        cameras_file = Path(teacher) / "cameras.json"
        cameras = cameras_from_json(json.loads(cameras_file.read_text())) if cameras_file.is_file() else loaded.train.cameras
        write_cameras(out, cameras)

    task = DistillTask(
        teacher_model,
        grid,
        loaded,
        student_cfg,
        box.to(run_device),
        task_cfg,
        cfg=distill_cfg,
        device=run_device,
        seed=settings["seed"],
    )
    n_occupied, n_cells = int(task.occupied.sum()), task.student.n_cells
    print(
        f"distilling {teacher} ({teacher_config.get('model')}, step {teacher_step}) into a "
        f"{'x'.join(map(str, task.student.resolution))} KiloNeRF ({n_occupied:,} of {n_cells:,} cells occupied) on "
        f"{run_device}: {settings['steps']} distillation + {settings['finetune_steps']} fine-tuning steps -> {out}",
        file=sys.stderr,
    )
    summary: dict[str, Any] = {
        "teacher": _evaluate_teacher(teacher_config["field"], teacher_model, teacher_task_cfg, loaded, run_device)
    }
    finetune_started = resume and latest_checkpoint(out) is not None

    # phase 1: distillation (its own checkpoints in RUN/distill, so either phase resumes)
    distill_dir = out / DISTILL_DIR
    distill_seconds = 0.0
    if settings["steps"] > 0 and not finetune_started:
        trainer = Trainer(
            task,
            TrainConfig(
                steps=settings["steps"],
                lr=settings["lr"],
                mixed_precision=False,
                eval_every=settings["eval_every"],
                seed=settings["seed"],
                progress=progress,
            ),
            distill_dir,
            device=run_device,
        )
        if resume and latest_checkpoint(distill_dir) is not None:
            trainer.resume()
        summary["distilled"] = trainer.fit()
        distill_seconds = trainer.train_seconds
    elif not finetune_started:
        summary["distilled"] = task.evaluate()

    # phase 2: fine-tuning on the images (the run's main checkpoints; export at the end)
    trainer = Trainer(task.images, finetune_cfg, out, device=run_device)
    if finetune_started:
        trainer.resume()
    if settings["finetune_steps"] > 0:
        summary["fine_tuned"] = trainer.fit()
    else:
        trainer.save()  # the distilled student is the run's weights
        task.images.export(out)
    summary.update(
        {
            "distill_seconds": round(distill_seconds, 3),
            "finetune_seconds": round(trainer.train_seconds if settings["finetune_steps"] > 0 else 0.0, 3),
            "cells": n_cells,
            "occupied_cells": n_occupied,
            "parameters": task.student.parameter_count(),
            "run_dir": str(out),
        }
    )
    print(json.dumps(summary))


def _evaluate_teacher(field_config: dict[str, Any], model: torch.nn.ModuleDict, task_cfg: NeRFTaskConfig, scene, device):
    """The teacher's PSNR/SSIM on the same held-out views the student is evaluated on."""
    evaluation = NeRFTask(scene, radiance_config_from_dict(field_config), task_cfg, device=device)
    evaluation.model = model
    return evaluation.evaluate()
