"""NeRF commands: ``train-nerf``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import tyro

from nfield.cli.options import Overrides, RunFlags, TrainingCommand, device_default, train_options
from nfield.flag_hints import PRESET, STATED, hidden_alias
from nfield.presets.nerf import NERF_PRESETS
from nfield.tasks.teaching import TeachingConfig

NeRFTrainOptions = train_options(NERF_PRESETS)


@dataclass(frozen=True)
class NeRFModelOptions(Overrides):
    """Size and sampling overrides; unset keys keep the preset's value. A size goes to the part of the
    model that has it; a key the chosen model does not have is an error."""

    n_levels: Annotated[Optional[int], PRESET] = None  # ngp (and hash-grid models): hash-grid levels
    log2_hashmap_size: Annotated[Optional[int], PRESET] = None  # ngp (and hash-grid models): log2 of the rows per hashed level
    occupancy_resolution: Annotated[Optional[int], hidden_alias("--grid-resolution")] = None
    """occupancy grid cells per axis"""
    occupancy_warmup: Annotated[Optional[int], hidden_alias("--grid-warmup")] = None
    """steps during which every occupancy cell is refreshed"""
    steps_per_ray: Annotated[Optional[int], PRESET] = None  # occupancy marching: steps across the box's diagonal
    n_samples: Annotated[Optional[int], PRESET] = None  # hierarchical: coarse samples per ray
    n_importance: Annotated[Optional[int], PRESET] = None  # hierarchical: fine samples per ray
    longest_axis_cells: Annotated[Optional[int], PRESET] = None  # kilonerf: cells along the box's longest axis


@dataclass(frozen=True)
class TrainNeRF(TrainingCommand):
    """Train a radiance field on a NeRF scene (a folder with transforms.json in the Blender,
    instant-ngp or nerfstudio format); reports PSNR/SSIM on held-out views.

    Writes a run directory with config.json, cameras.json, metrics.jsonl, checkpoints/ and
    renders/ (held-out views next to their ground truth: all of them on a GPU, two on a CPU);
    prints the final metrics as JSON.
    """

    scene: tyro.conf.Positional[str]  # scene folder (or its transforms.json)
    model: Annotated[Optional[str], STATED] = None
    """ngp, vanilla, kilonerf, siren, fourier, or any other fit-image model as the geometry network (default ngp)"""
    downscale: int = 1  # integer downscaling of the images (and intrinsics)
    batch_rays: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(NERF_PRESETS, "batch_rays"))] = None
    """rays per step"""
    loss: Annotated[Optional[Literal["mse", "huber"]], STATED] = None  # photometric loss, mse or huber (default: mse)
    teaching: bool = False  # INT (nonparametric teaching): each step trains on the rays of a random batch rendered worst
    background: Annotated[Optional[Literal["random", "white", "black"]], STATED] = None
    """background of transparent training pixels: random per ray, white or black (default: random)"""
    eval_views: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(NERF_PRESETS, "eval_views"))] = None
    """held-out views scored by each evaluation, the closing one included, 0 for all (`nfield eval` scores all)"""
    render_views: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(NERF_PRESETS, "render_views"))] = None
    """held-out views written to renders/ when training ends, 0 for all"""
    skip_missing_images: bool = False  # drop frames whose image file is missing (with a warning) instead of failing
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[NeRFTrainOptions, tyro.conf.OmitArgPrefixes] = NeRFTrainOptions()
    model_options: Annotated[NeRFModelOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="model")] = NeRFModelOptions()

    def __call__(self) -> None:
        task = {"batch_rays": self.batch_rays, "loss": self.loss, "train_background": self.background}
        task["eval_views"], task["render_views"] = self.eval_views, self.render_views
        task["teaching"] = TeachingConfig(enabled=True) if self.teaching else None
        data = {"downscale": self.downscale, "skip_missing_images": self.skip_missing_images}
        self.submit("nerf", self.scene, task, data)
