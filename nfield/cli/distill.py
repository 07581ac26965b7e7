"""``nfield distill``: turn a trained radiance field into a KiloNeRF (distillation, then fine-tuning)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from nfield.cli.options import RunFlags, watched
from nfield.distributed import environment_layout
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig
from nfield.flag_hints import STATED, hidden_alias
from nfield.runs.distillation import distill
from nfield.tasks.distill import DistillConfig, DistillSettings


@dataclass(frozen=True)
class Distill:
    """Distil a trained radiance-field run (ngp, vanilla, ...) into a KiloNeRF: a grid of tiny
    MLPs that renders the same views much faster.

    Phase 1 regresses the student on the teacher's alpha and colour at points in the occupied
    cells and along training rays; phase 2 fine-tunes it on the training images with the volume
    renderer (L2 on its output layers). The run directory is an ordinary NeRF run (render, eval
    and info work on it); its config.json records the teacher. Prints the teacher's, the
    distilled and the fine-tuned PSNR/SSIM on held-out views as JSON.
    """

    teacher: tyro.conf.Positional[Path]  # the run directory of a trained radiance field (train-nerf or distill)
    scene: Annotated[Optional[str], STATED] = None  # scene folder for fine-tuning and evaluation (default: the teacher's)
    aabb: Annotated[Optional[tuple[float, float, float, float, float, float]], STATED] = None
    """the KiloNeRF box, xmin ymin zmin xmax ymax zmax (default: the teacher's scene box); must contain the
    teacher's occupied region"""
    longest_axis_cells: int = KiloNeRFConfig.longest_axis_cells  # cells along the box's longest axis (others in proportion)
    n_neurons: Annotated[int, hidden_alias("--hidden", hint=None)] = KiloNeRFConfig.n_neurons
    """neurons of each tiny MLP's hidden layers"""
    position_frequencies: int = KiloNeRFConfig.position_frequencies  # octaves of the cells' position encoding
    distill_steps: int = DistillSettings.steps  # distillation steps (0 skips distillation)
    distill_lr: float = DistillSettings.lr  # peak learning rate of distillation
    batch_points: int = DistillConfig.batch_points  # teacher points per distillation step
    finetune_steps: int = DistillSettings.finetune_steps  # fine-tuning steps on the training images (0 skips fine-tuning)
    finetune_lr: float = DistillSettings.finetune_lr  # peak learning rate of fine-tuning
    l2_last_layers: float = DistillSettings.l2_last_layers  # weight of the L2 penalty on the output layers while fine-tuning
    eval_every: int = 0  # steps between held-out evaluations within each phase (0: at the end only)
    seed: int = 0  # random seed
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()

    def __call__(self) -> None:
        student = KiloNeRFConfig(
            longest_axis_cells=self.longest_axis_cells, n_neurons=self.n_neurons, position_frequencies=self.position_frequencies
        )
        settings = DistillSettings(
            student=student,
            aabb=None if self.aabb is None else (self.aabb[:3], self.aabb[3:]),
            config=DistillConfig(batch_points=self.batch_points),
            steps=self.distill_steps,
            lr=self.distill_lr,
            l2_last_layers=self.l2_last_layers,
            finetune_steps=self.finetune_steps,
            finetune_lr=self.finetune_lr,
            eval_every=self.eval_every,
            seed=self.seed,
        )
        flags = self.run
        if environment_layout().world > 1:
            raise NfieldError("distill runs in one process; launch it without torchrun")
        summary = distill(
            self.teacher,
            settings,
            flags.out,
            self.scene,
            flags.device,
            flags.resume,
            flags.overwrite,
            flags.progress,
            watched(flags),
            flags.logger,
        )
        print(json.dumps(summary))
