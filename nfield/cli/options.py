"""Options shared by the training commands."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from nfield.errors import NfieldError
from nfield.train import TrainConfig


@dataclass(frozen=True)
class TrainOptions:
    """Training overrides; unset keys keep the model's default (or, with --resume, the run's)."""

    steps: Optional[int] = None  # total steps of the run (default 2000)
    lr: Optional[float] = None  # peak learning rate (default: the model's)
    lr_schedule: Optional[Literal["constant", "cosine", "exponential"]] = None  # learning-rate schedule (default cosine)
    lr_warmup_steps: Optional[int] = None  # steps of linear warm-up (default 0)
    lr_final_factor: Optional[float] = None  # final lr relative to the peak (default 0.1)
    grad_clip: Optional[float] = None  # max gradient norm, 0 = off
    mixed_precision: Optional[Literal["on", "off"]] = None  # float16 autocast on CUDA (default: on where the model tolerates it)
    eval_every: Optional[int] = None  # steps between evaluations (default 500)
    checkpoint_every: Optional[int] = None  # steps between checkpoints (default 500)
    keep_checkpoints: Optional[int] = None  # checkpoints kept on disk (default 2)
    log_every: Optional[int] = None  # steps between metrics.jsonl lines (default 25)
    backend: Optional[Literal["auto", "torch", "triton", "tcnn"]] = (
        None  # implementation of grids, MLPs and rendering (default auto: Triton kernels on CUDA)
    )

    def apply(self, base: TrainConfig, progress: bool = True) -> TrainConfig:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "mixed_precision" in given:
            given["mixed_precision"] = given["mixed_precision"] == "on"
        given["progress"] = progress
        if "steps" in given and given["steps"] <= 0:
            raise NfieldError(f"--steps must be a positive number of steps, got {given['steps']}")
        return dataclasses.replace(base, **given)
