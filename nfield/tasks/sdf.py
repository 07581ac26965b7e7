"""SDF fitting: a field learns the signed distance to a mesh, or the zero level set of an oriented
point cloud.

Meshes (ground-truth distances). Training points come from a pool of `pool_size` samples whose
exact signed distances are computed at once (`nfield.geometry.distance.signed_distance`) and redrawn every
`resample_every` steps: on-surface points, near-surface points (surface points plus Gaussian offsets
at two scales) and uniform points in [-1, 1]^3, in `SDFTaskConfig`'s proportions. The loss is the
L1 (or L2) distance error, summed over all LODs for fields that have them (NGLOD trains every LOD
jointly), plus optional eikonal and normal terms. With teaching (INT, `nfield.tasks.teaching`) a
pick draws `candidate_batches` training batches' worth of distinct pool points and the field trains
on the share whose finest-LOD distance error is largest, until the next pick or the next pool. The
default of one batch, as image fitting on random batches, never trains on more than `batch_size`
points (early steps on the schedule's share of them); more candidate batches rank more points and
the trained batch grows with the share up to all of them.

Oriented point clouds (no distances). The SIREN paper's loss: |f| on the surface, 1 - cos between
grad f and the normals there, |‖grad f‖ - 1| everywhere, and exp(-100 |f|) at uniform points so the
field does not vanish off the surface. Teaching is refused for them: it ranks points by their
distance error, and a cloud has no target distances off its surface.

Evaluation during training is cheap (held-out distance error and sign IoU); the run's end exports a
mesh by marching cubes, a sphere-traced preview, and the geometric metrics (`geometry_report`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nfield.components import config_from_dict
from nfield.data.meshes import Normalisation, OrientedPointCloud, Shape, TriangleMesh, load_shape, sample_surface, surface_samples
from nfield.encodings.octree import SparseOctree
from nfield.errors import NfieldError
from nfield.fields.sdf import (
    NGLODField,
    SDFField,
    SDFFieldConfig,
    build_sdf_field,
    check_lod,
    distance_fn,
    needs_octree,
    sdf_field_config_from_dict,
    sdf_field_config_to_dict,
)
from nfield.geometry.distance import SDFBackend, inside, signed_distance
from nfield.geometry.marching_cubes import extract_mesh, write_mesh
from nfield.geometry.surface_metrics import surface_metrics, volumetric_iou
from nfield.progress import progress_bar
from nfield.run_directory import EVAL_FILE, RunDirectory
from nfield.tasks.sdf_views import render_view_to_files
from nfield.tasks.teaching import Teacher, TeachingConfig, load_sampler_state, sampler_state


@dataclass(frozen=True)
class SDFTaskConfig:
    # sampling
    batch_size: int = 2**16  # training points per step
    pool_size: int = 2**19  # points with ground truth computed at once (meshes)
    resample_every: int = 100  # steps between pool redraws
    surface_fraction: float = 0.2  # on-surface points
    near_fraction: float = 0.4  # surface + N(0, near_sigma^2) offsets
    far_fraction: float = 0.2  # surface + N(0, far_sigma^2) offsets; the rest is uniform in the box
    near_sigma: float = 0.005  # normalised units
    far_sigma: float = 0.05
    sdf_backend: SDFBackend = "auto"  # ground-truth distances: auto, triton, torch, libigl, open3d
    octree_points: int = 2**20  # surface samples that decide the NGLOD octree's occupied cells
    # loss (meshes)
    distance_loss: Literal["l1", "l2"] = "l1"
    eikonal_weight: float = 0.0
    normal_weight: float = 0.0
    # loss (point clouds; the SIREN paper's weights)
    cloud_surface_weight: float = 3e3
    cloud_normal_weight: float = 1e2
    cloud_eikonal_weight: float = 5e1
    cloud_offsurface_weight: float = 1e2
    cloud_sign_weight: float = 1e3  # hinge on the sign at uniform points, from the cloud's winding number (0: off)
    # teaching (meshes)
    teaching: TeachingConfig = dataclasses.field(default_factory=TeachingConfig)  # INT: train on the worst-fitted points
    candidate_batches: int = 1  # teaching: pool points ranked per pick, in training batches (1: never more than a batch)
    # evaluation and export
    eval_points: int = 2**15  # held-out points for the periodic evaluation
    mesh_resolution: int = 256  # marching-cubes samples per axis for the exported mesh
    metric_points: int = 2**17  # surface samples per side for Chamfer / normal consistency
    iou_points: int = 2**18  # uniform points for volumetric IoU
    preview_width: int = 640  # render.png, pixels
    preview_height: int = 360
    chunk: int = 2**17  # points per forward pass when evaluating the field without gradients

    def __post_init__(self) -> None:
        sizes = (
            "batch_size pool_size resample_every candidate_batches octree_points eval_points metric_points iou_points "
            "preview_width preview_height"
        )
        for name in sizes.split():
            if getattr(self, name) <= 0:
                raise NfieldError(f"{name} must be positive, got {getattr(self, name)}")
        fractions = (self.surface_fraction, self.near_fraction, self.far_fraction)
        if min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
            raise NfieldError(f"sample fractions must be >= 0 and sum to at most 1, got {fractions}")
        if self.mesh_resolution < 2:
            raise NfieldError(f"mesh_resolution must be at least 2, got {self.mesh_resolution}")


class SDFTask:
    """Fit `shape` (in normalised coordinates) with an SDF field.

    Args:
        shape: a `TriangleMesh` (fitted to ground-truth distances) or an `OrientedPointCloud`; None
            builds the task without its data (an NGLOD octree then comes with the weights), enough
            to render, mesh and measure a trained field.
        field_cfg: the field (NGLOD builds its octree from `cfg.octree_points` surface samples).
        cfg: sampling, loss and export settings.
        device: where training runs.
        seed: seeds the task's own sampler (saved in checkpoints with the teacher's picks, for an exact resume).
        normalisation: the map from the input's coordinates to the normalised box, when `shape` is None.
    """

    name = "fit-sdf"
    kind = "sdf"  # config.json's "task"

    def __init__(
        self,
        shape: Shape | None,
        field_cfg: SDFFieldConfig,
        cfg: SDFTaskConfig = SDFTaskConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
        normalisation: Normalisation | None = None,
    ):
        if shape is not None:
            _check_teaching(shape, cfg)
        self.cfg, self.device = cfg, torch.device(device)
        self.shape = None if shape is None else shape.to(self.device)
        self.normalisation = normalisation if shape is None else shape.normalisation
        self.has_distances = isinstance(shape, TriangleMesh)
        self.seed = seed
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)
        self.teacher = Teacher(cfg.teaching) if cfg.teaching.enabled else None
        self.step, self.total = 0, 1  # set by `update` (the teacher's schedules need both)
        octree = None
        if needs_octree(field_cfg) and shape is not None:
            points, _ = surface_samples(self.shape, cfg.octree_points, self.generator)
            octree = SparseOctree.from_points(points, field_cfg.octree)
        self.model = build_sdf_field(field_cfg, octree).to(self.device)
        self._pool: tuple[torch.Tensor, ...] | None = None
        self._pool_step = -1
        if shape is not None:
            held_out = torch.Generator(self.device)
            held_out.manual_seed(seed * 1_000_003 + 999_999)  # never a pool index
            self._eval_set = self._draw(cfg.eval_points, held_out, with_sigma=True)

    # --- a run directory's task ---------------------------------------------------------------
    @staticmethod
    def run_config(shape: Shape, field_cfg: SDFFieldConfig, cfg: SDFTaskConfig) -> dict[str, Any]:
        """The task's part of a new run's config.json: the shape, the field and the task settings
        (`NfieldError` for settings the shape cannot take, before a run directory is written)."""
        _check_teaching(shape, cfg)
        return {
            "shape": {
                "source": str(Path(shape.source).resolve()),
                "kind": "mesh" if isinstance(shape, TriangleMesh) else "points",
                "normalisation": shape.normalisation.to_dict(),
            },
            "field": sdf_field_config_to_dict(field_cfg),
            "task_config": dataclasses.asdict(cfg),
        }

    @staticmethod
    def load_data(config: dict[str, Any], source: str | Path | None = None) -> Shape:
        """The run's shape (or `source` instead), normalised as the run's was."""
        return load_shape(source or config["shape"]["source"], Normalisation.from_dict(config["shape"]["normalisation"]))

    @classmethod
    def from_config(cls, config: dict[str, Any], device: torch.device | str, data: Shape | None = None) -> SDFTask:
        """The task a run's config.json describes (untrained), on `data` (None: without its shape)."""
        cfg = config_from_dict(SDFTaskConfig, config.get("task_config", {}))
        seed = config["train"].get("seed", config.get("seed", 0))
        normalisation = Normalisation.from_dict(config["shape"]["normalisation"])
        field_cfg = sdf_field_config_from_dict(config["field"])
        return cls(data, field_cfg, cfg, device=device, seed=seed, normalisation=normalisation)

    def describe(self) -> str:
        """One line on what is fitted with what (the command line prints it before training)."""
        shape, sizes = self._data(), self.model.lod_parameter_counts()
        kind = f"{len(shape.faces):,} triangles" if self.has_distances else f"{len(shape.points):,} oriented points"
        lods = f", {len(sizes)} LODs using " + ", ".join(f"{n * 4 / 1024:.0f} KB" for n in sizes) if len(sizes) > 1 else ""
        size = model_size(self.model)
        return (
            f"fitting {shape.source} ({kind}) [{size['parameters']:,} parameters, {size['size_kb']:,.0f} KB{lods}, "
            f"{self.cfg.batch_size:,} points per step]"
        )

    def outputs(self) -> list[str]:
        """The files `write_outputs` writes, relative to the run directory."""
        return ["mesh.ply", "render.png", EVAL_FILE]

    def _data(self) -> Shape:
        if self.shape is None:
            raise NfieldError("this SDF task was loaded without its shape; load the run with its data")
        return self.shape

    # --- sampling ---------------------------------------------------------------------------------
    def _draw(self, n: int, generator: torch.Generator, with_sigma: bool = False) -> dict[str, torch.Tensor]:
        """n training points: positions (n, 3), on-surface mask, normals (zero off the surface), for
        meshes ground-truth distances, and with `with_sigma` each point's offset scale (-1: uniform)."""
        cfg = self.cfg
        n_surface = int(n * cfg.surface_fraction)
        n_near = int(n * cfg.near_fraction)
        n_far = int(n * cfg.far_fraction)
        n_uniform = n - n_surface - n_near - n_far
        surface, normals = surface_samples(self.shape, n_surface + n_near + n_far, generator)
        sigma = torch.cat(
            [
                torch.zeros(n_surface, device=self.device),
                torch.full((n_near,), cfg.near_sigma, device=self.device),
                torch.full((n_far,), cfg.far_sigma, device=self.device),
            ]
        )
        offset = torch.randn(surface.shape, device=self.device, generator=generator) * sigma[:, None]
        uniform = torch.rand(n_uniform, 3, device=self.device, generator=generator) * 2 - 1
        positions = torch.cat([(surface + offset).clamp(-1, 1), uniform])
        on_surface = torch.zeros(n, dtype=torch.bool, device=self.device)
        on_surface[:n_surface] = True
        batch = {
            "positions": positions,
            "on_surface": on_surface,
            "normals": torch.cat([normals[:n_surface], torch.zeros(n - n_surface, 3, device=self.device)]),
        }
        if with_sigma:
            batch["sigma"] = torch.cat([sigma, torch.full((n_uniform,), -1.0, device=self.device)])
        if self.has_distances:
            distance = signed_distance(self.shape, positions[n_surface:], self.cfg.sdf_backend)
            batch["distance"] = torch.cat([torch.zeros(n_surface, device=self.device), distance])
        else:
            batch["inside"] = torch.cat(
                [torch.zeros(n_surface, dtype=torch.bool, device=self.device), self._inside(positions[n_surface:])]
            )
        return batch

    def _draw_cloud(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """n training points for a point cloud: half its points (with normals), half uniform in the
        box with their inside labels (the cloud's winding number)."""
        n_surface = n // 2
        points, normals = surface_samples(self.shape, n_surface, generator)
        uniform = torch.rand(n - n_surface, 3, device=self.device, generator=generator) * 2 - 1
        on_surface = torch.arange(n, device=self.device) < n_surface
        return {
            "positions": torch.cat([points, uniform]),
            "on_surface": on_surface,
            "normals": torch.cat([normals, torch.zeros_like(uniform)]),
            "inside": torch.cat([torch.zeros(n_surface, dtype=torch.bool, device=self.device), self._inside(uniform)]),
        }

    def _inside(self, points: torch.Tensor) -> torch.Tensor:
        if self.cfg.cloud_sign_weight > 0:
            return inside(self.shape, points)
        return torch.zeros(len(points), dtype=torch.bool, device=self.device)  # unused: the sign term is off

    def update(self, step: int, total: int) -> None:
        """The trainer's progress (the teacher's schedules depend on it)."""
        self.step, self.total = step, total

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        """A batch of `batch_size` rows from the current pool (redrawn every `resample_every` steps);
        with teaching, the rows of a larger random set of pool points whose finest-LOD distance error
        is largest, re-picked on the teacher's schedule and whenever the pool is redrawn."""
        cfg, _ = self.cfg, self._data()
        pool_index = step // cfg.resample_every
        if self._pool is None or pool_index != self._pool_step:
            # each pool has its own seed, so a resumed run redraws exactly the pool it was using
            pool_generator = torch.Generator(self.device)
            pool_generator.manual_seed(self.seed * 1_000_003 + pool_index)
            draw = self._draw if self.has_distances else self._draw_cloud
            self._pool = draw(max(cfg.pool_size, cfg.batch_size), pool_generator)
            self._pool_step = pool_index
        if self.teacher is not None:
            return self._taught(step)
        index = torch.randint(0, len(self._pool["positions"]), (cfg.batch_size,), device=self.device, generator=self.generator)
        return {key: value[index] for key, value in self._pool.items()}

    def _taught(self, step: int) -> dict[str, torch.Tensor]:
        teacher, pool, cfg = self.teacher, self._pool, self.cfg
        if teacher.due(step, self.total) or teacher.picked_at // cfg.resample_every != step // cfg.resample_every:
            index = torch.randperm(len(pool["positions"]), device=self.device, generator=self.generator)
            index = index[: cfg.candidate_batches * cfg.batch_size]  # distinct pool points
            positions, distance = pool["positions"][index], pool["distance"][index, None]
            teacher.pick(step, self.total, index, positions, distance, lambda x: self.model(x)[:, None])  # the finest LOD
        return {key: value[teacher.picked] for key, value in pool.items()}

    # --- loss -------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    # --- the field-loss protocol (`nfield.training.stacked.FieldLossTask`): many shapes as one model ---
    field_method = "forward_all_lods"
    coordinate_dim = 3

    @property
    def needs_input_gradient(self) -> bool:
        """Whether the loss uses the field's spatial gradient (eikonal and normal terms, point clouds)."""
        return not self.has_distances or self.cfg.eikonal_weight > 0 or self.cfg.normal_weight > 0

    def field_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's points (B, 3) in the normalised box."""
        return batch["positions"]

    def gradient_source(self, outputs: torch.Tensor) -> torch.Tensor:
        """The finest level's distances (B,) of the field's `outputs` (B, n_lods): what the eikonal
        and normal terms differentiate."""
        return outputs[..., -1]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.field_inputs(batch).detach().requires_grad_(self.needs_input_gradient)
        predicted = self.model.forward_all_lods(x).float()  # (B, n_lods)
        gradient = sdf_gradient(self.gradient_source(predicted), x) if self.needs_input_gradient else None
        return self.field_loss(batch, predicted, gradient)

    def field_loss(
        self, batch: dict[str, torch.Tensor], predicted: torch.Tensor, gradient: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss, its metrics) of the field's values `predicted` (B, n_lods) float32 at the batch's
        positions, with its spatial gradient there (B, 3) when `needs_input_gradient`."""
        cfg = self.cfg
        metrics: dict[str, torch.Tensor] = {}
        surface = batch["on_surface"]
        if self.has_distances:
            error = predicted - batch["distance"][:, None]
            per_lod = error.abs().mean(0) if cfg.distance_loss == "l1" else error.pow(2).mean(0)
            loss = per_lod.sum()
            metrics["distance_mae"] = error[:, -1].detach().abs().mean()
            if cfg.eikonal_weight > 0:
                loss = loss + cfg.eikonal_weight * (gradient[~surface].norm(dim=-1) - 1).pow(2).mean()
            if cfg.normal_weight > 0 and surface.any():
                loss = loss + cfg.normal_weight * (1 - F.cosine_similarity(gradient[surface], batch["normals"][surface])).mean()
            return loss, metrics
        on = predicted[surface]  # (S, n_lods)
        off = predicted[~surface]
        normal_term = (1 - F.cosine_similarity(gradient[surface], batch["normals"][surface], dim=-1)).mean()
        loss = (
            cfg.cloud_surface_weight * on.abs().mean(0).sum()
            + cfg.cloud_normal_weight * normal_term
            + cfg.cloud_eikonal_weight * (gradient.norm(dim=-1) - 1).abs().mean()
            + cfg.cloud_offsurface_weight * torch.exp(-100 * off.abs()).mean(0).sum()
        )
        if cfg.cloud_sign_weight > 0:  # inside (winding number > 1/2) wants f < 0, outside f > 0
            sign = torch.where(batch["inside"][~surface], 1.0, -1.0)[:, None]
            loss = loss + cfg.cloud_sign_weight * F.relu(sign * off).mean(0).sum()
        metrics["surface_mae"] = on[:, -1].detach().abs().mean()
        return loss, metrics

    # --- evaluation and export --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, progress: bool = False, leave: bool = True) -> dict[str, float]:
        """Held-out metrics, per LOD for multi-LOD fields: for meshes the mean absolute distance error
        at the near-surface points (`distance_mae`) and the IoU of the inside (f < 0) at the uniform
        points (`sign_iou`); for point clouds the mean |f| at the surface points (`surface_mae`) and,
        with the sign term on, `sign_iou` against the cloud's winding number. `progress` shows a bar
        over the points (`leave`: kept when done)."""
        self._data()
        held = self._eval_set
        with progress_bar(
            total=len(held["positions"]), desc="eval", unit="pt", unit_scale=True, enabled=progress, leave=leave
        ) as bar:
            parts = []
            for x in held["positions"].split(self.cfg.chunk):
                parts.append(self.model.forward_all_lods(x).float())
                bar.update(len(x))
        predicted = torch.cat(parts)
        n_lods = predicted.shape[1]
        near = held["sigma"] == self.cfg.near_sigma
        uniform = held["sigma"] < 0
        metrics: dict[str, float] = {}
        for lod in range(n_lods):
            suffix = "" if lod == n_lods - 1 else f"_lod{lod}"
            values = predicted[:, lod]
            if self.has_distances:
                metrics[f"distance_mae{suffix}"] = float((values[near] - held["distance"][near]).abs().mean())
                truth = held["distance"][uniform] < 0
            else:
                metrics[f"surface_mae{suffix}"] = float(values[held["on_surface"]].abs().mean())
                truth = held["inside"][uniform] if self.cfg.cloud_sign_weight > 0 else None
            if truth is not None:
                metrics[f"sign_iou{suffix}"] = volumetric_iou((values[uniform] < 0).cpu(), truth.cpu())
        return metrics

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None:
        """Write mesh.ply (input coordinates), eval.json (`geometry_report`) and render.png (a
        sphere-traced preview), each phase with its bar when `progress` is set."""
        run_dir = Path(run_dir)
        vertices, faces = export_mesh(
            self.model,
            run_dir / "mesh.ply",
            self.normalisation,
            self.cfg.mesh_resolution,
            chunk=self.cfg.chunk,
            progress=progress,
        )
        report = geometry_report(self.model, self._data(), vertices, faces, self.cfg, seed=0, progress=progress)
        RunDirectory(run_dir).eval.write_text(json.dumps(report, indent=2) + "\n")
        width, height = self.cfg.preview_width, self.cfg.preview_height
        render_view_to_files(self.model, run_dir / "render.png", width=width, height=height, progress=progress, label="preview")

    def extract_mesh(
        self, path: Path, resolution: int, lod: int | None = None, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes at `resolution`^3 and LOD `lod`, written to `path` in the input's coordinates
        (see `export_mesh`)."""
        check_lod(lod, self.model.n_lods)
        return export_mesh(self.model, path, self.normalisation, resolution, lod=lod, chunk=self.cfg.chunk, progress=progress)

    def geometry(self, resolution: int, lod: int | None = None, progress: bool = False) -> dict[str, Any]:
        """chamfer_l1, normal_consistency and iou against the shape of a mesh extracted at
        `resolution` and LOD `lod` (see `geometry_report`), with a progress bar over the extraction
        when `progress` is set."""
        check_lod(lod, self.model.n_lods)
        field = distance_fn(self.model, lod)
        vertices, faces = extract_mesh(field, resolution, chunk=self.cfg.chunk, device=self.device, progress=progress)
        report = geometry_report(self.model, self._data(), vertices, faces, self.cfg, lod=lod, progress=progress)
        return {"lod": self.model.n_lods - 1 if lod is None else lod, "resolution": resolution, **report}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's task state: the sampler's (`sampler_state`)."""
        return sampler_state(self.generator, self.teacher)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict`'s state."""
        load_sampler_state(state, self.generator, self.teacher, self.device)
        self._pool, self._pool_step = None, -1  # redrawn from its own seed at the next step (the picks index it)


def _check_teaching(shape: Shape, cfg: SDFTaskConfig) -> None:
    """Refuse teaching for a point cloud: INT ranks points by their distance error, which needs the
    target distances off the surface that only a mesh gives."""
    if cfg.teaching.enabled and not isinstance(shape, TriangleMesh):
        raise NfieldError(
            f"{shape.source}: --teaching needs a mesh; a point cloud has no target distances off its surface to rank points by"
        )


def sdf_gradient(distance: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d distance / dx, (N, 3), kept in the graph so losses on it train the field (eikonal, normals)."""
    (gradient,) = torch.autograd.grad(distance.sum(), x, create_graph=True)
    return gradient


def export_mesh(
    model: SDFField | NGLODField,
    path: Path,
    normalisation: Normalisation,
    resolution: int,
    lod: int | None = None,
    chunk: int = 2**17,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the field's zero level set at `resolution`^3, written to `path` in the input's
    coordinates; returns the mesh in normalised coordinates (vertices (V, 3), faces (F, 3))."""
    device = next(model.parameters()).device
    vertices, faces = extract_mesh(distance_fn(model, lod), resolution, chunk=chunk, device=device, progress=progress)
    write_mesh(path, normalisation.to_input(vertices.astype(np.float64)), faces)
    return vertices, faces


@torch.no_grad()
def geometry_report(
    model: SDFField | NGLODField,
    shape: Shape,
    vertices: np.ndarray,
    faces: np.ndarray,
    cfg: SDFTaskConfig = SDFTaskConfig(),
    lod: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Chamfer-L1 and normal consistency between the extracted mesh and the shape's surface, and the
    volumetric IoU of the field's inside (f < 0) against the shape's (the generalised winding number
    of the mesh or of the oriented cloud) at `cfg.iou_points` uniform points, plus the model size at
    `lod`. Normalised units.

    Both surfaces are sampled with `cfg.metric_points` points and each sample is matched with the
    exact closest point of the other mesh (`surface_metrics`), so the numbers carry no sampling
    floor; a point cloud's own points stand for its surface (matched point to point). `progress`
    shows a bar over the three steps (surface samples, closest points, inside tests)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device)
    generator.manual_seed(seed)
    bar = progress_bar(total=3, desc="geometry", unit="step", enabled=progress)
    with bar:
        bar.set_postfix_str(f"sampling {cfg.metric_points:,} surface points a side")
        extracted = TriangleMesh(
            torch.from_numpy(vertices).float().to(device), torch.from_numpy(faces).to(device), shape.normalisation
        )
        points_a, normals_a = sample_surface(extracted, cfg.metric_points, generator)
        if isinstance(shape, OrientedPointCloud) and len(shape.points) <= cfg.metric_points:
            points_b, normals_b = shape.points, shape.normals
        else:
            points_b, normals_b = surface_samples(shape, cfg.metric_points, generator)
        bar.update(1)
        bar.set_postfix_str("closest points (chamfer, normal consistency)")
        reference = (shape.vertices.cpu(), shape.faces.cpu()) if isinstance(shape, TriangleMesh) else None
        report: dict[str, Any] = surface_metrics(
            points_a.cpu(), normals_a.cpu(), points_b.cpu(), normals_b.cpu(), mesh_a=(vertices, faces), mesh_b=reference
        )
        bar.update(1)
        bar.set_postfix_str(f"inside tests at {cfg.iou_points:,} points (iou)")
        uniform = torch.rand(cfg.iou_points, 3, device=device, generator=generator) * 2 - 1
        predicted = torch.cat([model(x, lod=lod).float() for x in uniform.split(cfg.chunk)]) < 0
        report["iou"] = volumetric_iou(predicted.cpu(), inside(shape, uniform, cfg.sdf_backend).cpu())
        bar.update(1)
        bar.set_postfix_str("")
    n_lod = model.lod_parameter_counts()[-1 if lod is None else lod]
    report.update(model_size(model))  # the model's size, as fit-sdf and info report it
    report.update({"lod_parameters": n_lod, "lod_size_kb": round(n_lod * 4 / 1024, 1)})  # what rendering at this LOD uses
    report.update({"vertices": len(vertices), "faces": len(faces)})
    return report


def model_size(model: torch.nn.Module) -> dict[str, Any]:
    """A model's size as every command reports it: trainable `parameters`, the other stored values
    (`buffer_values`: an octree's structure, a grid's occupancy), and `size_kb` of both in float32."""
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    return {"parameters": parameters, "buffer_values": buffers, "size_kb": round((parameters + buffers) * 4 / 1024, 1)}
