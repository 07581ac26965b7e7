"""SDF commands: ``fit-sdf`` and ``mesh`` (which also meshes NeRF runs)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from nfield.cli.options import Overrides, RunFlags, TrainingCommand, describe_default, device_default, train_options
from nfield.flag_hints import PRESET, STATED, hidden_alias
from nfield.presets.sdf import SDF_PRESETS
from nfield.runs.collection import is_collection
from nfield.runs.single import load_run
from nfield.runs.views import extract_mesh
from nfield.tasks.teaching import TeachingConfig

SDFTrainOptions = train_options(SDF_PRESETS)


@dataclass(frozen=True)
class SDFModelOptions(Overrides):
    """Size overrides; unset keys keep the preset's value. Each key goes to the part of the model
    that has it; a key the chosen model does not have is an error."""

    n_lods: Annotated[Optional[int], hidden_alias("--lods")] = None
    """levels of detail (nglod: the finest has 2^(base_lod + n_lods - 1) cells per axis; pins)"""
    base_lod: Annotated[Optional[int], PRESET] = None  # nglod: the coarsest level has 2^base_lod cells per axis
    feature_dim: Annotated[Optional[int], PRESET] = None  # nglod: features per octree corner
    n_neurons: Annotated[Optional[int], hidden_alias("--hidden-dim")] = None
    """width of the MLP (nglod: of each decoder)"""
    n_hidden_layers: Annotated[Optional[int], hidden_alias("--hidden-layers")] = None
    """hidden layers of the MLP (nglod: of each decoder)"""
    n_levels: Annotated[Optional[int], PRESET] = None  # hash, dense: grid levels
    log2_hashmap_size: Annotated[Optional[int], PRESET] = None  # hash: log2 of the rows per hashed level
    base_resolution: Annotated[Optional[int], PRESET] = None  # hash, dense: cells per axis of the coarsest level
    per_level_scale: Annotated[Optional[float], PRESET] = None  # hash, dense: growth of the resolution per level


def _hint(key: str) -> object:
    return tyro.conf.arg(help_behavior_hint=device_default(SDF_PRESETS, key))


@dataclass(frozen=True)
class FitSDF(TrainingCommand):
    """Fit a neural signed distance function to a mesh (OBJ/PLY/STL/OFF/GLB) or an oriented point
    cloud (PLY with normals, XYZ with six columns).

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, mesh.ply (in the input's
    coordinates), render.png and eval.json; prints the final metrics as JSON on the last line.
    """

    shape: tyro.conf.Positional[str]
    """mesh or oriented point cloud file, or a folder or quoted glob ('shapes/*.obj') to fit every shape in it: one run
    directory each under --out, plus index.jsonl"""
    model: Annotated[Optional[str], STATED] = None
    """nglod, siren, hash, dense, relu-pe, or any other fit-image model in 3-D except sape (default nglod)"""
    batch_size: Annotated[Optional[int], _hint("batch_size")] = None  # training points per step
    pool_size: Annotated[Optional[int], _hint("pool_size")] = None  # points with ground-truth distances drawn at once
    mesh_resolution: Annotated[Optional[int], STATED] = None
    """marching-cubes samples per axis for the exported mesh (default: 256)"""
    metric_points: Annotated[Optional[int], STATED] = None
    """surface samples per side for the final Chamfer-L1 and normal consistency (default: 131,072)"""
    preview_width: Annotated[Optional[int], STATED] = None
    """width of the sphere-traced render.png, pixels (default: 640)"""
    preview_height: Annotated[Optional[int], STATED] = None
    """height of the sphere-traced render.png, pixels (default: 360)"""
    sdf_backend: Annotated[Optional[Literal["auto", "triton", "torch", "libigl", "open3d"]], STATED] = None
    """ground-truth distances: auto (triton on CUDA, libigl on CPU), triton, torch, libigl, open3d (default: auto)"""
    eikonal_weight: Annotated[
        Optional[float], tyro.conf.arg(help_behavior_hint=describe_default(SDF_PRESETS, lambda p: p.task.eikonal_weight))
    ] = None
    """weight of the eikonal term"""
    teaching: bool = False
    """INT (nonparametric teaching): each step trains on the pool points with the largest distance error (meshes only)"""
    signals_per_batch: int = 0
    """folders and globs: shapes trained together as one stacked model (0: as many as fit in memory; nglod fits one at
    a time, its octree follows each shape)"""
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[SDFTrainOptions, tyro.conf.OmitArgPrefixes] = SDFTrainOptions()
    model_options: Annotated[SDFModelOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="model")] = SDFModelOptions()

    def __call__(self) -> None:
        keys = (
            "batch_size",
            "pool_size",
            "mesh_resolution",
            "metric_points",
            "preview_width",
            "preview_height",
            "sdf_backend",
            "eikonal_weight",
        )
        task = {key: getattr(self, key) for key in keys}
        task["teaching"] = TeachingConfig(enabled=True) if self.teaching else None
        if is_collection(self.shape):
            self.submit_collection("sdf", self.shape, task, {}, self.signals_per_batch)
        else:
            self.submit("sdf", self.shape, task, {})


@dataclass(frozen=True)
class Mesh:
    """Extract the fitted surface by marching cubes, in the input's coordinates.

    NeRF runs (train-nerf, distill): the surface where the field's density crosses --level, over
    the scene box, with vertex colours from the field seen from outside; only occupied cells of
    the occupancy grid are evaluated, a slab of the grid at a time.
    """

    run_dir: tyro.conf.Positional[Path]  # a run directory written by fit-sdf, train-nerf or distill
    resolution: int = 256
    """samples per axis over the normalised box (SDF) or the scene box (NeRF); memory grows with its square"""
    lod: Annotated[Optional[int], STATED] = None  # SDF runs: level of detail (default the finest)
    level: Annotated[Optional[float], STATED] = None
    """NeRF runs: density threshold, per world unit of length (default: ln 2 / the run's sample step, the density at
    which one render sample is half opaque: 136.6 for the Blender box at 1024 steps per ray, 25.6 for vanilla)"""
    out: Annotated[Optional[Path], STATED] = None
    """output mesh: SDF runs .ply/.obj/.stl/.off/.glb (default RUN_DIR/mesh_r<resolution>[_lod<k>].ply);
    NeRF runs: .ply/.obj/.glb with vertex colours (default RUN_DIR/mesh_r<resolution>.ply)"""
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True  # show the progress bar

    def __call__(self) -> None:
        run = load_run(self.run_dir, self.device)
        print(extract_mesh(run, self.resolution, self.lod, self.out, self.progress, level=self.level), file=sys.stderr)
