"""Named SDF models: one preset per field family, with its authors' learning rate and loss.

- ``nglod``: NGLOD's sparse octree (LODs 2^2..2^6 cells per axis by default, 32 features per
  corner) with a 128-wide one-hidden-layer decoder per LOD, as in the paper.
- ``siren``: SIREN with 3 hidden sine layers of 256 (the paper's SDF network), plus an eikonal term.
- ``hash``: instant-ngp's multiresolution hash grid (16 levels up to 2048 cells per axis, 2^19 rows)
  and a 64 x 2 ReLU MLP.
- ``dense``: dense multiresolution grids (6 levels up to 128 cells per axis) and the same MLP.
- ``relu-pe``: a ReLU MLP on NeRF positional encoding (DeepSDF-sized, 256 x 4), a baseline.

Every preset trains 2000 steps on a cosine schedule in float32; `resolve_sdf_preset` applies the
command line's size overrides (``--n-lods``, ``--base-lod``, ``--n-neurons``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from nfield.data.meshes import Shape, load_shape
from nfield.encodings import DenseGridConfig, FrequencyConfig, HashGridConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.fields.sdf import NGLODConfig, SDFFieldConfig
from nfield.geometry.marching_cubes import check_extraction_memory
from nfield.networks import MLPConfig, SirenConfig
from nfield.presets import Preset, apply_overrides, preset_fields
from nfield.presets.families import NOT_FOR, family_preset
from nfield.presets.image import IMAGE_PRESETS
from nfield.tasks.sdf import SDFTask, SDFTaskConfig
from nfield.training.trainer import TrainConfig

#: Steps and schedule of every SDF preset (full precision: distances near the surface are small).
_TRAIN = TrainConfig(steps=2000, lr_schedule="cosine", eval_every=500, mixed_precision=False)
#: Points per step and per ground-truth pool: GPU sizes, and the CPU's (a 65,536-point step of NGLOD
#: takes about 3 s on two cores; 8,192 points about 0.4 s).
_TASK = SDFTaskConfig(batch_size=2**16, pool_size=2**19)
_CPU = {"batch_size": 2**13, "pool_size": 2**17}
_SMALL_MLP = MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu")


def _preset(field: SDFFieldConfig, lr: float, description: str, eikonal_weight: float = 0.0) -> Preset:
    task = dataclasses.replace(_TASK, eikonal_weight=eikonal_weight)
    return Preset(field, dataclasses.replace(_TRAIN, lr=lr), task, description, _CPU)


SDF_PRESETS: dict[str, Preset] = {
    "nglod": _preset(NGLODConfig(), 5e-3, "NGLOD: sparse octree features with levels of detail"),
    "siren": _preset(
        FieldConfig(IdentityConfig(), SirenConfig(n_neurons=256, n_hidden_layers=3)),
        1e-4,
        "SIREN: sine activations, w0 = 30",
        eikonal_weight=0.1,
    ),
    "hash": _preset(
        FieldConfig(HashGridConfig(n_levels=16, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.4), _SMALL_MLP),
        1e-2,
        "instant-ngp multiresolution hash grid + 64x2 MLP",
    ),
    "dense": _preset(
        FieldConfig(DenseGridConfig(n_levels=6, n_features_per_level=4, base_resolution=4, per_level_scale=2.0), _SMALL_MLP),
        1e-2,
        "dense multiresolution grids + 64x2 MLP",
    ),
    "relu-pe": _preset(
        FieldConfig(FrequencyConfig(n_frequencies=6), MLPConfig(n_neurons=256, n_hidden_layers=4)),
        5e-4,
        "ReLU MLP on positional encoding (baseline)",
    ),
}
DEFAULT_MODEL = "nglod"
#: Override keys of runs before 0.3 (collection.json's "overrides", once "model_options"; scripts) -> their current names.
_RENAMED = {"lods": "n_lods"}


#: Image families with periodic activations, trained with SIREN's SDF eikonal weight.
_PERIODIC = ("spder", "wire", "finer", "gauss")
#: Cells per axis the other families' grids, planes and lattices reach over the normalised box.
FAMILY_RESOLUTION = 256


def sdf_models() -> list[str]:
    """Every model fit-sdf takes: its own presets, then the image families that apply to SDFs."""
    return [*SDF_PRESETS, *(f for f in IMAGE_PRESETS if f not in SDF_PRESETS and f not in NOT_FOR["sdf"])]


def resolve_sdf_preset(name: str, overrides: dict[str, Any]) -> Preset:
    """The preset `name` with size `overrides` applied, each to the part of the field that has it
    (`apply_overrides`): ``n_lods``, ``base_lod``, ``feature_dim`` (NGLOD's octree), ``n_neurons`` and
    ``n_hidden_layers`` (the MLP, or each NGLOD decoder), and any key of the other models' encoding or
    network (``n_levels``, ``log2_hashmap_size``, ...); a key the model does not have is refused."""
    if name in SDF_PRESETS:
        preset = SDF_PRESETS[name]
    elif name in IMAGE_PRESETS and name not in NOT_FOR["sdf"]:
        # any other image family in 3-D (`nfield.presets.families`); periodic activations get SIREN's eikonal term
        base = SDF_PRESETS["siren" if name in _PERIODIC else "relu-pe"]
        preset = family_preset(name, 3, "sdf", FAMILY_RESOLUTION, base)
    else:
        why = f" ({name}: {NOT_FOR['sdf'][name]})" if name in NOT_FOR["sdf"] else ""
        raise NfieldError(f"unknown model '{name}'{why}; choose one of: {', '.join(sdf_models())}")
    overrides = {_RENAMED.get(key, key): value for key, value in overrides.items()}
    field = apply_overrides(preset.field, overrides, name, others=preset_fields(SDF_PRESETS))
    return dataclasses.replace(preset, field=field)


def new_sdf_run(
    source: str, model: str, overrides: dict[str, Any], task_overrides: dict[str, Any], device: torch.device
) -> tuple[TrainConfig, dict[str, Any], Shape]:
    """A new SDF run from the preset `model`: (its training config, the task's part of config.json,
    the loaded shape). `task_overrides` replace keys of the task settings chosen for `device`."""
    preset = resolve_sdf_preset(model, overrides)
    task_cfg = dataclasses.replace(preset.task_for(device), **task_overrides)
    check_extraction_memory(task_cfg.mesh_resolution)
    shape = load_shape(source)
    return preset.train, SDFTask.run_config(shape, preset.field, task_cfg), shape
