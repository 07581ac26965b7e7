"""Distillation: a trained radiance field's run taught to a KiloNeRF student, then fine-tuned.

``nfield distill TEACHER_RUN`` makes a new NeRF run: phase 1 regresses the student on the
teacher's alpha and colour (`nfield.tasks.distill.DistillTask`; its own checkpoints and metrics in
``RUN/distill``), phase 2 fine-tunes it on the training images with the volume renderer (the run's
main checkpoints). The run directory is an ordinary NeRF run whose config.json also records the
teacher and the settings, so render, eval, info and view work on it, and ``--resume`` continues
either phase.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from nfield.components import config_from_dict
from nfield.errors import NfieldError
from nfield.fields.kilonerf import grid_resolution
from nfield.fields.radiance import radiance_config_to_dict
from nfield.render.radiance import march_step
from nfield.run_directory import RunDirectory
from nfield.runs.loggers import check_logger, logger_observers
from nfield.runs.plots import CurvesDrawer
from nfield.runs.single import Watch, from_run_config, load_run, new_config, unwatched
from nfield.tasks.distill import (
    DistillSettings,
    DistillTask,
    check_box_contains,
    student_task_config,
    teacher_occupancy,
)
from nfield.tasks.nerf import NeRFTask, write_cameras
from nfield.training.trainer import TrainConfig, Trainer, seed_everything


def distill(
    teacher_dir: Path,
    settings: DistillSettings,
    out: Path | None = None,
    scene: str | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    watch: Watch = unwatched,
    logger: str = "none",
) -> dict[str, Any]:
    """Distil the radiance field of the run `teacher_dir` into a KiloNeRF run in `out` (default
    ``runs/nerf/<teacher>-kilonerf``), then fine-tune it on the images (see `nfield.tasks.distill`).

    The new run is an ordinary NeRF run whose config.json also records the teacher and the
    settings; with `resume` those recorded settings are used and `settings` is ignored. Each phase
    logs its metrics to `logger` (none, tensorboard or wandb) in its own run directory. Returns the
    teacher's, the distilled and the fine-tuned metrics with the phases' durations and sizes.
    """
    check_logger(logger)
    teacher_dir = Path(teacher_dir)
    out = Path(out or Path("runs/nerf") / f"{teacher_dir.name}-kilonerf")
    directory = RunDirectory(out)
    if resume and overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    teacher_config = RunDirectory(teacher_dir).read_config()
    if teacher_config["task"] != "nerf":
        raise NfieldError(
            f"{teacher_dir}: is a '{teacher_config['task']}' run; distill needs a radiance-field run (from train-nerf)"
        )
    if resume:
        config = directory.read_config()
        if "teacher" not in config:
            raise NfieldError(f"{out}: is not a distilled run (no 'teacher' in config.json); resume it with train-nerf")
        recorded = config["teacher"].get("run_dir")
        if recorded and Path(recorded) != teacher_dir.resolve():
            raise NfieldError(f"{out}: was distilled from {recorded}, not {teacher_dir}; resume it with the same teacher")
        settings = from_run_config(out, lambda: config_from_dict(DistillSettings, config["distill"], what="distill"))
    teacher = load_run(teacher_dir, device, data=True, source=scene)
    task = distillation_task(teacher.task, settings, teacher.device)  # bad settings fail before the run directory is written
    directory.prepare(resume, overwrite)
    if not resume:
        scene_part = {**teacher_config["scene"], "source": str(Path(teacher.task.scene.source).resolve())}
        student = {
            "scene": {**scene_part, "aabb": task.student.aabb.tolist()},
            "field": radiance_config_to_dict(settings.student),
            "task_config": dataclasses.asdict(task.images.cfg),
        }
        origin = {"run_dir": str(teacher_dir.resolve()), "model": teacher_config.get("model"), "step": teacher.step}
        origin["field"] = teacher_config.get("field", {}).get("otype")
        recorded = dataclasses.replace(settings, aabb=task.student.aabb.tolist())  # the box, also when it is the teacher's
        extra = {"teacher": origin, "distill": dataclasses.asdict(recorded)}
        directory.write_config(new_config("nerf", "kilonerf", phase_config(settings, "finetune", progress), student, **extra))
        if RunDirectory(teacher_dir).cameras.is_file():
            shutil.copyfile(RunDirectory(teacher_dir).cameras, directory.cameras)
        else:
            write_cameras(out, task.images.cameras.to("cpu"))
    n_occupied, n_cells = int(task.occupied.sum()), task.student.n_cells
    print(
        f"distilling {teacher_dir} ({teacher_config.get('model')}, step {teacher.step}) into a "
        f"{'x'.join(map(str, task.student.resolution))} KiloNeRF ({n_occupied:,} of {n_cells:,} cells occupied) on "
        f"{teacher.device}: {settings.steps} distillation + {settings.finetune_steps} fine-tuning steps -> {out}",
        file=sys.stderr,
    )
    summary = {"teacher": teacher.task.evaluate(progress=progress)}
    with watch(out, directory.read_config(), task.images) as observers:
        summary.update(
            distil_and_finetune(task, settings, out, resume=resume, progress=progress, observers=observers, logger=logger)
        )
    sizes = {"cells": n_cells, "occupied_cells": n_occupied, "parameters": task.student.parameter_count()}
    return {**summary, **sizes, "run_dir": str(out)}


def phase_config(settings: DistillSettings, phase: str, progress: bool = True) -> TrainConfig:
    """The trainer's config of a phase: "distill" or "finetune" (the run's main config)."""
    steps, lr = (settings.steps, settings.lr) if phase == "distill" else (max(settings.finetune_steps, 1), settings.finetune_lr)
    return TrainConfig(
        steps=steps, lr=lr, mixed_precision=False, eval_every=settings.eval_every, seed=settings.seed, progress=progress
    )


def distillation_task(teacher: NeRFTask, settings: DistillSettings, device: torch.device) -> DistillTask:
    """The student of `settings` regressed on `teacher` (a trained NeRF task with its scene):
    checks the settings and that the box contains the teacher's occupied region, then builds the
    student (seeded from the settings) on the teacher's training views."""
    box = (teacher.aabb if settings.aabb is None else torch.tensor(settings.aabb, dtype=torch.float32)).to(device)
    task_cfg = student_task_config(teacher.cfg, settings.l2_last_layers)
    seed_everything(settings.seed)  # the grid's random probes, then the student's initialisation
    grid = teacher_occupancy(teacher.model, task_cfg.occupancy, march_step(box, task_cfg.steps_per_ray))
    check_box_contains(box, grid)
    grid_resolution(settings.student.longest_axis_cells, box.cpu())
    teacher.model.requires_grad_(False)
    return DistillTask(
        teacher.model, grid, teacher._data(), settings.student, box, task_cfg, settings.config, device=device, seed=settings.seed
    )


