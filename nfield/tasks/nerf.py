"""NeRF training: a radiance field learns a scene's images, one random batch of rays per step.

Rays are drawn across all training images at once: a random image, row and column per ray, read
from the images kept as uint8 on the CPU (device memory does not grow with the dataset), turned
into rays on the device with the camera's intrinsics and lens distortion. RGBA images (Blender
scenes) are composited on a background that is random per ray during training, so the field learns
transparency rather than a background colour, and white for evaluation.

Two samplers: an occupancy grid marched with a fixed step (instant-ngp; empty cells skipped, rays
stopped once nearly opaque), or NeRF's coarse + fine hierarchical sampling with two fields; the
rendering itself is `nfield.render.radiance`'s, with the settings `NeRFTaskConfig.render_settings`
gives it. Evaluation renders held-out views in chunks and reports PSNR and SSIM against them.

With teaching (INT, `nfield.tasks.teaching`) a pick renders a random batch of `batch_rays` rays
without gradients, on black (so the ranking does not depend on the random background), and the
next steps train on the share the field renders worst, as image fitting does on random batches;
the picks (flat pixel indices over the training images) are kept in checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nfield.backends import check_backend
from nfield.components import config_from_dict
from nfield.data.images import save_image
from nfield.data.scenes import Scene, SceneSplit, load_scene
from nfield.distributed import data_parallel, loss_share, shard, whole_step_batch
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFField, occupied_cells, save_kilonerf
from nfield.fields.radiance import build_radiance_field, radiance_config_from_dict, radiance_config_to_dict
from nfield.kernels import module_version
from nfield.metrics import psnr, psnr_from_mse, ssim
from nfield.progress import progress_bar
from nfield.render.cameras import CameraSet, image_rays, pixel_rays
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.radiance import RadianceRenderSettings, composite_on, march_step, render_image, render_nerf_rays
from nfield.render.volume import RENDER_BACKENDS
from nfield.run_directory import RunDirectory
from nfield.tasks.teaching import Teacher, TeachingConfig, load_sampler_state, sampler_state

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
#: Most bytes of an evaluation's renders kept on the CPU for the export that follows it (22 views of 800x800).
KEPT_RENDER_BYTES = 2**28


@dataclass(frozen=True)
class NeRFTaskConfig:
    batch_rays: int = 4096  # rays per step
    sampler: Literal["occupancy", "hierarchical"] = "occupancy"
    # hierarchical sampling (two fields)
    n_samples: int = 64  # coarse stratified samples per ray
    n_importance: int = 128  # fine samples per ray
    # occupancy-grid marching
    occupancy: OccupancyGridConfig = field(default_factory=OccupancyGridConfig)
    steps_per_ray: int = 1024  # march step = the box's diagonal / this
    early_stop_eps: float = 1e-4  # stop a ray once its transmittance falls below this
    # loss and backgrounds
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 0.1
    l2_last_layers: float = 0.0  # weight of the squared weights and biases of the field's output layers (KiloNeRF)
    train_background: Literal["random", "white", "black"] = "random"
    eval_background: Literal["white", "black"] = "white"
    # evaluation and rendering
    eval_views: int = (
        8  # held-out views per evaluation during training and at its end, evenly spaced (0: all; `nfield eval` uses all)
    )
    render_views: int = 0  # held-out views written to renders/ when training ends, evenly spaced (0: all)
    render_chunk: int = 2**13  # rays per forward pass when rendering images
    render_samples: int = 2**18  # most samples per field call when rendering without gradients (bounds memory)
    render_backend: str = "auto"  # ray marching and compositing: auto (Triton kernels on CUDA), torch, triton
    teaching: TeachingConfig = field(default_factory=TeachingConfig)  # INT: train on the worst-rendered rays

    def __post_init__(self) -> None:
        for name in ("batch_rays", "n_samples", "n_importance", "steps_per_ray", "render_chunk", "render_samples"):
            if getattr(self, name) <= 0:
                raise NfieldError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("eval_views", "render_views"):
            if getattr(self, name) < 0:
                raise NfieldError(f"--{name.replace('_', '-')} must be >= 0 (0: all held-out views), got {getattr(self, name)}")
        if not self.l2_last_layers >= 0:
            raise NfieldError(f"l2_last_layers must be >= 0, got {self.l2_last_layers}")
        check_backend("render_backend", self.render_backend, RENDER_BACKENDS)

    def render_settings(self) -> RadianceRenderSettings:
        """What rendering the task's radiance model takes from these settings (`nfield.render.radiance`)."""
        return RadianceRenderSettings(
            sampler=self.sampler,
            n_samples=self.n_samples,
            n_importance=self.n_importance,
            steps_per_ray=self.steps_per_ray,
            early_stop_eps=self.early_stop_eps,
            chunk=self.render_chunk,
            max_samples=self.render_samples,
            backend=self.render_backend,
        )


