"""Distilling a trained radiance field into a KiloNeRF (Reiser et al. 2021, section 3.2).

The teacher is any trained nfield radiance field (ngp, vanilla, siren, fourier or another
KiloNeRF). The student is a grid of tiny MLPs over a box that must contain everything the teacher
marks occupied. Distillation regresses the student on the teacher point by point:

- **where**: half the points uniformly inside the student cells that overlap the teacher's
  occupied region (cells outside it are never sampled, never rendered, and keep their
  initialisation), half at the sample positions the renderer visits along random training rays
  (the teacher's occupancy grid marched with the teacher's density and early termination), each
  jittered inside its interval;
- **what**: the teacher's colour for the point's direction (random for uniform points, the ray's
  for ray points) and its density mapped to alpha = 1 - exp(-sigma * step) for the renderer's
  fixed march step. Alpha is bounded, so empty space (sigma ~ 0) and opaque surfaces (sigma in the
  thousands) weigh alike, which raw densities would not.

The student's occupancy grid is the teacher's, refreshed from the teacher's final density (for a
teacher sampled hierarchically, computed from it), and frozen: KiloNeRF renders with the teacher's
empty-space skipping (see `teacher_occupancy`).
Fine-tuning on the training images then runs the ordinary NeRF task on the student with L2
regularisation on its output layers (`NeRFTaskConfig.l2_last_layers`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nfield.data.scenes import Scene
from nfield.errors import NfieldError
from nfield.fields.kilonerf import (
    KiloNeRFConfig,
    KiloNeRFField,
    cell_corners,
    occupied_bounds,
    occupied_cells,
)
from nfield.metrics import psnr_from_mse
from nfield.render.cameras import pixel_rays
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.radiance import march_step, ray_bounds
from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig

#: The distillation phase's checkpoints and metrics, inside the run directory.


@dataclass(frozen=True)
class DistillConfig:
    batch_points: int = 2**14  # points per distillation step
    ray_fraction: float = 0.5  # share of the points taken along training rays (the rest uniform in occupied cells)
    rays_per_step: int = 1024  # training rays marched per step to collect the ray points
    color_weight: float = 1.0  # weight of the colour MSE against the alpha MSE

    def __post_init__(self) -> None:
        if self.batch_points < 1 or self.rays_per_step < 1:
            raise NfieldError(
                f"batch_points and rays_per_step must be positive, got {self.batch_points} and {self.rays_per_step}"
            )
        if not 0 <= self.ray_fraction <= 1:
            raise NfieldError(f"ray_fraction must lie in [0, 1], got {self.ray_fraction}")
        if not self.color_weight >= 0:
            raise NfieldError(f"color_weight must be >= 0, got {self.color_weight}")


def student_task_config(teacher_cfg: NeRFTaskConfig, l2_last_layers: float) -> NeRFTaskConfig:
    """The student's sampling: the teacher's occupancy grid (frozen) and march step; a teacher
    sampled hierarchically gets the default grid, computed once from its density."""
    occupancy = teacher_cfg.occupancy if teacher_cfg.sampler == "occupancy" else OccupancyGridConfig()
    steps = teacher_cfg.steps_per_ray if teacher_cfg.sampler == "occupancy" else NeRFTaskConfig.steps_per_ray
    return dataclasses.replace(
        teacher_cfg,
        sampler="occupancy",
        occupancy=dataclasses.replace(occupancy, frozen=True),
        steps_per_ray=steps,
        l2_last_layers=l2_last_layers,
    )


@torch.no_grad()
def teacher_occupancy(teacher: nn.ModuleDict, cfg: OccupancyGridConfig, step_size: float, passes: int = 8) -> OccupancyGrid:
    """The occupancy grid the student renders with: the teacher's final density probed at `passes`
    random points in every cell (the largest kept), thresholded for the march step `step_size`;
    for a teacher with an occupancy grid, on that grid's cells and only where it is occupied.

    A teacher's own grid is not taken as it is: its running estimates decay slowly (x0.95 per
    update), so after a short run they still hold the density of the untrained field and mark
    empty space occupied. Probing the final density fixes that, and intersecting with the
    teacher's grid never adds a cell the teacher skipped when it was evaluated.
    """
    own = teacher["grid"] if "grid" in teacher else None
    if own is not None:
        cfg = own.cfg
    aabb = own.aabb if own is not None else teacher["field"].aabb
    fresh = dataclasses.replace(cfg, frozen=False, ema_decay=1.0, warmup_steps=1, update_every=1)
    grid = OccupancyGrid(fresh, aabb, teacher["field"].density, step_size).to(aabb.device)
    for _ in range(passes):
        grid.update(0, 1)
    if own is not None:
        grid.occupied &= own.occupied
    return grid


class DistillTask:
    """Regress a KiloNeRF student on a trained teacher (the trainer's task interface).

    Args:
        teacher: the teacher run's modules (``field`` and ``grid`` or ``coarse``), on `device`.
        grid: the teacher's occupancy grid (`teacher_occupancy`); its occupied cells must lie in `aabb`.
        scene: the scene the teacher was trained on (training rays; held-out views for evaluation).
        student_cfg: the student's KiloNeRF config.
        aabb: (2, 3) the student's box; must contain the teacher's occupied region.
        task_cfg: the student's NeRF task config (see `student_task_config`).
        cfg: distillation settings.
        device: where it runs.
        seed: seeds the point sampler.

    Attributes:
        images: the student's `NeRFTask` (same model), used for evaluation and fine-tuning.
        model: the student's modules: ``field`` (KiloNeRF) and ``grid`` (the teacher's, frozen).
        occupied: (n_cells,) bool, the student cells that are trained.
    """

    name = "distill"

    def __init__(
        self,
        teacher: nn.ModuleDict,
        grid: OccupancyGrid,
        scene: Scene,
        student_cfg: KiloNeRFConfig,
        aabb: torch.Tensor,
        task_cfg: NeRFTaskConfig,
        cfg: DistillConfig = DistillConfig(),
        device="cpu",
        seed: int = 0,
    ):
        self.cfg, self.device, self.teacher = cfg, torch.device(device), teacher
        check_box_contains(aabb, grid)
        self.images = NeRFTask(dataclasses.replace(scene, aabb=aabb.cpu()), student_cfg, task_cfg, device=device, seed=seed)
        self.model = self.images.model
        self.model["grid"].load_state_dict(grid.state_dict())
        self.student: KiloNeRFField = self.model["field"]
        self.occupied = occupied_cells(self.student, self.model["grid"])
        self.occupied_ids = torch.nonzero(self.occupied).squeeze(1)
        if len(self.occupied_ids) == 0:
            raise NfieldError("the teacher's occupancy grid marks nothing occupied inside the box; there is nothing to distil")
        self.corners, self.cell_size = cell_corners(self.student)
        box = self.student.aabb
        self.step_size = march_step(box, task_cfg.steps_per_ray)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    # --- the trainer's interface -------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.student.parameters())}]

    @torch.no_grad()
    def sample(self, step: int) -> dict[str, torch.Tensor]:
        """Points (B, 3) and unit directions (B, 3) with the teacher's alpha (B,) and rgb (B, 3)."""
        n_rays_points = round(self.cfg.batch_points * self.cfg.ray_fraction)
        ray_x, ray_d = self._ray_points(n_rays_points) if n_rays_points else (None, None)
        n_uniform = self.cfg.batch_points - (0 if ray_x is None else len(ray_x))
        options = {"device": self.device, "generator": self.generator}
        cells = self.occupied_ids[torch.randint(len(self.occupied_ids), (n_uniform,), **options)]
        x = self.corners[cells] + torch.rand(n_uniform, 3, **options) * self.cell_size
        d = F.normalize(torch.randn(n_uniform, 3, **options), dim=-1)
        if ray_x is not None:
            x, d = torch.cat([x, ray_x]), torch.cat([d, ray_d])
        rgb, sigma = self.teacher["field"](x, d)
        return {"x": x, "d": d, "rgb": rgb.float(), "alpha": self.alpha(sigma.float())}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rgb, sigma = self.student(batch["x"], batch["d"])
        alpha_mse = F.mse_loss(self.alpha(sigma), batch["alpha"])
        rgb_mse = F.mse_loss(rgb, batch["rgb"])
        loss = alpha_mse + self.cfg.color_weight * rgb_mse
        return loss, {"alpha_mse": alpha_mse.detach(), "rgb_psnr": psnr_from_mse(rgb_mse.detach())}

    def evaluate(self, progress: bool = False, leave: bool = True) -> dict[str, float]:
        """The student's PSNR and SSIM on the held-out views (`NeRFTask.evaluate`)."""
        return self.images.evaluate(progress=progress, leave=leave)

    def evaluation_pictures(self) -> dict[str, torch.Tensor]:
        """The student's first held-out view the last evaluation kept (`NeRFTask.evaluation_pictures`)."""
        return self.images.evaluation_pictures()

    def write_outputs(self, run_dir, progress: bool = False) -> None:
        """Nothing: the distilled student is fine-tuned next and exported then."""

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "images": self.images.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.images.load_state_dict(state["images"])

    # --- helpers ------------------------------------------------------------------------------
    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        """Opacity of one march step of density `sigma`: the bounded quantity distilled."""
        return 1 - torch.exp(-sigma * self.step_size)

    def _ray_points(self, count: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Up to `count` points where the renderer samples random training rays, jittered inside
        their march intervals, with the rays' directions."""
        batch = self.images.sample(0)  # random pixels of random training images
        n = min(self.cfg.rays_per_step, len(batch["camera"]))
        origins, directions = pixel_rays(self.images.cameras, batch["camera"][:n], batch["u"][:n], batch["v"][:n])
        box = self.student.aabb
        t_near, t_far = ray_bounds(origins, directions, box, self.images.near)
        samples = self.model["grid"].march(
            origins,
            directions,
            t_near,
            t_far,
            self.step_size,
            sigma_fn=self.teacher["field"].density,
            early_stop_eps=self.images.cfg.early_stop_eps,
        )
        if len(samples) == 0:
            return None, None
        chosen = torch.randperm(len(samples), device=self.device, generator=self.generator)[:count]
        jitter = torch.rand(len(chosen), device=self.device, generator=self.generator)
        t = samples.t_starts[chosen] + jitter * (samples.t_ends[chosen] - samples.t_starts[chosen])
        rays = samples.ray_indices[chosen]
        x = origins[rays] + t[:, None] * directions[rays]
        cells = self.student.cell_index(x)
        kept = (cells >= 0) & self.occupied[cells.clamp_min(0)]  # jitter may cross into an empty cell
        return x[kept], directions[rays][kept]


def check_box_contains(aabb: torch.Tensor, grid: OccupancyGrid) -> None:
    """NfieldError unless the box `aabb` (2, 3) contains the occupied cells of `grid` (to within
    one cell of its finest level, the grid's own precision)."""
    bounds = occupied_bounds(grid)
    if bounds is None:
        raise NfieldError("the teacher's occupancy grid marks nothing occupied; there is nothing to distil")
    lo, hi = (b.to(aabb.device) for b in bounds)
    slack = (grid.aabb[1] - grid.aabb[0]).to(aabb.device) / grid.cfg.resolution
    if bool((lo < aabb[0] - slack).any() or (hi > aabb[1] + slack).any()):
        box = [[round(v, 3) for v in row] for row in aabb.tolist()]
        region = [[round(v, 3) for v in lo.tolist()], [round(v, 3) for v in hi.tolist()]]
        raise NfieldError(f"the box {box} does not contain the teacher's occupied region {region}; pass an --aabb that covers it")


@dataclass(frozen=True)
class DistillSettings:
    """Everything a distillation run is made of (config.json's "distill" section)."""

    student: KiloNeRFConfig = dataclasses.field(default_factory=KiloNeRFConfig)
    aabb: tuple | None = None  # ((xmin, ymin, zmin), (xmax, ymax, zmax)) the student's box (None: the teacher's)
    config: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    steps: int = 3000  # distillation steps (0 skips distillation)
    lr: float = 5e-3  # peak learning rate of distillation
    l2_last_layers: float = 1e-6  # weight of the L2 penalty on the output layers while fine-tuning
    finetune_steps: int = 2000  # fine-tuning steps on the training images (0 skips fine-tuning)
    finetune_lr: float = 5e-3  # peak learning rate of fine-tuning
    eval_every: int = 0  # steps between held-out evaluations within each phase (0: at the end only)
    seed: int = 0

    def __post_init__(self) -> None:
        """NfieldError naming the flag of the first impossible setting."""
        box = torch.tensor(self.aabb, dtype=torch.float32) if self.aabb is not None else None
        if box is not None and (box.shape != (2, 3) or not bool((box[1] > box[0]).all()) or not bool(box.isfinite().all())):
            raise NfieldError(f"--aabb must be xmin ymin zmin xmax ymax zmax with each min < max, got {box.flatten().tolist()}")
        for name, flag in (("steps", "distill-steps"), ("finetune_steps", "finetune-steps"), ("eval_every", "eval-every")):
            if getattr(self, name) < 0:
                raise NfieldError(f"--{flag} must be >= 0, got {getattr(self, name)}")
        if self.steps == 0 and self.finetune_steps == 0:
            raise NfieldError("--distill-steps and --finetune-steps are both 0: nothing to do")
        for name, flag in (("lr", "distill-lr"), ("finetune_lr", "finetune-lr")):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise NfieldError(f"--{flag} must be a positive finite number, got {getattr(self, name)}")
        if self.l2_last_layers < 0:
            raise NfieldError(f"--l2-last-layers must be >= 0, got {self.l2_last_layers}")
