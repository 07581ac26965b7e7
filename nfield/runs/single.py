"""One signal's run: start it, train it, resume it, load it back.

Every training command goes through `train` (the run directory's rules, `nfield.run_directory`,
for ``--overwrite`` and ``--resume``; the config, the seed, the task and its trainer), and every
command that reads a finished run (render, eval, mesh, info, distill, view) through `load_run`,
which rebuilds the run's task from its config.json (`Task.from_config`) and loads its newest
weights, with or without the task's data.

Example::

    >>> run = load_run(Path("runs/image/camera-siren"))           # doctest: +SKIP
    >>> image = run.task.render(512, 512)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence, Union

import torch

import nfield
from nfield.components import config_from_dict
from nfield.distributed import data_parallel, device_for, layout, main_first, writes_run_files
from nfield.errors import NfieldError
from nfield.presets.audio import DEFAULT_MODEL as AUDIO_DEFAULT
from nfield.presets.audio import new_audio_run
from nfield.presets.image import DEFAULT_MODEL as IMAGE_DEFAULT
from nfield.presets.image import new_image_run
from nfield.presets.nerf import DEFAULT_MODEL as NERF_DEFAULT
from nfield.presets.nerf import new_nerf_run
from nfield.presets.sdf import DEFAULT_MODEL as SDF_DEFAULT
from nfield.presets.sdf import new_sdf_run
from nfield.presets.video import DEFAULT_MODEL as VIDEO_DEFAULT
from nfield.presets.video import new_video_run
from nfield.run_directory import CONFIG_FILE, RunDirectory
from nfield.runs.loggers import check_logger, logger_observers
from nfield.runs.plots import CurvesDrawer
from nfield.tasks.audio import AudioTask
from nfield.tasks.image import ImageTask
from nfield.tasks.nerf import NeRFTask
from nfield.tasks.sdf import SDFTask
from nfield.tasks.video import VideoTask
from nfield.training.checkpoint import load_model_weights
from nfield.training.trainer import TrainConfig, Trainer, resolve_device, seed_everything

#: Tasks that train one signal on several ranks (`nfield.distributed`); the others refuse it.
DATA_PARALLEL_TASKS = ("image", "nerf")
Task = Union[ImageTask, SDFTask, NeRFTask, AudioTask, VideoTask]
#: config.json's "task" -> the task class, its default model and how a new run starts from a preset.
TASKS: dict[str, tuple[type, str, Any]] = {
    "image": (ImageTask, IMAGE_DEFAULT, new_image_run),
    "sdf": (SDFTask, SDF_DEFAULT, new_sdf_run),
    "nerf": (NeRFTask, NERF_DEFAULT, new_nerf_run),
    "audio": (AudioTask, AUDIO_DEFAULT, new_audio_run),
    "video": (VideoTask, VIDEO_DEFAULT, new_video_run),
}


@dataclass(frozen=True)
class RunRequest:
    """What a training command asks for. Unset (None) values keep the preset's, or on ``resume``
    the run's; a key that cannot change on resume (the model, its options, the seed) is refused.

    Attributes:
        kind: the task: image, sdf, nerf, audio or video.
        source: the data (an image, a shape, a scene folder, a sound file, a video).
        model: a preset name of the task (None: the task's default).
        out: the run directory (None: ``runs/<kind>/<source name>-<model>``).
        resume, overwrite: continue the run in `out`, or replace it.
        device: auto, cpu, cuda, cuda:N.
        train: TrainConfig keys to override (steps, lr, seed, progress, ...).
        overrides: the preset's hyper-parameters the user set (each goes where the model has it).
        task_overrides: the task settings the user set (batch sizes, loss, ...).
        data_options: how the data is read (downscale, ...), passed to the preset's new-run function.
        logger: where the metrics are also logged: none, tensorboard or wandb (`nfield.runs.loggers`).
    """

    kind: str
    source: str
    model: str | None = None
    out: Path | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    train: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    task_overrides: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    logger: str = "none"

    @property
    def run_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        name = Path(self.source).name if self.kind == "nerf" else Path(self.source).stem
        return Path("runs") / self.kind / f"{name}-{self.model or TASKS[self.kind][1]}"


@dataclass
class LoadedRun:
    """A run read back from its directory: its config, its task (with the newest weights) and the
    checkpoint's step."""

    run_dir: Path
    config: dict[str, Any]
    task: Task
    step: int

    @property
    def kind(self) -> str:
        return self.config["task"]

    @property
    def device(self) -> torch.device:
        return self.task.device


#: What a command may attach to a run while it trains (the live viewer): called with the run
#: directory, its config and its task, it opens a block that yields the trainer's observers.
Watch = Callable[[Path, dict[str, Any], Any], ContextManager[Sequence[Any]]]


@contextlib.contextmanager
def unwatched(run_dir: Path, config: dict[str, Any], task: Any):
    """No observers: what `train` uses when the command attaches none."""
    yield ()


def train(request: RunRequest, watch: Watch = unwatched) -> dict[str, Any] | None:
    """Start (or with ``resume``, continue) the run `request` asks for and train it to the end.

    Returns the final metrics with the step, the training time and the run directory; the task's
    outputs are written into the run directory. Under data-parallel training (`nfield.distributed`)
    rank 0 writes the run and returns them; the other ranks train with it and return None. `watch`
    (the live viewer) gives the trainer its observers while it trains.
    """
    if request.kind not in TASKS:
        raise NfieldError(f"unknown task '{request.kind}'; one of {', '.join(TASKS)}")
    check_logger(request.logger)  # a missing package is said before anything is read or trained
    task_cls = TASKS[request.kind][0]
    out, device = request.run_dir, resolve_device(device_for(request.device, layout()))
    if data_parallel() is not None and request.kind not in DATA_PARALLEL_TASKS:
        raise NfieldError(
            f"{TASKS[request.kind][0].name} trains in one process; data-parallel training (torchrun) is for "
            f"{' and '.join(TASKS[k][0].name for k in DATA_PARALLEL_TASKS)} (a folder of files is split between ranks instead)"
        )
    if request.train.get("steps", 1) <= 0:  # before any data is read
        raise NfieldError(f"--steps must be a positive number of steps, got {request.train['steps']}")
    if request.resume and request.overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    directory = RunDirectory(out)
    if writes_run_files() and not directory.is_run():  # before reading data or training
        directory.check_writable()
    config, data = run_config(request, device, directory, resume=request.resume)
    if data is None:
        data = from_run_config(out, lambda: task_cls.load_data(config))
    main = writes_run_files()  # in a data-parallel run, rank 0 writes the run directory; the others wait for it
    main_first(lambda: _start_run_dir(directory, config, request) if main else None)
    task, trainer = build(config, device, data, out, request.logger)
    if main and callable(getattr(task, "write_run_files", None)):  # files besides config.json (a NeRF's cameras)
        task.write_run_files(out)
    if request.resume:
        trainer.resume()  # says from which step and checkpoint
    if main:
        ranks = f" x {data_parallel().world} ranks" if data_parallel() else ""
        print(
            f"{task.describe()} with {config['model']} on {device}{ranks}, {config['train']['steps']} steps -> {out}",
            file=sys.stderr,
        )
    with watch(out, config, task) as observers:
        trainer.observers.extend(observers)
        metrics = trainer.fit()
    if not main:
        return None
    print("wrote " + " and ".join(str(out / name) for name in task.outputs()), file=sys.stderr)
    report = directory.recorded_eval()  # the export's metrics
    if callable(getattr(task, "evaluated_views", None)):  # a NeRF's final metrics are over --eval-views views
        report["eval_views"] = task.evaluated_views()
        report["test_views"] = task.evaluated_views(0)
        report["render_views"] = task.rendered_views()
        if report["eval_views"] < report["test_views"] or report["render_views"] < report["test_views"]:
            print(
                f"scored {report['eval_views']} and wrote {report['render_views']} of the {report['test_views']} held-out views "
                f"(--eval-views, --render-views); `nfield eval {out}` scores all {report['test_views']}",
                file=sys.stderr,
            )
    return {"step": trainer.step, **metrics, **report, "train_seconds": round(trainer.train_seconds, 3), "run_dir": str(out)}


def run_config(
    request: RunRequest, device: torch.device, directory: RunDirectory, resume: bool
) -> tuple[dict[str, Any], Any | None]:
    """The config.json of the run `request` asks for, with its training keys applied and checked, and
    its data when it was read on the way (None when resuming: read from the config later).

    Resuming, it is the run's own config, after refusing what a resume may not change
    (`RunDirectory.refuse_changes`); otherwise a new one from the preset, whose task records the
    batch of a whole step when the run trains on several ranks (`task_cls.across_ranks`)."""
    task_cls, default_model, new_run = TASKS[request.kind]
    if resume:
        config, data = directory.read_config(), None
        recorded = {"kind": config["task"], "model": config.get("model"), "seed": train_config(config, directory.path).seed}
        asked = {"kind": request.kind, "model": request.model, "overrides": request.overrides}
        directory.refuse_changes(recorded, {**asked, **({"seed": request.train["seed"]} if "seed" in request.train else {})})
        train_cfg = dataclasses.replace(train_config(config, directory.path), **request.train)
    else:
        model = request.model or default_model
        train_cfg, task_part, data = new_run(
            request.source, model, request.overrides, request.task_overrides, device, **request.data_options
        )
        train_cfg = dataclasses.replace(train_cfg, **request.train)
        extra = task_cls.across_ranks(task_part, data_parallel().world) if data_parallel() is not None else {}
        config = new_config(request.kind, model, train_cfg, task_part, **extra)
    config["train"] = dataclasses.asdict(train_cfg)
    return config, data


def _start_run_dir(directory: RunDirectory, config: dict[str, Any], request: RunRequest) -> None:
    """Check the run directory of a run about to train (`RunDirectory.prepare`) and write its config.json."""
    directory.prepare(request.resume, request.overwrite)
    directory.write_config(config)


def build(config: dict[str, Any], device: torch.device, data: Any, run_dir: Path, logger: str = "none") -> tuple[Task, Trainer]:
    """The task `config` describes, on `data`, with its model initialised from the run's seed
    (`build_task`), and its trainer writing into `run_dir`, drawing the run's curves at its end and
    logging its metrics to `logger` (none, tensorboard or wandb)."""
    task = build_task(config, device, data, run_dir)
    trainer = Trainer(task, train_config(config, run_dir), run_dir, device=device)
    trainer.observers.extend([CurvesDrawer(), *logger_observers(logger)])
    return task, trainer


def build_task(config: dict[str, Any], device: torch.device, data: Any, run_dir: Path) -> Task:
    """The task `config` describes, on `data`, its model initialised from the run's seed (so each
    signal of a collection starts where its single run would)."""
    task_cls = TASKS[config["task"]][0]
    seed_everything(train_config(config, run_dir).seed)  # the model's initialisation
    return from_run_config(run_dir, lambda: task_cls.from_config(config, device, data))


def new_config(kind: str, model: str, train_cfg: TrainConfig, task_part: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A new run's config.json: the task, the nfield version, the model's name, the task's part
    (its data, field and settings), the training config and any `extra` sections."""
    return {
        "task": kind,
        "nfield_version": nfield.__version__,
        "model": model,
        **task_part,
        "train": dataclasses.asdict(train_cfg),
        **extra,
    }


def train_config(config: dict[str, Any], run_dir: Path) -> TrainConfig:
    """The run's training config (runs before 0.3 also kept the seed at the top level)."""
    recorded = dict(config.get("train", {}))
    if "seed" not in recorded and "seed" in config:
        recorded["seed"] = config["seed"]
    return from_run_config(run_dir, lambda: config_from_dict(TrainConfig, recorded, what="train"))


def load_run(run_dir: Path, device: str | torch.device = "auto", data: bool = False, source: Any = None) -> LoadedRun:
    """The run in `run_dir` with its newest weights, in evaluation mode.

    Args:
        run_dir: a run directory of any task.
        device: where to load it.
        data: also load the task's data (the image, shape or scene it was trained on; needed to
            evaluate it), or `source` instead of the recorded one.
        source: another image, shape or scene to load as the data (implies `data`).
    """
    run_dir = Path(run_dir)
    config = RunDirectory(run_dir).read_config()
    checkpoint = RunDirectory(run_dir).require_checkpoint()
    task = task_from_config(run_dir, config, resolve_device(str(device)), data, source)
    load_model_weights(task.model, checkpoint)
    task.model.eval()
    return LoadedRun(run_dir, config, task, checkpoint.step)


def task_from_config(run_dir: Path, config: dict[str, Any], device: torch.device, data: bool = False, source: Any = None) -> Task:
    """The (untrained) task of the run `config` describes, on `device`, with its data when `data`
    (or `source` instead of the recorded one); `load_run` adds the weights."""
    if config["task"] not in TASKS:
        raise NfieldError(f"{run_dir}/{CONFIG_FILE}: unknown task '{config['task']}' (one of {', '.join(TASKS)})")
    task_cls = TASKS[config["task"]][0]
    loaded = from_run_config(run_dir, lambda: task_cls.load_data(config, source)) if data or source is not None else None
    return from_run_config(run_dir, lambda: task_cls.from_config(config, device, loaded))


def from_run_config(run_dir: Path, make):
    """`make()`, with a missing or mistyped key of the run's config.json reported in one line."""
    try:
        return make()
    except KeyError as err:
        raise NfieldError(f"{run_dir}/{CONFIG_FILE}: missing key {err}") from None
    except (TypeError, ValueError) as err:
        if isinstance(err, NfieldError):
            raise
        raise NfieldError(f"{run_dir}/{CONFIG_FILE}: a value does not fit ({err})") from None
