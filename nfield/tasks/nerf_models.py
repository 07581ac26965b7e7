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
from dataclasses import dataclass
from typing import Literal, Optional

from nfield.encodings import GaussianFourierConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig
from nfield.fields.radiance import GenericRadianceConfig, NGPFieldConfig, VanillaNeRFConfig
from nfield.networks import MLPConfig, SirenConfig
from nfield.tasks.nerf import NeRFTaskConfig


@dataclass(frozen=True)
class NeRFModel:
    """A named preset: the field config, its sampler and its optimiser settings."""

    field: object
    sampler: Literal["occupancy", "hierarchical"]
    lr: float
    description: str
    mixed_precision: bool = True


NERF_MODELS: dict[str, NeRFModel] = {
    "ngp": NeRFModel(NGPFieldConfig(), "occupancy", 1e-2, "instant-ngp: hash grid + tiny MLPs, occupancy-grid marching"),
    "vanilla": NeRFModel(
        VanillaNeRFConfig(), "hierarchical", 5e-4, "NeRF: 8x256 MLP on positional encoding, coarse + fine", mixed_precision=False
    ),
    "kilonerf": NeRFModel(
        KiloNeRFConfig(),
        "occupancy",
        5e-3,
        "KiloNeRF: a 16-cell grid of tiny 32-wide MLPs, trained directly from images",
        mixed_precision=False,
    ),
    "siren": NeRFModel(
        GenericRadianceConfig(encoding=IdentityConfig(), network=SirenConfig(n_neurons=128, n_hidden_layers=3)),
        "occupancy",
        1e-4,
        "SIREN geometry network with NGP's colour head",
        mixed_precision=False,
    ),
    "fourier": NeRFModel(
        GenericRadianceConfig(
            encoding=GaussianFourierConfig(n_features=128, sigma=8.0), network=MLPConfig(n_neurons=128, n_hidden_layers=3)
        ),
        "occupancy",
        1e-3,
        "Gaussian Fourier features + ReLU MLP with NGP's colour head",
    ),
}


@dataclass(frozen=True)
class NeRFModelOptions:
    """Size and sampling overrides; unset keys keep the preset's value."""

    n_levels: Optional[int] = None  # ngp: hash-grid levels
    log2_hashmap_size: Optional[int] = None  # ngp: log2 of the rows per hashed level
    grid_resolution: Optional[int] = None  # occupancy grid cells per axis
    grid_warmup: Optional[int] = None  # steps during which every occupancy cell is refreshed
    steps_per_ray: Optional[int] = None  # occupancy marching: steps across the box's diagonal
    n_samples: Optional[int] = None  # hierarchical: coarse samples per ray
    n_importance: Optional[int] = None  # hierarchical: fine samples per ray
    longest_axis_cells: Optional[int] = None  # kilonerf: cells along the box's longest axis

    def given(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def apply(self, cfg: NeRFTaskConfig) -> NeRFTaskConfig:
        """`cfg` with the sampling overrides applied."""
        given = self.given()
        occupancy = cfg.occupancy
        if "grid_resolution" in given:
            occupancy = dataclasses.replace(occupancy, resolution=given["grid_resolution"])
        if "grid_warmup" in given:
            occupancy = dataclasses.replace(occupancy, warmup_steps=given["grid_warmup"])
        keys = {k: given[k] for k in ("steps_per_ray", "n_samples", "n_importance") if k in given}
        return dataclasses.replace(cfg, occupancy=occupancy, **keys)


def resolve_nerf_model(name: str, options: NeRFModelOptions = NeRFModelOptions()) -> NeRFModel:
    """The preset `name` with the field-size `options` applied (hash-grid keys for ngp only)."""
    if name not in NERF_MODELS:
        raise NfieldError(f"unknown model '{name}'; choose one of: {', '.join(NERF_MODELS)}")
    model, given = NERF_MODELS[name], options.given()
    if "longest_axis_cells" in given:
        if not isinstance(model.field, KiloNeRFConfig):
            raise NfieldError("--longest-axis-cells applies to the kilonerf model only")
        model = dataclasses.replace(model, field=dataclasses.replace(model.field, longest_axis_cells=given["longest_axis_cells"]))
    grid_keys = {k: given[k] for k in ("n_levels", "log2_hashmap_size") if k in given}
    if grid_keys:
        if not isinstance(model.field, NGPFieldConfig):
            raise NfieldError(f"--{next(iter(grid_keys)).replace('_', '-')} applies to the ngp model only")
        model = dataclasses.replace(
            model, field=dataclasses.replace(model.field, grid=dataclasses.replace(model.field.grid, **grid_keys))
        )
    return model
