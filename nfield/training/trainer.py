"""One training loop for every task.

The trainer drives a `Task` (image fitting, SDF fitting, NeRF...): it samples a batch, asks the
task for the loss, steps Adam under a learning-rate schedule (with mixed precision on CUDA when
enabled), calls ``update(step, total)`` on every progress-aware module, seeds its random streams from
``cfg.seed`` when a run starts, shows a tqdm progress bar (and, when a run will take over a minute,
how long after its first steps),
evaluates periodically, appends to ``metrics.jsonl``, tells its observers after each step and when
the run ends or is interrupted (the live viewer; the curves `nfield.runs.plots` draws), writes atomic checkpoints and resumes from
them exactly, and stops with a clear message (keeping the last good checkpoint) if the loss stops
being finite.

Example::

    >>> trainer = Trainer(task, TrainConfig(steps=300), run_dir=Path("runs/image/demo"))
    >>> final_metrics = trainer.fit()
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nfield.backends import BACKENDS, backends_in_use, choose_backend, reset_backends, set_backend
from nfield.distributed import all_reduce_, average_gradients, data_parallel, main_first, writes_run_files
from nfield.errors import Interrupted, NfieldError, TrainingDiverged
from nfield.progress import exclude_from_rate, progress_bar
from nfield.run_directory import RunDirectory, append_metrics, truncate_metrics
from nfield.training.checkpoint import load_model_weights, load_trainer_state, save_checkpoint

#: Steps timed (after the first, which warms up) before the trainer says how long the run will take...
ESTIMATE_AFTER_STEPS = 5
#: ...and seconds they must span at least, so that fast steps are timed over many (unless the run ends first).
ESTIMATE_AFTER_SECONDS = 3.0
#: The recent pace is the mean over at least this many of the last steps (two occupancy-grid updates).
ESTIMATE_WINDOW_STEPS = 32
#: A run shorter than this, in seconds, gets no estimate.
ESTIMATE_WORTH_SECONDS = 60.0
#: A new estimate is said when the remaining time moves this share away from the last one said.
ESTIMATE_CORRECTION = 0.25


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # total optimisation steps of the run (a resumed run continues up to this)
    lr: float = 1e-3  # peak learning rate (parameter groups may scale it)
    lr_schedule: Literal["constant", "cosine", "exponential"] = "cosine"
    lr_warmup_steps: int = 0  # linear warm-up from 0
    lr_final_factor: float = 0.1  # lr at the last step relative to lr (cosine, exponential)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-15  # instant-ngp's value; keeps hash-table updates sharp
    grad_clip: float = 0.0  # max global gradient norm; 0 disables
    mixed_precision: bool = True  # float16 autocast + gradient scaling on CUDA; ignored on CPU
    eval_every: int = 500  # steps between evaluations (0: only at the end)
    checkpoint_every: int = 500  # steps between checkpoints (0: only at the end)
    checkpoint_seconds: float = 60.0  # also checkpoint at the first log step this much training time after the last (0: off)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    log_every: int = 25  # steps between metrics.jsonl lines and progress-bar updates
    seed: int = 0  # seeds the model's initialisation (by whoever builds it) and the trainer's random streams
    progress: bool = True  # show the tqdm progress bar
    backend: str = "auto"  # force every component with several implementations onto one: torch, triton, tcnn (auto: each its own)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise NfieldError(f"--steps must be a positive number of steps, got {self.steps}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise NfieldError(f"--lr must be a positive finite number, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine", "exponential"):
            raise NfieldError(f"unknown --lr-schedule '{self.lr_schedule}'; use constant, cosine or exponential")
        if not 0 < self.lr_final_factor <= 1:
            raise NfieldError(f"--lr-final-factor must be in (0, 1], got {self.lr_final_factor}")
        if not self.checkpoint_seconds >= 0:
            raise NfieldError(f"--checkpoint-seconds must be >= 0 (0: off), got {self.checkpoint_seconds}")
        for name in ("eval_every", "checkpoint_every", "lr_warmup_steps", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise NfieldError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.log_every <= 0:
            raise NfieldError(f"--log-every must be positive, got {self.log_every}")
        if self.backend not in BACKENDS:
            raise NfieldError(f"unknown --backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")


class Task(Protocol):
    """What the trainer needs from a task (see nfield/tasks/).

    ``model`` holds every trainable parameter and buffer (it is what checkpoints store).
    ``evaluate`` and ``write_outputs`` show a progress bar when ``progress`` is set (and a phase takes
    long enough to need one); ``leave=False`` clears an evaluation's bar when it ends (one inside
    the training bar).
    A task may also expose ``update(step, total)`` (its own schedules); the trainer calls it before
    sampling each step. ``param_groups()`` returns Adam parameter groups (a group may carry its own ``eps``). ``loss``
    returns a scalar tensor and scalar metric tensors (kept on the device; the trainer reads them
    only every ``log_every`` steps).
    """

    name: str
    model: nn.Module

    def param_groups(self) -> list[dict[str, Any]]: ...

    def sample(self, step: int) -> Any: ...

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self, progress: bool = False, leave: bool = True) -> dict[str, float]: ...

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RunClock:
    """How long the rest of a run will take, said once its steps have been timed and again when
    the pace changes.

    The first step is not timed (it compiles, allocates, fills caches). Once `ESTIMATE_AFTER_STEPS`
    steps spanning at least `ESTIMATE_AFTER_SECONDS` are timed, the remaining steps at the recent
    pace (the mean over the last quarter of the timed steps, and at least `ESTIMATE_WINDOW_STEPS`: a
    NeRF's steps speed up as its occupancy grid empties, and periodic work such as grid updates
    every 16 steps is counted as it comes), plus
    the evaluations still due at the last one's duration, make the estimate; it is said when it
    is over `ESTIMATE_WORTH_SECONDS`, and said again whenever the remaining time drifts more than
    `ESTIMATE_CORRECTION` from the last estimate said, counted down since.

    Args:
        step: the step the trainer starts from (a resumed run's).
        end: the step this call of `fit` stops at.
        total: the run's last step (its closing evaluation comes after it).
        eval_every: steps between evaluations (0: at the end only).
        device: where the run trains (named in the line).
    """

    def __init__(self, step: int, end: int, total: int, eval_every: int, device: str):
        self.end, self.total, self.eval_every, self.device = end, total, eval_every, device
        self.first = step + 1  # the warm-up step, not timed
        self.durations: list[float] = []  # of the timed steps
        self.timed_seconds = 0.0  # their sum
        self.eval_seconds: float | None = None
        self.spent = 0.0  # seconds of timed steps and evaluations
        self.said: tuple[float, float] | None = None  # (remaining seconds said, `spent` then)

    def evaluated(self, seconds: float) -> None:
        """An evaluation during training took `seconds`."""
        self.eval_seconds = seconds
        self.spent += seconds

    def stepped(self, step: int, seconds: float, final: bool = False) -> str | None:
        """Step `step` (1-based) took `seconds`; returns the line to say, if any."""
        if step <= self.first:
            return None
        self.durations.append(seconds)
        self.timed_seconds += seconds
        self.spent += seconds
        timed = len(self.durations)
        if final or timed < ESTIMATE_AFTER_STEPS or self.timed_seconds < ESTIMATE_AFTER_SECONDS:
            return None
        recent = self.durations[-max(ESTIMATE_WINDOW_STEPS, timed // 4) :] if self.said is not None else self.durations
        pace = sum(recent) / len(recent)
        remaining_steps = self.end - step
        evaluations = 0
        if self.eval_every > 0 and self.eval_seconds is not None:
            evaluations = len(
                range(step + self.eval_every - step % self.eval_every, min(self.end, self.total - 1) + 1, self.eval_every)
            )
        remaining = pace * remaining_steps + (evaluations * self.eval_seconds if evaluations else 0.0)
        if self.said is None:
            self.said = (remaining, self.spent)
            if remaining < ESTIMATE_WORTH_SECONDS:
                return None
            per_step = f"{pace:.2f} s per step on {self.device}"
            return f"about {_duration(remaining)} for the remaining {remaining_steps:,} steps ({per_step})"
        expected = self.said[0] - (self.spent - self.said[1])  # the last estimate, counted down
        drift = abs(remaining - expected)
        if drift <= ESTIMATE_CORRECTION * max(expected, 0.0) or drift < 0.5 * ESTIMATE_WORTH_SECONDS:
            return None
        self.said = (remaining, self.spent)
        return f"now about {_duration(remaining)} for the remaining {remaining_steps:,} steps ({pace:.2f} s per step)"


def _duration(seconds: float) -> str:
    """A remaining time as a person says it: 40 s, 3 min, 1.5 h."""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be a usable torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NfieldError(f"unknown --device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NfieldError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise NfieldError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def learning_rate_factor(step: int, cfg: TrainConfig) -> float:
    """Schedule multiplier for the step about to be taken (0-based), in (0, 1]."""
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return (step + 1) / cfg.lr_warmup_steps
    span = max(cfg.steps - cfg.lr_warmup_steps - 1, 1)
    t = min(max(step - cfg.lr_warmup_steps, 0) / span, 1.0)
    if cfg.lr_schedule == "cosine":
        return cfg.lr_final_factor + (1 - cfg.lr_final_factor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.lr_schedule == "exponential":
        return cfg.lr_final_factor**t
    return 1.0


def progress_aware_modules(model: nn.Module) -> list[nn.Module]:
    """Modules exposing ``update(step, total)`` (progressive encodings, schedules, grids)."""
    containers = (nn.ModuleDict, nn.ParameterDict)
    return [m for m in model.modules() if callable(getattr(m, "update", None)) and not isinstance(m, containers)]


class Trainer:
    """Runs a task's optimisation with checkpoints, metrics and resume.

    Args:
        task: the task to train (its model already on `device`).
        cfg: training settings.
        run_dir: the run directory; ``metrics.jsonl`` and ``checkpoints/`` are written there.
        device: where the task's tensors live (decides whether mixed precision applies).
    """

    def __init__(self, task: Task, cfg: TrainConfig, run_dir: Path, device: torch.device | str = "cpu"):
        self.task, self.cfg, self.run_dir = task, cfg, Path(run_dir)
        self.device = torch.device(device)
        # components that cannot take the backend asked for (networks built on PyTorch cannot move
        # to tiny-cuda-nn) keep their own; the run log says what ran
        taken: dict[str, bool] = {}
        if cfg.backend != "auto":  # "auto" leaves each component's own setting (its config's) alone
            choose_backend("--backend", cfg.backend, self.device, BACKENDS[1:])  # one line now if it cannot run here
            taken = set_backend(task.model, cfg.backend)
            if callable(getattr(task, "set_backend", None)):  # a task's own kernels (the NeRF renderer)
                taken[f"{task.name} renderer"] = task.set_backend(cfg.backend)
        self.backend_refusals = [path for path, took in taken.items() if not took]
        self.backends_logged = False
        self.use_amp = cfg.mixed_precision and self.device.type == "cuda"
        groups = task.param_groups()
        for group in groups:
            group["lr"] = cfg.lr
        self.optimizer = torch.optim.Adam(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.scheduled = progress_aware_modules(task.model)
        self.task_tracks_progress = callable(getattr(task, "update", None))  # a task's own schedules (INT)
        self.step = 0
        self.resumed = False
        self.train_seconds = 0.0
        self._saved_at = 0.0  # train_seconds at the last checkpoint
        self.is_main = writes_run_files()  # in a data-parallel run, rank 0 logs, evaluates and checkpoints
        #: called as ``observer.after_step(trainer)`` after every step (the live viewer) and, on the
        #: process that writes the run, ``observer.run_ended(trainer)`` when the run ends or is
        #: interrupted (the curves), where they have those methods; an observer keeps its own failures
        #: to itself
        self.observers: list[Any] = []

    def runs(self) -> list[tuple[Path, Any]]:
        """(run directory, task) of each run this trainer writes (its observers log and draw each):
        the one run."""
        return [(self.run_dir, self.task)]

    @property
    def saved_where(self) -> str:
        """Where an interrupted run's checkpoint went, as the interruption says it."""
        return f"checkpoint saved in {self.run_dir}"

    @property
    def metrics_path(self) -> Path:
        return RunDirectory(self.run_dir).metrics

    def resume(self) -> int:
        """Restore the newest checkpoint of `run_dir` and say so on stderr (from which step and
        checkpoint); returns its step."""
        checkpoint = RunDirectory(self.run_dir).latest_checkpoint()
        if checkpoint is None:
            raise NfieldError(f"{self.run_dir}: no checkpoint to resume from (start without --resume)")
        load_model_weights(self.task.model, checkpoint)
        state = load_trainer_state(checkpoint)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:  # a disabled scaler (a CPU run) saved {}: an enabled one starts fresh
                self.scaler.load_state_dict(state["scaler"])
            self.task.load_state_dict(state["task"])
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        except (KeyError, ValueError, RuntimeError) as err:
            raise NfieldError(f"{checkpoint.state_file}: the trainer state does not match this run ({err})") from None
        self.step = int(state["step"])
        self.resumed = True
        self.train_seconds = self._saved_at = float(state.get("train_seconds", 0.0))
        self._truncate_metrics(self.step)
        if self.is_main:
            left = ": nothing left to train" if self.step >= self.cfg.steps else ""
            print(
                f"resuming {self.run_dir} from step {self.step} of {self.cfg.steps} (checkpoint {checkpoint.path}){left}",
                file=sys.stderr,
            )
        return self.step

    def _checkpoint_due(self) -> bool:
        """Whether `checkpoint_seconds` of training passed since the last checkpoint (or the start)."""
        every = self.cfg.checkpoint_seconds
        return self.is_main and every > 0 and self.train_seconds - self._saved_at >= every

    def save(self) -> None:
        if not self.is_main:
            return
        self._saved_at = self.train_seconds
        state = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "task": self.task.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        save_checkpoint(self.run_dir, self.step, self.task.model, state, keep=self.cfg.keep_checkpoints)

    def fit(self, stop_after: int | None = None) -> dict[str, float]:
        """Train up to ``cfg.steps`` (or pause after `stop_after` steps, checkpointed).

        Returns the final evaluation metrics (empty when paused early). Raises `TrainingDiverged`
        when the loss stops being finite, and `NfieldError` with a resume hint on Ctrl-C.
        """
        cfg, total = self.cfg, self.cfg.steps
        end = total if stop_after is None else min(stop_after, total)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        shown = cfg.progress and self.is_main
        bar = progress_bar(total=total, initial=self.step, desc=self.task.name, unit="step", enabled=shown)
        window: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]] = []
        reported = self.backends_logged  # which backends ran: logged after this trainer's first step
        if self.step == 0 and not self.resumed:
            seed_everything(cfg.seed)  # the trainer's random streams (sampling, grid probes) start from the run's seed
        clock = RunClock(self.step, end, total, cfg.eval_every, str(self.device))
        try:
            while self.step < end:
                started = perf_counter()
                if not reported:
                    reset_backends()
                window.append(self._train_step())
                self.step += 1
                if not reported:
                    self._log_backends(bar)
                    reported = self.backends_logged = True
                evaluate = self.step < total and cfg.eval_every > 0 and self.step % cfg.eval_every == 0  # the last: after the bar
                checkpoint = self._boundary(self.step, cfg.checkpoint_every, end)
                flush = evaluate or checkpoint or self._boundary(self.step, cfg.log_every, end)
                # a long stretch without a checkpoint: save at a log step (every rank flushes there
                # alike; only rank 0 looks at its clock, as only it saves)
                checkpoint = checkpoint or (flush and self._checkpoint_due())
                if flush and self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                seconds = perf_counter() - started
                self.train_seconds += seconds
                bar.update(1)
                said = clock.stepped(self.step, seconds, final=self.step == end)
                if said and self.is_main:
                    bar.write(said, file=sys.stderr)
                if flush:  # every loss is checked before anything is evaluated or saved
                    self._flush(window, bar)
                    window = []
                if evaluate and self.is_main:
                    started = perf_counter()
                    self._evaluate(shown, False, bar)
                    seconds = perf_counter() - started
                    clock.evaluated(seconds)
                    exclude_from_rate(bar, seconds)
                if checkpoint:
                    started = perf_counter()
                    self.save()
                    exclude_from_rate(bar, perf_counter() - started)
                for observer in self.observers:
                    if callable(getattr(observer, "after_step", None)):
                        observer.after_step(self)
        except KeyboardInterrupt:
            if window:
                self._flush(window, bar)
            self.save()
            self._run_ended()
            raise Interrupted(f"interrupted at step {self.step}; {self.saved_where}; continue with --resume") from None
        finally:
            bar.close()
        if self.step < total:
            return {}
        if data_parallel() is None:  # one process (or one of a collection's ranks, each with its own runs)
            return self._close(shown, bar)
        # rank 0 evaluates and exports while the other ranks of a data-parallel run wait, so they all
        # leave the process group together (and an error of rank 0's stops them all)
        return main_first(lambda: self._close(shown, bar)) or {}

    def _evaluate(self, progress: bool, leave: bool, bar: tqdm) -> dict[str, float]:
        """Evaluate the task (a bar when `progress`; `leave`: keep it when done) and log the metrics."""
        evaluated = self.task.evaluate(progress=progress, leave=leave)
        self._log({"step": self.step, "kind": "eval", **evaluated}, bar)
        return evaluated

    def _close(self, shown: bool, bar: tqdm) -> Any:
        """The closing evaluation (logged) and the task's outputs, each phase with its own bar."""
        evaluated = self._evaluate(shown, True, bar)
        self.task.write_outputs(self.run_dir, progress=shown)
        self._run_ended()
        return evaluated

    def _run_ended(self) -> None:
        if self.is_main:
            for observer in self.observers:
                if callable(getattr(observer, "run_ended", None)):
                    observer.run_ended(self)

    def _train_step(self) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
        cfg, step = self.cfg, self.step
        for module in self.scheduled:
            module.update(step, cfg.steps)
        factor = learning_rate_factor(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        if self.task_tracks_progress:
            self.task.update(step, cfg.steps)
        batch = self.task.sample(step)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, metrics = self.task.loss(batch)
        self.scaler.scale(loss).backward()
        average_gradients(p for g in self.optimizer.param_groups for p in g["params"])  # data-parallel ranks
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients(cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return step, loss.detach(), {k: v.detach() for k, v in metrics.items()}

    def _clip_gradients(self, max_norm: float) -> None:
        """Scale the gradients to a global norm of at most `max_norm`."""
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], max_norm)

    def _log_backends(self, bar: tqdm) -> None:
        """Write which implementation ran each component in the first step (metrics.jsonl and stderr)."""
        ran = backends_in_use()
        self._log({"step": self.step, "kind": "backends", "backends": ran, "kept_own_backend": self.backend_refusals}, None)
        if self.is_main and ran:
            shown = ", ".join(f"{name} {backend}" for name, backend in sorted(ran.items()))
            kept = f" ({', '.join(self.backend_refusals)} kept their own)" if self.backend_refusals else ""
            bar.write(f"backends: {shown}{kept}", file=sys.stderr)

    @staticmethod
    def _boundary(step: int, every: int, last: int) -> bool:
        return step == last or (every > 0 and step % every == 0)

    def _flush(self, window: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]], bar: tqdm) -> None:
        """Read the window's losses once, stop on a non-finite one, log the means."""
        steps = [s for s, _, _ in window]
        losses = all_reduce_(torch.stack([loss.float() for _, loss, _ in window]), "mean").cpu()  # every rank agrees
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = steps[int((~finite).nonzero()[0, 0])]
            kept = RunDirectory(self.run_dir).latest_checkpoint()
            where = (
                f"the last good checkpoint (step {kept.step}) is kept in {kept.path.parent}"
                if kept
                else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"loss became {losses[~finite][0].item()} at step {bad + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                f"{where}; lower --lr or change the model settings"
            )
        record: dict[str, Any] = {"step": self.step, "kind": "train", "loss": float(losses.mean())}
        if window[0][2]:
            names = list(window[0][2])
            values = torch.stack([torch.stack([m[n].float() for n in names]) for _, _, m in window]).mean(0)
            values = all_reduce_(values, "mean").cpu()
            record.update({f"train_{n}": float(v) for n, v in zip(names, values)})
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["train_seconds"] = round(self.train_seconds, 4)
        bar.update(self.step - bar.n)
        bar.set_postfix(
            {
                k.removeprefix("train_"): f"{v:.4g}"
                for k, v in record.items()
                if k == "loss" or k.startswith("train_") and k != "train_seconds"
            }
        )
        self._log(record, None)

    def _log(self, record: dict[str, Any], bar: tqdm | None) -> None:
        if not self.is_main:
            return
        append_metrics(self.metrics_path, record)
        if bar is not None and record.get("kind") == "eval":
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
            bar.write(f"step {record['step']}: {shown}", file=sys.stderr)

    def _truncate_metrics(self, step: int) -> None:
        if self.is_main:
            truncate_metrics(self.metrics_path, step)
