"""Training logs for TensorBoard and Weights & Biases: ``--logger tensorboard`` and ``--logger wandb``.

A run's metrics.jsonl stays the source of truth. `MetricsLogger` is an observer of the trainer
(`nfield.training.trainer.Trainer.observers`, attached by the runs layer as `CurvesDrawer` is): after
every step it reads what was appended to metrics.jsonl since its last look (`MetricsReader`) and logs

- every number of every train record as ``train/<key>`` without the record's ``train_`` prefix
  (``train/loss``, ``train/psnr``, ``train/lr``, ``train/seconds``), and of every eval record as
  ``eval/<key>`` (``eval/psnr``, ``eval/ssim``, ``eval/psnr_lod0``, ``eval/distance_mae``, ...), at the
  record's step; lists (a video's ``psnr_per_frame``) and the backends record are left out;
- at each evaluation, the picture the task keeps from it, where it keeps one (nothing is rendered for
  the log): an image run's reconstruction (``eval/reconstruction``) and a NeRF's or a distilled
  KiloNeRF's first held-out view (``eval/render``), scaled down by whole strides to at most
  `PICTURE_SIDE` pixels a side. Audio, video and SDF tasks keep no render after an evaluation: they log
  scalars only (as does an image too large for the task to keep its render).

Where: TensorBoard event files in ``RUN/tensorboard/`` (``tensorboard --logdir RUN``, or a folder of
runs); Weights & Biases offline runs in ``RUN/wandb/`` (``wandb sync RUN/wandb/offline-run-*`` uploads
them), with the run's config.json as the W&B config. Each signal of a collection logs into its own run
directory, and a distilled run's distillation phase into ``RUN/distill/``.

Resume: a resumed run appends to the same log and no step is logged twice. TensorBoard's log is read
back for the last step it holds; steps past the checkpoint (an interrupted attempt's, which the resume
drops from metrics.jsonl and trains again) are purged from it (SummaryWriter's ``purge_step``), so the
log holds each step once, as metrics.jsonl has it; steps the log lacks before the checkpoint (a run
that first trained without ``--logger``) are logged from metrics.jsonl, without pictures. A W&B run
continues under the same id, kept in ``RUN/wandb/nfield-run.json`` with the last step it logged; W&B's
steps only grow, so the steps it already holds are skipped.

The packages are imported only when their logger is used: `check_logger` says in one line, before
anything trains, that one is missing. A failure while logging is one warning and ends that run's log,
never its training.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from nfield.data.images import to_uint8
from nfield.errors import NfieldError
from nfield.run_directory import MetricsReader, RunDirectory

#: The values of ``--logger``.
LOGGERS = ("none", "tensorboard", "wandb")
#: logger -> (the module it imports, the package (and nfield's extra) that provides it)
PACKAGES = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
#: A logged picture's longest side at most, in pixels (a larger one is logged at every k-th pixel).
PICTURE_SIDE = 1024
#: In ``RUN/wandb/``: the W&B run's id and the last step it logged.
WANDB_RUN_FILE = "nfield-run.json"
#: The W&B project offline runs are filed under.
WANDB_PROJECT = "nfield"


def check_logger(name: str) -> None:
    """`NfieldError` in one line when `name` is not a logger or its package cannot be imported."""
    if name not in LOGGERS:
        raise NfieldError(f"unknown --logger '{name}'; use {', '.join(LOGGERS[:-1])} or {LOGGERS[-1]}")
    if name == "none":
        return
    module, package = PACKAGES[name]
    try:
        importlib.import_module(module)
    except ImportError:
        raise NfieldError(f"--logger {name} needs the {package} package: pip install 'nfield[{package}]'") from None
    except Exception as err:  # installed but broken (a mismatched dependency)
        raise NfieldError(f"--logger {name}: the {package} package does not load ({_first_line(err)})") from None


def logger_observers(name: str) -> list[Any]:
    """The trainer's observers for ``--logger name``: none, or one `MetricsLogger` (the package checked)."""
    return [] if name == "none" else [MetricsLogger(name)]