class NeRFTask:
    """Train a radiance field on `scene`.

    Args:
        scene: the loaded scene (images stay on the CPU); None builds the task without its data
            (`aabb` and `near` then come from the run), enough to render a trained field.
        field_cfg: a radiance-field config (see `nfield.fields.radiance`).
        cfg: sampling, loss and evaluation settings.
        device: where training runs.
        seed: seeds the ray sampler's own generator (saved in checkpoints).
        aabb: (2, 3) the scene box, world units, when `scene` is None.
        near: the near plane, world units, when `scene` is None.
    """

    name = "train-nerf"
    kind = "nerf"  # config.json's "task"
    batch_key = "batch_rays"  # the task setting that sizes a step's batch (scaled by the ranks of a data-parallel run)

    def __init__(
        self,
        scene: Scene | None,
        field_cfg: Any,
        cfg: NeRFTaskConfig = NeRFTaskConfig(),
        device="cpu",
        seed: int = 0,
        aabb: torch.Tensor | None = None,
        near: float | None = None,
    ):
        self.scene, self.cfg, self.device = scene, cfg, torch.device(device)
        self.aabb = torch.as_tensor(scene.aabb if scene is not None else aabb, dtype=torch.float32)
        self.near = float(scene.near if scene is not None else near)
        self.model = build_nerf_model(field_cfg, cfg, self.aabb, self.device)
        self.cameras = None if scene is None else scene.train.cameras.to(self.device)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.teacher = Teacher(cfg.teaching) if cfg.teaching.enabled else None
        self.step, self.total = 0, 1  # set by `update` (the teacher's schedules need both)
        self.parallel = data_parallel()
        self._kept_renders: dict[str, Any] = {}  # the last renders of held-out views, with the weights they are of

    # --- a run directory's task ---------------------------------------------------------------
    @staticmethod
    def run_config(
        scene: Scene, downscale: int, skip_missing_images: bool, field_cfg: Any, cfg: NeRFTaskConfig
    ) -> dict[str, Any]:
        """The task's part of a new run's config.json: the scene, the field and the task settings."""
        return {
            "scene": {
                "source": str(Path(scene.source).resolve()),
                "dialect": scene.dialect,
                "downscale": downscale,
                "skip_missing_images": skip_missing_images,
                "aabb": scene.aabb.tolist(),
                "near": scene.near,
                "train_views": len(scene.train.images),
                "test_views": len(scene.test.images),
                "height": int(scene.train.images.shape[1]),
                "width": int(scene.train.images.shape[2]),
            },
            "field": radiance_config_to_dict(field_cfg),
            "task_config": dataclasses.asdict(cfg),
        }

    @classmethod
    def across_ranks(cls, task_part: dict[str, Any], ranks: int) -> dict[str, Any]:
        """A new data-parallel run's config: its rays per step are the whole step's
        (`whole_step_batch`); `sample` draws them on every rank and keeps the rank's shard."""
        return whole_step_batch(task_part["task_config"], cls.batch_key, ranks)

    @staticmethod
    def load_data(config: dict[str, Any], source: str | Path | None = None) -> Scene:
        """The run's scene (or `source` instead) at the run's downscaling, in the run's box."""
        recorded = config["scene"]
        scene = load_scene(
            source or recorded["source"], recorded["downscale"], skip_missing_images=recorded.get("skip_missing_images", False)
        )
        return dataclasses.replace(scene, aabb=torch.tensor(recorded["aabb"], dtype=torch.float32))

    @classmethod
    def from_config(cls, config: dict[str, Any], device: torch.device | str, data: Scene | None = None) -> NeRFTask:
        """The task a run's config.json describes (untrained), on `data` (None: without its scene)."""
        cfg = config_from_dict(NeRFTaskConfig, config["task_config"])
        seed = config["train"].get("seed", config.get("seed", 0))
        aabb = torch.tensor(config["scene"]["aabb"], dtype=torch.float32)
        field_cfg = radiance_config_from_dict(config["field"])
        return cls(data, field_cfg, cfg, device=device, seed=seed, aabb=aabb, near=config["scene"]["near"])

    def describe(self) -> str:
        """One line on what is trained on what (the command line prints it before training)."""
        scene, n_params = self._data(), sum(p.numel() for p in self.model.parameters())
        height, width = scene.train.images.shape[1:3]
        return (
            f"training on {scene.source} ({scene.dialect}, {len(scene.train.images)} train / {len(scene.test.images)} test "
            f"views of {width}x{height}, {n_params:,} parameters, {self.cfg.batch_rays:,} rays per step)"
        )

    def outputs(self) -> list[str]:
        """What `write_outputs` writes, relative to the run directory."""
        return ["renders"]

    def write_run_files(self, run_dir: Path) -> None:
        """What the run directory needs besides config.json: the training cameras (cameras.json),
        so camera paths render without the dataset."""
        write_cameras(run_dir, self._data().train.cameras)

    def _data(self) -> Scene:
        if self.scene is None:
            raise NfieldError("this NeRF task was loaded without its scene; load the run with its data")
        return self.scene

    # --- the trainer's interface -------------------------------------------------------------
    def set_backend(self, name: str) -> bool:
        """Ray marching and compositing on backend `name` (auto, torch, triton); False for tcnn,
        which has no renderer (the rendering then stays on its configured backend)."""
        if name not in ("auto", *RENDER_BACKENDS):
            return False
        self.cfg = dataclasses.replace(self.cfg, render_backend=name)
        return True

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def update(self, step: int, total: int) -> None:
        """The trainer's progress (the teacher's schedules need it)."""
        self.step, self.total = step, total

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        """`batch_rays` random pixels of random training images: camera index, pixel centre (u, v),
        target colour composited on the ray's background, and that background. With teaching, the
        share of a random batch the field renders worst (on black), re-picked on the teacher's schedule."""
        images = self._data().train.images
        n, height, width, _ = images.shape
        # data-parallel training: batch_rays is the whole step's (the per-rank --batch-rays times the
        # ranks the run started with); every rank draws them from the same stream and keeps its own
        # block (`nfield.distributed`), so a run resumes exactly with any number of ranks
        shape = (self.cfg.batch_rays,)
        if self.teacher is None or self.teacher.due(step, self.total):
            camera = torch.randint(0, n, shape, generator=self.generator)
            row = torch.randint(0, height, shape, generator=self.generator)
            column = torch.randint(0, width, shape, generator=self.generator)
            if self.teacher is None:
                return self._local(self._rays(camera, row, column))
            index = ((camera * height + row) * width + column).to(self.device)  # flat pixel indices name the candidates
            black = self._rays(camera, row, column, background="black")
            self.teacher.pick(step, self.total, index, index, black["target"], self._render_on_black)
        picked = self.teacher.picked.cpu()
        return self._local(self._rays(picked // (height * width), picked // width % height, picked % width))

    def _local(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's block of a step's rays (all of them in one process), with its loss share."""
        if self.parallel is None:
            return batch
        n = len(batch["camera"])
        local = {key: shard(value) for key, value in batch.items()}
        return {**local, "share": torch.tensor(loss_share(len(local["camera"]), n))}

    def _rays(
        self, camera: torch.Tensor, row: torch.Tensor, column: torch.Tensor, background: str | None = None
    ) -> dict[str, torch.Tensor]:
        """The batch of the pixels at `camera`, `row`, `column` (each (B,) on the CPU), composited on
        `background` (default: the training background, drawn from the task's generator)."""
        pixels = self._data().train.images[camera, row, column].float() / 255
        background_rgb = self._background(background or self.cfg.train_background, len(camera))
        to = {"device": self.device, "non_blocking": True}
        return {
            "camera": camera.to(**to),
            "u": (column.float() + 0.5).to(**to),
            "v": (row.float() + 0.5).to(**to),
            "target": composite_on(pixels, background_rgb).to(**to),
            "background": background_rgb.to(**to),
        }

    @torch.no_grad()
    def _render_on_black(self, index: torch.Tensor) -> torch.Tensor:
        """(N, 3) colours the field renders on black for flat training-pixel indices (N,)."""
        _, height, width, _ = self._data().train.images.shape
        camera, row, column = index // (height * width), index // width % height, index % width
        origins, directions = pixel_rays(self.cameras, camera, column.float() + 0.5, row.float() + 0.5)
        black = torch.zeros(len(index), 3, device=self.device)
        settings = self.cfg.render_settings()
        outputs = []
        for start in range(0, len(index), self.cfg.render_chunk):
            part = slice(start, start + self.cfg.render_chunk)
            outputs.append(
                render_nerf_rays(self.model, settings, self.near, origins[part], directions[part], black[part], train=False)[0][
                    "rgb"
                ]
            )
        return torch.cat(outputs).float()

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        origins, directions = pixel_rays(self.cameras, batch["camera"], batch["u"], batch["v"])
        rendered = render_nerf_rays(
            self.model, self.cfg.render_settings(), self.near, origins, directions, batch["background"], train=True
        )
        loss = sum(self._photometric(out["rgb"].float(), batch["target"]) for out in rendered)
        if "share" in batch:  # a data-parallel rank's block of the step's rays
            loss = loss * batch["share"].item()
        mse = F.mse_loss(rendered[0]["rgb"].detach().float(), batch["target"])
        if self.cfg.l2_last_layers > 0:
            loss = loss + self.cfg.l2_last_layers * last_layers_l2(self.model["field"])
        return loss, {"psnr": psnr_from_mse(mse)}

    def _photometric(self, rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss == "huber":
            return F.huber_loss(rgb, target, delta=self.cfg.huber_delta)
        return F.mse_loss(rgb, target)

    @torch.no_grad()
    def evaluate(self, views: int | None = None, progress: bool = False, leave: bool = True) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over `views` held-out views, evenly spaced (0: all; default
        `cfg.eval_views`), with a progress bar over their rays when `progress` is set (`leave`: keep
        it on screen when done). The renders are kept until the field changes, so a `write_outputs` right
        after writes them without rendering them again."""
        indices = self._view_indices(self.cfg.eval_views if views is None else views)
        scores = []
        for rendered, target, _ in self._test_renders(indices, progress, "eval", leave, keep=True):
            scores.append((psnr(rendered, target), ssim(rendered, target)))
        return {"psnr": sum(s[0] for s in scores) / len(scores), "ssim": sum(s[1] for s in scores) / len(scores)}

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None:
        """Write `cfg.render_views` held-out views' renders (evenly spaced, 0: all) next to their
        ground truth in ``renders/``, and for a KiloNeRF its portable export ``kilonerf.safetensors``;
        views the last evaluation rendered are not rendered again."""
        field_module = self.model["field"]
        if isinstance(field_module, KiloNeRFField) and "grid" in self.model:
            occupied = occupied_cells(field_module, self.model["grid"])
            save_kilonerf(Path(run_dir) / "kilonerf.safetensors", field_module, occupied)
        out = Path(run_dir) / "renders"
        indices = self._view_indices(self.cfg.render_views)
        for rendered, target, name in self._test_renders(indices, progress, "renders"):
            save_image(out / f"{name}.png", rendered.cpu())
            save_image(out / f"{name}_truth.png", target.cpu())

    def evaluation_pictures(self) -> dict[str, torch.Tensor]:
        """{"render": (H, W, C) the first held-out view the last evaluation kept, in [0, 1]}, or {}
        when it kept none (what training logs draw)."""
        views = self._kept_renders.get("views")
        return {"render": views[min(views)]} if views else {}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's task state: the sampler's (`sampler_state`)."""
        return sampler_state(self.generator, self.teacher)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict`'s state."""
        load_sampler_state(state, self.generator, self.teacher, self.device)

    # --- helpers ------------------------------------------------------------------------------
    def _background(self, kind: str, n: int) -> torch.Tensor:
        if kind == "random":
            return torch.rand(n, 3, generator=self.generator)
        return torch.tensor(BACKGROUNDS[kind]).expand(n, 3)

    def evaluated_views(self, limit: int | None = None) -> int:
        """How many held-out views `evaluate(limit)` scores (default `cfg.eval_views`; 0: all)."""
        return len(self._view_indices(self.cfg.eval_views if limit is None else limit))

    def rendered_views(self) -> int:
        """How many held-out views `write_outputs` writes to renders/ (`cfg.render_views`; 0: all)."""
        return len(self._view_indices(self.cfg.render_views))

    def _view_indices(self, limit: int) -> list[int]:
        """Up to `limit` held-out view indices, evenly spaced (0: all of them)."""
        n = len(self._data().test.images)
        count = n if limit <= 0 else min(limit, n)
        return torch.linspace(0, n - 1, count).round().long().unique().tolist()

    def _test_renders(
        self, indices: list[int], progress: bool = False, label: str = "eval", leave: bool = True, keep: bool = False
    ):
        """(rendered (H, W, 3), target (H, W, 3), name) on the CPU for the held-out views `indices`,
        with a bar over their rays labelled `label` when `progress` is set.

        With `keep` these renders replace the kept ones (on the CPU, valid until the weights
        change, up to `KEPT_RENDER_BYTES`), so the closing evaluation and the export of the same
        views render them once."""
        split: SceneSplit = self._data().test
        height, width = split.images.shape[1:3]
        cameras = split.cameras.to(self.device)
        background = torch.tensor(BACKGROUNDS[self.cfg.eval_background], device=self.device)
        settings = self.cfg.render_settings()
        weights = module_version(self.model)
        kept: dict[int, torch.Tensor] = self._kept_renders["views"] if self._kept_renders.get("weights") == weights else {}
        if keep:
            self._kept_renders = {"weights": weights, "views": {i: kept[i] for i in indices if i in kept}}
        todo = [index for index in indices if index not in kept]
        shown = f"{label} ({len(indices)} view{'s' if len(indices) != 1 else ''})"
        rays = len(todo) * height * width  # none when every view was kept: no bar to show
        bar = progress_bar(total=rays, desc=shown, unit="ray", unit_scale=True, enabled=progress and rays > 0, leave=leave)
        self.model.eval()
        try:
            for index in indices:
                rendered = kept.get(index)
                if rendered is None:
                    origins, directions = image_rays(cameras, index)
                    image = render_image(self.model, settings, self.near, origins, directions, background, on_chunk=bar.update)
                    rendered = image["rgb"].reshape(height, width, 3).cpu()
                    if (
                        keep
                        and sum(r.nbytes for r in self._kept_renders["views"].values()) + rendered.nbytes <= KEPT_RENDER_BYTES
                    ):
                        self._kept_renders["views"][index] = rendered
                target = composite_on(split.images[index].float() / 255, background.cpu())
                yield rendered, target, Path(split.names[index]).stem
        finally:
            bar.close()
            self.model.train()


def last_layers_l2(field_module: nn.Module) -> torch.Tensor:
    """Sum of the squared weights and biases of `field_module.last_layers()` (KiloNeRF's output
    layers; the paper regularises them while fine-tuning so cells stay smooth where few rays pass)."""
    if not hasattr(field_module, "last_layers"):
        raise NfieldError(f"l2_last_layers applies to KiloNeRF fields, not {type(field_module).__name__}")
    return sum(layer.weight.square().sum() + layer.bias.square().sum() for layer in field_module.last_layers())


def build_nerf_model(field_cfg: Any, cfg: NeRFTaskConfig, aabb: torch.Tensor, device: torch.device) -> nn.ModuleDict:
    """The trained modules: ``field``, plus ``coarse`` (hierarchical) or ``grid`` (occupancy)."""
    aabb = aabb.to(device)
    field_module = build_radiance_field(field_cfg, aabb)
    modules: dict[str, nn.Module] = {"field": field_module}
    if cfg.sampler == "hierarchical":
        modules["coarse"] = build_radiance_field(field_cfg, aabb)
    else:
        modules["grid"] = OccupancyGrid(cfg.occupancy, aabb, field_module.density, march_step(aabb, cfg.steps_per_ray))
    return nn.ModuleDict(modules).to(device)


def cameras_to_json(cameras: CameraSet) -> dict[str, Any]:
    """A JSON-able copy of `cameras`, stored in run directories so renders need no dataset."""
    return {key: getattr(cameras, key).tolist() for key in cameras.__dataclass_fields__}


def cameras_from_json(data: dict[str, Any]) -> CameraSet:
    try:
        return CameraSet(
            **{
                key: torch.tensor(data[key], dtype=torch.int64 if key in ("width", "height") else torch.float32)
                for key in CameraSet.__dataclass_fields__
            }
        )
    except (KeyError, TypeError, ValueError) as err:
        raise NfieldError(f"cameras.json: not a camera set ({err})") from None


def write_cameras(run_dir: Path, cameras: CameraSet) -> None:
    """Write the run's training cameras (cameras.json: render paths and the viewer read them)."""
    RunDirectory(run_dir).cameras.write_text(json.dumps(cameras_to_json(cameras)) + "\n")
