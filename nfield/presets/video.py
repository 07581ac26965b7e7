"""Named video models: fields over (x, y, t), at comparable size.

- ``hash`` (default): a multiresolution hash grid over (x, y, t) (16 levels, 2^19 rows, finest
  level the frames' larger side) -> MLP 64 x 2, lr 1e-2. A video holds many times the samples of
  an image, and grids fit many samples fastest, which is why they are the default here.
- ``siren``: SIREN 256 x 4 (w0 = 30, as in the paper's video experiment, there 1024 wide), lr 1e-4.
- ``relu-pe``: NeRF positional encoding (10 octaves) -> ReLU MLP 256 x 3, lr 1e-3.

Every preset trains 2000 steps on a cosine schedule; steps draw 2^18 random pixels across all
frames on a GPU, 2^15 on the CPU; the periodic evaluation scores 8 frames (``nfield eval`` all).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from nfield.data.video import Video, load_video
from nfield.encodings import FrequencyConfig, HashGridConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig, SirenConfig
from nfield.presets import Preset, apply_overrides, mapped_field, preset_fields, split_target_range
from nfield.presets.families import family_preset
from nfield.presets.image import IMAGE_PRESETS, grid_scale_for
from nfield.tasks.video import VideoTask, VideoTaskConfig
from nfield.training.trainer import TrainConfig

_TRAIN = TrainConfig(steps=2000, lr_schedule="cosine", eval_every=500)
_TASK = VideoTaskConfig(batch_size=2**18, eval_frames=8)
_CPU = {"batch_size": 2**15}


def _preset(field: FieldConfig, lr: float, description: str, mixed_precision: bool = True) -> Preset:
    return Preset(field, dataclasses.replace(_TRAIN, lr=lr, mixed_precision=mixed_precision), _TASK, description, _CPU)


VIDEO_PRESETS: dict[str, Preset] = {
    "hash": _preset(
        FieldConfig(
            HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=19),
            MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu"),
        ),
        1e-2,
        "multiresolution hash grid over (x, y, t) + 64x2 MLP",
    ),
    "siren": _preset(
        FieldConfig(IdentityConfig(), SirenConfig(n_neurons=256, n_hidden_layers=4)), 1e-4, "SIREN 256 x 4", mixed_precision=False
    ),
    "relu-pe": _preset(
        FieldConfig(FrequencyConfig(n_frequencies=10), MLPConfig(n_neurons=256, n_hidden_layers=3, activation="relu")),
        1e-3,
        "ReLU MLP on positional encoding",
    ),
}
DEFAULT_MODEL = "hash"


def video_models() -> list[str]:
    """Every model fit-video takes: its own presets, then the other image families."""
    return [*VIDEO_PRESETS, *(f for f in IMAGE_PRESETS if f not in VIDEO_PRESETS)]


def resolve_video_preset(name: str, overrides: dict[str, Any], height: int, width: int) -> Preset:
    """The preset `name` with `overrides` applied and the grid's finest level fitted to the frames."""
    if name in VIDEO_PRESETS:
        preset = VIDEO_PRESETS[name]
    elif name in IMAGE_PRESETS:  # any other image family over (x, y, t) (`nfield.presets.families`)
        preset = family_preset(name, 3, "video", max(height, width), VIDEO_PRESETS["relu-pe"])
    else:
        raise NfieldError(f"unknown model '{name}'; choose one of: {', '.join(video_models())}")
    field = apply_overrides(preset.field, overrides, name, others=preset_fields(VIDEO_PRESETS))
    if isinstance(field.encoding, HashGridConfig) and "per_level_scale" not in overrides:
        scale = grid_scale_for(field.encoding, max(height, width))
        field = FieldConfig(dataclasses.replace(field.encoding, per_level_scale=scale), field.network)
    return dataclasses.replace(preset, field=field)


def new_video_run(
    source: str,
    model: str,
    overrides: dict[str, Any],
    task_overrides: dict[str, Any],
    device: torch.device,
    downscale: int = 1,
    max_frames: int | None = None,
) -> tuple[TrainConfig, dict[str, Any], Video]:
    """A new video run from the preset `model`: (its training config, the task's part of config.json,
    the loaded video). `task_overrides` replace keys of the task settings chosen for `device`."""
    video = load_video(source, downscale, max_frames)
    field_overrides, target_range = split_target_range(overrides)
    preset = resolve_video_preset(model, field_overrides, video.height, video.width)
    task_cfg = dataclasses.replace(preset.task_for(device), **task_overrides)
    field_cfg = mapped_field(preset, target_range, (0.0, 1.0))  # frames in [0, 1]
    return preset.train, VideoTask.run_config(video, downscale, field_cfg, task_cfg), video
