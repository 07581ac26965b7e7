"""Nonparametric teaching (INT): train each step on the samples the field currently fits worst.

Zhang, Luo, Li, Wu & Wong, "Nonparametric Teaching of Implicit Neural Representations", ICML 2024.
A teacher that sees the whole signal picks, every so often, the fraction `ratio` of the candidate
samples with the largest current error |f(x) - y|^2 (a forward pass without gradients), and the
learner trains on those until the next pick. Both knobs follow the official code's defaults:

- the selected fraction grows by the "step" schedule: `start_ratio` (0.2) for the first tenth of
  training, then 1/10 of the way to 1 more at each tenth (``linear``, ``cosine`` and ``constant``
  schedules too);
- picks happen every step during the first quarter of training and the first fifth of the rest,
  then every `interval` steps, where interval grows in `n_increments` stages up to `max_interval`
  (the official "incremental" strategy; ``every-step`` re-picks at each step).

`Teacher` is task-agnostic: a task hands it candidate (inputs, targets) and an index naming each
candidate, and trains on what it returns. The picked indices are part of the task's checkpoint
state, so a resumed run trains on exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from nfield.distributed import all_gather_blocks, shard
from nfield.errors import NfieldError

SCHEDULES = ("step", "linear", "cosine", "constant")
REFRESHES = ("incremental", "every-step")


@dataclass(frozen=True)
class TeachingConfig:
    enabled: bool = False  # train on the worst-fitted samples (INT) instead of uniform ones
    start_ratio: float = 0.2  # fraction of the candidates picked at the start
    schedule: str = "step"  # how the fraction grows to 1: step, linear, cosine, constant
    n_stages: int = 10  # stages of the step schedule
    refresh: str = "incremental"  # when picks are renewed: incremental (the paper's) or every-step
    startup_fraction: float = 0.25  # incremental: training fraction during which every step picks
    max_interval: int = 50  # incremental: the longest interval between picks, in steps
    n_increments: int = 5  # incremental: stages in which the interval grows

    def __post_init__(self) -> None:
        if not 0 < self.start_ratio <= 1:
            raise NfieldError(f"teaching.start_ratio must lie in (0, 1], got {self.start_ratio}")
        if self.schedule not in SCHEDULES or self.refresh not in REFRESHES:
            raise NfieldError(f"teaching: schedule is one of {SCHEDULES}, refresh one of {REFRESHES}")
        if min(self.n_stages, self.max_interval, self.n_increments) < 1 or not 0 <= self.startup_fraction < 1:
            raise NfieldError("teaching: n_stages, max_interval and n_increments must be >= 1, startup_fraction in [0, 1)")


def selection_ratio(step: int, total: int, cfg: TeachingConfig) -> float:
    """The fraction of candidates picked at `step` (0-based) of `total`, in (0, 1]."""
    t, start = step / max(total, 1), cfg.start_ratio
    if cfg.schedule == "step":
        return min(start + math.floor(t * cfg.n_stages) * (1 - start) / cfg.n_stages, 1.0)
    if cfg.schedule == "linear":
        return start + t * (1 - start)
    if cfg.schedule == "cosine":
        return 1 - 0.5 * (1 - start) * (1 + math.cos(math.pi * t))
    return start


def pick_interval(step: int, total: int, cfg: TeachingConfig) -> int:
    """Steps between picks around `step`: 1 while training starts up, then growing in
    `n_increments` stages (the official incremental strategy); 1 throughout for every-step."""
    if cfg.refresh == "every-step":
        return 1
    startup = int(total * cfg.startup_fraction)
    stage_length = max((total - startup) // cfg.n_increments, 1)
    if step < startup or step < stage_length:
        return 1
    stage = max(1, step - startup) // stage_length + 1
    return max(1, (cfg.max_interval // cfg.n_increments) * stage)


class Teacher:
    """Picks the worst-fitted candidates for a task (see the module docstring).

    Attributes:
        picked: (K,) int64 indices of the candidates trained on now (None before the first pick).
        picked_at: the step of the last pick.
    """

    def __init__(self, cfg: TeachingConfig):
        self.cfg = cfg
        self.picked: torch.Tensor | None = None
        self.picked_at = -1

    def due(self, step: int, total: int) -> bool:
        """Whether `step` picks anew (always when nothing is picked yet)."""
        return self.picked is None or step % pick_interval(step, total, self.cfg) == 0

    @torch.no_grad()
    def pick(
        self, step: int, total: int, index: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, field: Callable
    ) -> torch.Tensor:
        """The indices (from `index` (N,)) of the `selection_ratio` share of candidates `inputs`
        (N, D) whose squared error against `targets` (N, C) under `field` is largest; remembered.

        In data-parallel training every rank passes all N candidates and scores its own block of
        them; the scores are gathered, so every rank picks the same indices one process would.
        """
        error = (field(shard(inputs)).float() - shard(targets).float()).square().mean(dim=-1)
        error = all_gather_blocks(error)
        k = max(1, round(selection_ratio(step, total, self.cfg) * len(index)))
        self.picked, self.picked_at = index[error.topk(k, sorted=False).indices], step
        return self.picked

    def state_dict(self) -> dict[str, Any]:
        return {"picked": None if self.picked is None else self.picked.cpu(), "picked_at": self.picked_at}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.picked = None if state["picked"] is None else state["picked"].to(device)
        self.picked_at = state["picked_at"]


def sampler_state(generator: torch.Generator, teacher: Teacher | None) -> dict[str, Any]:
    """A task's sampling state for its checkpoint: {"generator": the sampler's generator state (uint8
    tensor), and with teaching "teacher": the teacher's picks}."""
    state = {"generator": generator.get_state()}
    if teacher is not None:
        state["teacher"] = teacher.state_dict()
    return state


def load_sampler_state(state: dict[str, Any], generator: torch.Generator, teacher: Teacher | None, device: torch.device) -> None:
    """Resume `sampler_state`'s state (a checkpoint without the teacher's picks leaves it to pick anew)."""
    generator.set_state(state["generator"])
    if teacher is not None and "teacher" in state:
        teacher.load_state_dict(state["teacher"], device)
