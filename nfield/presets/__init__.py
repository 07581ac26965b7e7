"""Recommended configurations, whole: one module per task (`image`, `sdf`, `nerf`).

A `Preset` is everything a new run of a named model starts from: the field, the training schedule
(steps, learning rate, schedule, mixed precision, evaluation cadence) and the task's settings. Batch
sizes are chosen by device: the task settings are sized for a GPU, and `Preset.cpu` holds the
smaller values a CPU run uses instead, so a first run on a laptop takes minutes, not hours.
The command line shows these values as its defaults and overrides them key by key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from nfield.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A named model: field config, training schedule, task settings (for a GPU) and their CPU sizes."""

    field: Any
    train: TrainConfig
    task: Any
    description: str
    cpu: dict[str, Any] = dataclasses.field(default_factory=dict)  # task settings replaced on the CPU

    def task_for(self, device: torch.device | str) -> Any:
        """The task settings for `device`: `task`, with `cpu`'s values on a CPU."""
        if torch.device(device).type == "cpu" and self.cpu:
            return dataclasses.replace(self.task, **self.cpu)
        return self.task


__all__ = ["Preset"]
