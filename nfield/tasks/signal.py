"""Signal tasks: a field fitted to the samples of a signal on a regular grid.

A signal is known by its values at the points of a regular grid: an image by its pixels (2-D), a
sound by its samples (1-D, time), a video by its voxels (3-D, the pixels of every frame). Its task
fits a `Field` that maps a grid point's coordinates in [-1, 1]^d to the C values there, on batches
of those samples, and scores it by rendering the grid again.

`SignalTask` holds what the image, audio and video tasks share: the field and its optimiser's
parameter groups, the sampler's own generator (seeded by the run's seed, `recorded_seed`), the
teacher (INT, `nfield.tasks.teaching`) and gradient adjuster (IGA,
`nfield.tasks.gradient_adjustment`) their settings ask for, the trainer's progress, the checkpoint
state (the generator's state and the teacher's picks), and a run's config.json (building the task
from it, its part of a new run's config, the line that describes the fit). Each task keeps what
differs: its data and how it is loaded, how it samples a batch, its loss, its evaluation, its
renders and the files it writes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, TypeVar

import torch

from nfield.components import config_from_dict
from nfield.errors import NfieldError
from nfield.fields import Field, FieldConfig, field_config_from_dict, field_config_to_dict
from nfield.tasks.gradient_adjustment import GradientAdjuster
from nfield.tasks.teaching import Teacher, load_sampler_state, sampler_state

SignalTaskT = TypeVar("SignalTaskT", bound="SignalTask")


def recorded_seed(config: dict[str, Any]) -> int:
    """The seed of a run's config.json: its train section's, or the top-level one of runs written
    before 0.3 (0 where neither is recorded)."""
    return config["train"].get("seed", config.get("seed", 0))


class SignalTask(ABC):
    """Fit a signal's samples on a regular grid with a `Field` of `in_dim` inputs (the grid's
    coordinates in [-1, 1]) and `out_dim` outputs (the values at each grid point).

    Subclasses set the class attributes below, load and sample their data, and compute their loss,
    evaluation, renders and exported files. `from_config` builds one as
    ``cls(data, field_cfg, cfg, device=device, seed=seed, **cls._options_without_data(config))``.

    Args:
        signal: the samples fitted, already where the task keeps them; None builds the task
            without its data, enough to render a trained field.
        in_dim: the field's inputs, the grid's dimensions.
        out_dim: the field's outputs, the values (channels) at each grid point.
        field_cfg: the field to fit.
        cfg: the task's settings (a `config_class`; its `teaching` and `gradient_adjustment` say
            whether to train with INT and IGA).
        device: where training runs.
        seed: seeds the sampler's own generator (its state is saved in checkpoints, with the teacher's picks).
    """

    #: The command that fits the signal ("fit-image").
    name: str
    #: config.json's "task", and the name of its section that describes the data.
    kind: str
    #: The task's settings, config.json's "task_config" (a frozen dataclass).
    config_class: type
    #: What the data is called in messages ("image", "clip", "video").
    data_noun: str
    #: The files `write_outputs` writes, relative to the run directory.
    output_files: tuple[str, ...]
    #: Where the sampler's generator draws: None for the task's device, "cpu" for data kept on the CPU.
    sampler_device: str | None = None

    def __init__(
        self,
        signal: Any,
        in_dim: int,
        out_dim: int,
        field_cfg: FieldConfig,
        cfg: Any,
        device: torch.device | str,
        seed: int,
    ):
        self.cfg, self.device, self.signal = cfg, torch.device(device), signal
        self.model = Field(in_dim, out_dim, field_cfg).to(self.device)
        self.generator = torch.Generator(self.sampler_device or self.device)
        self.generator.manual_seed(seed)
        self.teacher = Teacher(cfg.teaching) if cfg.teaching.enabled else None
        self.adjuster = GradientAdjuster(cfg.gradient_adjustment) if cfg.gradient_adjustment.enabled else None
        self.step, self.total = 0, 1  # set by `update` (the teacher's schedules need both)

    # --- a run directory's task ---------------------------------------------------------------
    @classmethod
    def _config_part(cls, data: dict[str, Any], field_cfg: FieldConfig, cfg: Any) -> dict[str, Any]:
        """The task's part of a new run's config.json: the data's section `data` (under `kind`),
        the field and the task settings."""
        return {cls.kind: data, "field": field_config_to_dict(field_cfg), "task_config": dataclasses.asdict(cfg)}

    @classmethod
    def from_config(cls: type[SignalTaskT], config: dict[str, Any], device: torch.device | str, data: Any = None) -> SignalTaskT:
        """The task a run's config.json describes (untrained), on `data` (None: without its data)."""
        cfg = config_from_dict(cls.config_class, config.get("task_config", {}))
        field_cfg = field_config_from_dict(config["field"])
        return cls(data, field_cfg, cfg, device=device, seed=recorded_seed(config), **cls._options_without_data(config))

    @classmethod
    def _options_without_data(cls, config: dict[str, Any]) -> dict[str, Any]:
        """What the constructor needs, beyond the task's settings, to build the task without its
        data: the output channels its data's section of config.json records."""
        return {"channels": int(config[cls.kind]["channels"])}

    def describe(self) -> str:
        """One line on what is fitted with what (the command line prints it before training)."""
        n_params = sum(p.numel() for p in self.model.parameters())
        model = [f"{type(self.model.encoding).__name__} -> {type(self.model.network).__name__}", f"{n_params:,} parameters"]
        return f"fitting {self._data().source} ({self._data_summary()}) [{', '.join(model + self._batch_summary())}]"

    @abstractmethod
    def _data_summary(self) -> str:
        """The data's size, in `describe`'s line (e.g. "512x512x3")."""

    def _batch_summary(self) -> list[str]:
        """What `describe` says of the batches after the field's size (nothing by default)."""
        return []

    def outputs(self) -> list[str]:
        """The files `write_outputs` writes, relative to the run directory."""
        return list(self.output_files)

    def _data(self) -> Any:
        """The signal fitted; refused for a task built without it."""
        if self.signal is None:
            raise NfieldError(f"this {self.kind} task was loaded without its {self.data_noun}; load the run with its data")
        return self.signal

    # --- the trainer's interface -------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """One Adam parameter group: every parameter of the field."""
        return [{"params": list(self.model.parameters())}]

    def update(self, step: int, total: int) -> None:
        """The trainer's progress (the teacher's schedules depend on it)."""
        self.step, self.total = step, total

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's task state: the sampler's (`sampler_state`)."""
        return sampler_state(self.generator, self.teacher)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict`'s state."""
        load_sampler_state(state, self.generator, self.teacher, self.device)
