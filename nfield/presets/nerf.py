"""Named NeRF models: the field, how rays are sampled, and the optimiser settings its authors use.

- ``ngp``: instant-ngp's field (hash grid, tiny density MLP, spherical-harmonics directions, colour
  MLP) sampled by ray marching an occupancy grid with empty-space skipping and early termination;
  lr 1e-2, float16 autocast on CUDA.
- ``vanilla``: the NeRF paper's MLP (positional encoding, 8 x 256 with a skip, view directions)
  with its coarse + fine hierarchical sampling (64 stratified + 128 importance samples), lr 5e-4.
- ``kilonerf``: KiloNeRF's grid of tiny MLPs (16 cells along the longest axis, 32-wide layers)
  trained directly from the images with the occupancy grid, lr 5e-3. The grid's own warm-up
  (every cell refreshed during the first steps) is the only schedule it needs: from scratch, with
  no teacher, on a generated 40x40 scene, 400 CPU steps reach 25.0 dB on held-out views with the
  default 16^3 cells and 25.4 dB with 8^3, so no shared coarse field was needed to start. Cells
  that no training ray crosses keep their initial density; views from outside the training
  cameras' reach may show it. Distilling an ngp teacher and fine-tuning reaches higher in less
  time (`scripts/bench_kilonerf.py`).
- ``siren``, ``fourier``: any geometry encoding/network of the package in NGP's head structure,
  sampled like ``ngp`` (here SIREN, and Gaussian Fourier features with a ReLU MLP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from nfield.data.scenes import Scene, load_scene
from nfield.encodings import GaussianFourierConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig
from nfield.fields.radiance import GenericRadianceConfig, NGPFieldConfig, VanillaNeRFConfig
from nfield.networks import MLPConfig, SirenConfig
from nfield.presets import Preset, apply_overrides, preset_fields
from nfield.presets.families import NOT_FOR, family_preset
from nfield.presets.image import IMAGE_PRESETS
from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig
from nfield.training.trainer import TrainConfig

#: Steps and schedule of every NeRF preset; the learning rate and autocast differ per model.
_TRAIN = TrainConfig(steps=5000, lr_schedule="cosine", eval_every=1000)
#: On a CPU: 1024 rays per step (4096 on a GPU), where an ngp step of 4096 rays takes seconds; and
#: 2 held-out views evaluated and written to renders/ (8 evaluated and all written on a GPU), where
#: one 800x800 view takes a minute or more (`nfield eval RUN` scores and writes them all).
_CPU = {"batch_rays": 1024, "eval_views": 2, "render_views": 2}


def _preset(field, sampler: Literal["occupancy", "hierarchical"], lr: float, description: str, mixed_precision=True) -> Preset:
    task = NeRFTaskConfig(batch_rays=4096, sampler=sampler)
    return Preset(field, dataclasses.replace(_TRAIN, lr=lr, mixed_precision=mixed_precision), task, description, _CPU)


NERF_PRESETS: dict[str, Preset] = {
    "ngp": _preset(NGPFieldConfig(), "occupancy", 1e-2, "instant-ngp: hash grid + tiny MLPs, occupancy-grid marching"),
    "vanilla": _preset(
        VanillaNeRFConfig(), "hierarchical", 5e-4, "NeRF: 8x256 MLP on positional encoding, coarse + fine", mixed_precision=False
    ),
    "kilonerf": _preset(
        KiloNeRFConfig(),
        "occupancy",
        5e-3,
        "KiloNeRF: a 16-cell grid of tiny 32-wide MLPs, trained directly from images",
        mixed_precision=False,
    ),
    "siren": _preset(
        GenericRadianceConfig(encoding=IdentityConfig(), network=SirenConfig(n_neurons=128, n_hidden_layers=3)),
        "occupancy",
        1e-4,
        "SIREN geometry network with NGP's colour head",
        mixed_precision=False,
    ),
    "fourier": _preset(
        GenericRadianceConfig(
            encoding=GaussianFourierConfig(n_features=128, sigma=8.0), network=MLPConfig(n_neurons=128, n_hidden_layers=3)
        ),
        "occupancy",
        1e-3,
        "Gaussian Fourier features + ReLU MLP with NGP's colour head",
    ),
}
DEFAULT_MODEL = "ngp"


#: Cells per axis the other families' grids, planes and lattices reach over the scene's box.
FAMILY_RESOLUTION = 256
#: The sampling overrides, every model's: key -> its place in the task settings (`NeRFTaskConfig`).
SAMPLING = {
    "occupancy_resolution": "occupancy.resolution",
    "occupancy_warmup": "occupancy.warmup_steps",
    "steps_per_ray": "steps_per_ray",
    "n_samples": "n_samples",
    "n_importance": "n_importance",
}
#: Override keys of runs before 0.3 (scripts, run requests) -> their current names.
_RENAMED = {"grid_resolution": "occupancy_resolution", "grid_warmup": "occupancy_warmup"}


def nerf_models() -> list[str]:
    """Every model train-nerf takes: its own presets, then the image families that apply to NeRFs."""
    return [*NERF_PRESETS, *(f for f in IMAGE_PRESETS if f not in NERF_PRESETS and f not in NOT_FOR["nerf"])]


def resolve_nerf_preset(name: str, overrides: dict[str, Any]) -> Preset:
    """The preset `name` with `overrides` applied (`apply_overrides`): field sizes, each to the part of
    the field that has it (``n_levels`` and ``log2_hashmap_size`` to a hash grid, ``longest_axis_cells``
    to kilonerf; a key the model does not have is refused), and sampling (`SAMPLING`:
    ``occupancy_resolution``, ``occupancy_warmup``, ``steps_per_ray``, ``n_samples``, ``n_importance``)."""
    if name in NERF_PRESETS:
        preset = NERF_PRESETS[name]
    elif name in IMAGE_PRESETS and name not in NOT_FOR["nerf"]:
        # any other image family as the geometry network under NGP's colour head (`nfield.presets.families`)
        family = family_preset(name, 3, "nerf", FAMILY_RESOLUTION, NERF_PRESETS["fourier"])
        preset = dataclasses.replace(
            family, field=GenericRadianceConfig(encoding=family.field.encoding, network=family.field.network)
        )
    else:
        why = f" ({name}: {NOT_FOR['nerf'][name]})" if name in NOT_FOR["nerf"] else ""
        raise NfieldError(f"unknown model '{name}'{why}; choose one of: {', '.join(nerf_models())}")
    overrides = {_RENAMED.get(key, key): value for key, value in overrides.items()}
    sizes = {key: value for key, value in overrides.items() if key not in SAMPLING}
    sampling = {key: value for key, value in overrides.items() if key in SAMPLING}
    field = apply_overrides(preset.field, sizes, name, others=preset_fields(NERF_PRESETS))
    task = apply_overrides(preset.task, sampling, name, paths=SAMPLING)
    return dataclasses.replace(preset, field=field, task=task)


def new_nerf_run(
    source: str,
    model: str,
    overrides: dict[str, Any],
    task_overrides: dict[str, Any],
    device: torch.device,
    downscale: int = 1,
    skip_missing_images: bool = False,
) -> tuple[TrainConfig, dict[str, Any], Scene]:
    """A new NeRF run from the preset `model`: (its training config, the task's part of config.json,
    the loaded scene). `task_overrides` replace keys of the task settings chosen for `device`."""
    preset = resolve_nerf_preset(model, overrides)
    task_cfg = dataclasses.replace(preset.task_for(device), **task_overrides)
    if downscale < 1:
        raise NfieldError(f"--downscale must be a positive integer, got {downscale}")
    scene = load_scene(source, downscale, skip_missing_images=skip_missing_images)
    return preset.train, NeRFTask.run_config(scene, downscale, skip_missing_images, preset.field, task_cfg), scene