class MetricsLogger:
    """A trainer's observer that copies its run's metrics.jsonl (and the pictures its evaluations keep)
    into a TensorBoard or W&B log in the run directory (see the module docstring); a stacked collection's
    trainer gives each signal its own log. Only the process that writes the run logs.

    Args:
        kind: "tensorboard" or "wandb".
    """

    def __init__(self, kind: str):
        check_logger(kind)
        if kind == "none":
            raise NfieldError("--logger none logs nothing: attach no MetricsLogger (`logger_observers`)")
        self.kind = kind
        self.logs: dict[Path, _RunLog | None] = {}  # None: failed or closed, logs no more

    def after_step(self, trainer: Any) -> None:
        if getattr(trainer, "is_main", True):
            self._look(trainer, started_at=trainer.step - 1)

    def run_ended(self, trainer: Any) -> None:
        self._look(trainer, started_at=trainer.step)
        for path in list(self.logs):
            self._close(path, say=True)
        self.logs.clear()

    def _look(self, trainer: Any, started_at: int) -> None:
        """Log what each of the trainer's runs appended; a run's log opens at its first look, when the
        trainer has trained at most one step since `started_at` (a resumed run's checkpoint, or 0)."""
        for path, task in trainer.runs():  # a stacked trainer's: one per signal
            directory = RunDirectory(path)
            try:
                if path not in self.logs:
                    self.logs[path] = _RunLog(self.kind, directory, started_at)
                log = self.logs[path]
                if log is not None:
                    log.look(task, trainer.step)
            except Exception as err:
                self._warn(path, err)
                self._close(path, say=False)

    def _close(self, path: Path, say: bool) -> None:
        """Close the log of `path`, which then logs no more; a failure to is one warning when `say`
        (not after a failure already said)."""
        log, self.logs[path] = self.logs.get(path), None
        if log is None:
            return
        try:
            log.close()
        except Exception as err:
            if say:
                self._warn(path, err)

    def _warn(self, path: Path, err: Exception) -> None:
        print(f"nfield: warning: --logger {self.kind} stopped logging {path}: {_first_line(err)}", file=sys.stderr)


class _RunLog:
    """One run directory's log: its metrics.jsonl read as it grows, written by a `_TensorBoardWriter` or
    a `_WandbWriter`; records at or before the writer's `logged_through` step are in the log already."""

    def __init__(self, kind: str, directory: RunDirectory, started_at: int):
        self.reader = MetricsReader(directory.metrics)
        self.writer = _TensorBoardWriter(directory, started_at) if kind == "tensorboard" else _WandbWriter(directory)
        self.skip_through = self.writer.logged_through
        self.last = -1  # the last step logged by this log

    def look(self, task: Any, step: int) -> None:
        """Log the records appended since the last look; an evaluation at `step` (the trainer's
        current one) with the picture `task` kept from it."""
        records, restarted = self.reader.read_new()
        if restarted:  # metrics.jsonl rewritten under it: what was logged stays logged
            self.skip_through = max(self.skip_through, self.last)
        logged = False
        for record in records:
            kind, at = record.get("kind"), record.get("step")
            if kind not in ("train", "eval") or not isinstance(at, int) or isinstance(at, bool) or at <= self.skip_through:
                continue
            values = {
                f"{kind}/{key.removeprefix('train_') if kind == 'train' else key}": value for key, value in _numbers(record)
            }
            pictures = kept_pictures(task) if kind == "eval" and at == step else {}
            self.writer.write(at, values, pictures)
            self.last, logged = max(self.last, at), True
        if logged:
            self.writer.flush(self.last)

    def close(self) -> None:
        self.writer.close()