def distil_and_finetune(
    task: DistillTask,
    settings: DistillSettings,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    observers: Sequence[Any] = (),
    logger: str = "none",
) -> dict[str, Any]:
    """Phase 1, distillation (its own checkpoints in ``RUN/distill``), then phase 2, fine-tuning on
    the images (the run's main checkpoints; its outputs written at the end). With `resume` either phase
    continues from its newest checkpoint; `observers` are given to both phases' trainers (the live
    viewer), and each logs its metrics to `logger` in its own directory. Returns the metrics of each
    phase and its duration."""
    directory = RunDirectory(run_dir)
    finetune_started = resume and directory.latest_checkpoint() is not None
    summary: dict[str, Any] = {}
    distill_seconds = 0.0
    if settings.steps > 0 and not finetune_started:
        trainer = Trainer(task, phase_config(settings, "distill", progress), directory.distill.path, device=task.device)
        trainer.observers.extend([*observers, CurvesDrawer(), *logger_observers(logger)])
        if resume and directory.distill.latest_checkpoint() is not None:
            trainer.resume()
        summary["distilled"] = trainer.fit()
        distill_seconds = trainer.train_seconds
    elif not finetune_started:
        summary["distilled"] = task.evaluate(progress=progress)
    trainer = Trainer(task.images, phase_config(settings, "finetune", progress), directory.path, device=task.device)
    trainer.observers.extend([*observers, CurvesDrawer(), *logger_observers(logger)])
    if finetune_started:
        trainer.resume()
    if settings.finetune_steps > 0:
        summary["fine_tuned"] = trainer.fit()
    else:
        trainer.save()  # the distilled student is the run's weights
        task.images.write_outputs(directory.path, progress=progress)
    summary["distill_seconds"] = round(distill_seconds, 3)
    summary["finetune_seconds"] = round(trainer.train_seconds if settings.finetune_steps > 0 else 0.0, 3)
    return summary
