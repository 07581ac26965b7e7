"""Recommended configurations, whole: one module per task (`image`, `sdf`, `nerf`).

A `Preset` is everything a new run of a named model starts from: the field, the training schedule
(steps, learning rate, schedule, mixed precision, evaluation cadence) and the task's settings. Batch
sizes are chosen by device: the task settings are sized for a GPU, and `Preset.cpu` holds the
smaller values a CPU run uses instead, so a first run on a laptop takes minutes, not hours.
The command line shows these values as its defaults and overrides them key by key: each key a user
set goes to the (nested) config field that has it (`apply_overrides`), and a key the chosen model
does not have is refused in one line naming the flag and the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from nfield.components import apply_overrides
from nfield.fields import FieldConfig
from nfield.fields.field import output_map
from nfield.training.trainer import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A named model: field config, training schedule, task settings (for a GPU) and their CPU sizes."""

    field: Any
    train: TrainConfig
    task: Any
    description: str
    cpu: dict[str, Any] = dataclasses.field(default_factory=dict)  # task settings replaced on the CPU
    # (lo, hi): the range the network's targets are mapped to, as its paper's code does (None: the
    # signal's own units); the field maps its outputs back (`nfield.fields.field.output_map`)
    target_range: tuple[float, float] | None = None

    def task_for(self, device: torch.device | str) -> Any:
        """The task settings for `device`: `task`, with `cpu`'s values on a CPU."""
        if torch.device(device).type == "cpu" and self.cpu:
            return dataclasses.replace(self.task, **self.cpu)
        return self.task


def preset_fields(presets: dict[str, Preset]) -> dict[str, Any]:
    """Model name -> field config of `presets`: the `others` of `apply_overrides`, so that a key the
    chosen model does not have is refused naming the models that do."""
    return {name: preset.field for name, preset in presets.items()}


def split_target_range(overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple[float, float] | None]:
    """(the model overrides without ``target_range``, ``--target-range``'s (lo, hi) or None): the
    range belongs to the field's output map, not to its encoding or network."""
    rest = dict(overrides)
    return rest, rest.pop("target_range", None)


def mapped_field(preset: Preset, target_range: tuple[float, float] | None, signal_range: tuple[float, float]) -> FieldConfig:
    """The preset's field with the output map (`nfield.fields.field.output_map`) under which its
    network learns a signal in `signal_range` within `target_range` (None: the preset's own, and
    when the preset has none, the field unmapped)."""
    target_range = target_range or preset.target_range
    if target_range is None:
        return preset.field
    return dataclasses.replace(preset.field, **output_map(signal_range, target_range))


__all__ = ["Preset", "apply_overrides", "mapped_field", "preset_fields", "split_target_range"]