def _numbers(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The record's numbers but its step: (key, value)."""
    return [
        (key, float(value))
        for key, value in record.items()
        if key not in ("step", "kind") and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def kept_pictures(task: Any) -> dict[str, np.ndarray]:
    """{tag: (H, W, 3 or 4) uint8} the pictures `task` kept from the evaluation it has just made (asked
    in the step of that evaluation: the weights change only when a step trains), from its
    ``evaluation_pictures()`` under ``eval/<name>``: an image task's ``eval/reconstruction``, a NeRF
    task's (or a distillation's student's) first held-out view ``eval/render``; {} for the tasks that
    keep none (audio, video, SDF) and for an evaluation that kept none."""
    pictures = task.evaluation_pictures() if callable(getattr(task, "evaluation_pictures", None)) else {}
    return {f"eval/{name}": _picture(values) for name, values in pictures.items()}


def _picture(values: Any) -> np.ndarray:
    """(H, W, C) intensities in [0, 1] as (H', W', 3 or 4) uint8: grey as RGB, grey and alpha as
    RGBA, at most `PICTURE_SIDE` pixels a side."""
    stride = -(-max(values.shape[:2]) // PICTURE_SIDE)
    array = to_uint8(values[::stride, ::stride])
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] <= 2:
        array = np.concatenate([array[..., :1].repeat(3, -1), array[..., 1:]], axis=-1)
    return np.ascontiguousarray(array[..., :4])


class _TensorBoardWriter:
    """``RUN/tensorboard/`` through torch's SummaryWriter: a scalar per tag, pictures as images.

    Args:
        directory: the run directory.
        started_at: the step training resumes from (0 for a new run): the steps the log holds past it
            are purged.
    """

    def __init__(self, directory: RunDirectory, started_at: int):
        from torch.utils.tensorboard import SummaryWriter

        held = last_tensorboard_step(directory.tensorboard)
        self.logged_through = min(held, started_at)
        purge = started_at + 1 if held > started_at else None
        self.writer = SummaryWriter(str(directory.tensorboard), purge_step=purge)

    def write(self, step: int, values: dict[str, float], pictures: dict[str, np.ndarray]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        for tag, picture in pictures.items():
            self.writer.add_image(tag, picture, step, dataformats="HWC")

    def flush(self, step: int) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def last_tensorboard_step(path: Path) -> int:
    """The last step of a scalar in the TensorBoard log `path` as TensorBoard reads it (purged steps
    gone); -1 when there is none."""
    if not path.is_dir() or not any(path.glob("events.out.tfevents.*")):
        return -1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 1, "images": 1, "tensors": 1, "histograms": 1})
    said = logging.getLogger("tensorboard")  # it warns of every purge it applies (an earlier resume's)
    level = said.level
    said.setLevel(logging.ERROR)
    try:
        accumulator.Reload()  # a reservoir of one keeps each tag's last event
    finally:
        said.setLevel(level)
    return max((accumulator.Scalars(tag)[-1].step for tag in accumulator.Tags()["scalars"]), default=-1)


class _WandbWriter:
    """A W&B offline run in ``RUN/wandb/`` whose id and last step ``RUN/wandb/nfield-run.json`` keeps,
    so that a resumed run continues it (its steps only grow: those it holds are skipped)."""

    def __init__(self, directory: RunDirectory):
        import wandb

        self.state_file = directory.wandb / WANDB_RUN_FILE
        state = _read_json(self.state_file)
        run_id = state.get("id") if isinstance(state.get("id"), str) else uuid.uuid4().hex[:12]
        step = state.get("step")
        self.logged_through = step if isinstance(step, int) and not isinstance(step, bool) else -1
        self.id = run_id
        try:
            config = directory.read_config()
        except NfieldError:
            config = {}
        settings = wandb.Settings(console="off", silent=True, disable_git=True, save_code=False)
        self.run = wandb.init(
            mode="offline",
            dir=str(directory.path),
            project=WANDB_PROJECT,
            name=directory.path.absolute().name,
            id=run_id,
            resume="allow",
            reinit="create_new",
            config=config,
            settings=settings,
        )
        self.image = wandb.Image
        self._save(self.logged_through)

    def write(self, step: int, values: dict[str, float], pictures: dict[str, np.ndarray]) -> None:
        self.run.log({**values, **{tag: self.image(picture) for tag, picture in pictures.items()}}, step=step)

    def flush(self, step: int) -> None:
        self._save(step)

    def close(self) -> None:
        self.run.finish()

    def _save(self, step: int) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"id": self.id, "step": step}) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
