"""A run directory's one home: create, train, resume and load runs.

``runs/<task>/<name>/`` holds ``config.json`` (the full resolved configuration: the task, its data,
the field, the training and task settings), ``metrics.jsonl``, ``checkpoints/`` and the outputs.
Every training command goes through `train` (the rules for ``--overwrite`` and ``--resume``, the
config, the seed, the task and its trainer), and every command that reads a finished run (render,
eval, mesh, info, distill) through `load_run`, which rebuilds the run's task from its config
(`Task.from_config`) and loads its newest weights, with or without the task's data.

Example::

    >>> run = load_run(Path("runs/image/camera-siren"))           # doctest: +SKIP
    >>> image = run.task.render(512, 512)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

import nfield
from nfield.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, load_model_weights
from nfield.components import config_from_dict
from nfield.distributed import data_parallel, device_for, layout, main_first, writes_run_files
from nfield.errors import NfieldError
from nfield.fields.radiance import radiance_config_to_dict
from nfield.outputs import check_writable_directory, writable_directory, write_atomic
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
from nfield.tasks.audio import AudioTask
from nfield.tasks.distill import DistillSettings, distil_and_finetune, distillation_task
from nfield.tasks.image import ImageTask
from nfield.tasks.nerf import NeRFTask, write_cameras
from nfield.tasks.sdf import SDFTask
from nfield.tasks.video import VideoTask
from nfield.train import TrainConfig, Trainer, resolve_device, seed_everything

CONFIG_FILE = "config.json"
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
        model_options: the preset's hyper-parameters to override.
        task_options: the task settings to override (batch sizes, loss, ...).
        data_options: how the data is read (downscale, ...), passed to the preset's new-run function.
        viewer_port: serve the live viewer on this port while training (None: no viewer).
    """

    kind: str
    source: str
    model: str | None = None
    out: Path | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    train: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    viewer_port: int | None = None

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


def train(request: RunRequest) -> dict[str, Any] | None:
    """Start (or with ``resume``, continue) the run `request` asks for and train it to the end.

    Returns the final metrics with the step, the training time and the run directory; the task's
    outputs are written into the run directory. Under data-parallel training (`nfield.distributed`)
    rank 0 writes the run and returns them; the other ranks train with it and return None.
    """
    if request.kind not in TASKS:
        raise NfieldError(f"unknown task '{request.kind}'; one of {', '.join(TASKS)}")
    task_cls, default_model, new_run = TASKS[request.kind]
    out, device = request.run_dir, resolve_device(device_for(request.device, layout()))
    if data_parallel() is not None and request.kind not in DATA_PARALLEL_TASKS:
        raise NfieldError(
            f"{TASKS[request.kind][0].name} trains in one process; data-parallel training (torchrun) is for "
            f"{' and '.join(TASKS[k][0].name for k in DATA_PARALLEL_TASKS)} (a folder of files is split between ranks instead)"
        )
    overrides = dict(request.train)
    if "steps" in overrides and overrides["steps"] <= 0:  # before any data is read
        raise NfieldError(f"--steps must be a positive number of steps, got {overrides['steps']}")
    if request.resume and request.overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    if writes_run_files() and not (out / CONFIG_FILE).is_file():  # before reading data or training
        check_writable_directory(out)
    if request.resume:
        config, data = read_config(out), None
        _check_resumable(config, out, request)
        train_cfg = dataclasses.replace(train_config(config, out), **overrides)
    else:
        train_cfg, task_part, data = new_run(
            request.source,
            request.model or default_model,
            request.model_options,
            request.task_options,
            device,
            **request.data_options,
        )
        train_cfg = dataclasses.replace(train_cfg, **overrides)
        extra = {}
        if data_parallel() is not None:  # the batch flags are per rank; the run records the whole step's batch
            ranks, key = data_parallel().world, task_cls.batch_key
            per_rank = task_part["task_config"][key]
            task_part["task_config"][key] = per_rank * ranks
            extra["data_parallel"] = {"ranks": ranks, f"{key}_per_rank": per_rank}
        config = new_config(request.kind, request.model or default_model, train_cfg, task_part, **extra)
    train_cfg.validate()
    config["train"] = dataclasses.asdict(train_cfg)
    if data is None:
        data = _from_config(out, lambda: task_cls.load_data(config))
    main = writes_run_files()  # in a data-parallel run, rank 0 writes the run directory; the others wait for it
    main_first(lambda: _start_run_dir(out, config, request) if main else None)
    task, trainer = build(config, device, data, out)
    if main and callable(getattr(task, "write_run_files", None)):  # files besides config.json (a NeRF's cameras)
        task.write_run_files(out)
    if request.resume:
        trainer.resume()  # says from which step and checkpoint
    if main:
        ranks = f" x {data_parallel().world} ranks" if data_parallel() else ""
        print(f"{task.describe()} with {config['model']} on {device}{ranks}, {train_cfg.steps} steps -> {out}", file=sys.stderr)
    with live_viewer(request.viewer_port, out, config, task) as observers:
        trainer.observers.extend(observers)
        metrics = trainer.fit()
    if not main:
        return None
    print("wrote " + " and ".join(str(out / name) for name in task.outputs()), file=sys.stderr)
    report = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() else {}  # the export's metrics
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


def _start_run_dir(out: Path, config: dict[str, Any], request: RunRequest) -> None:
    """Check the run directory of a run about to train (`prepare_run_dir`) and write its config.json."""
    prepare_run_dir(out, request.resume, request.overwrite)
    write_config(out, config)


def distill(
    teacher_dir: Path,
    settings: DistillSettings,
    out: Path | None = None,
    scene: str | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    viewer_port: int | None = None,
) -> dict[str, Any]:
    """Distil the radiance field of the run `teacher_dir` into a KiloNeRF run in `out` (default
    ``runs/nerf/<teacher>-kilonerf``), then fine-tune it on the images (see `nfield.tasks.distill`).

    The new run is an ordinary NeRF run whose config.json also records the teacher and the
    settings; with `resume` those recorded settings are used and `settings` is ignored. Returns the
    teacher's, the distilled and the fine-tuned metrics with the phases' durations and sizes.
    """
    teacher_dir = Path(teacher_dir)
    out = Path(out or Path("runs/nerf") / f"{teacher_dir.name}-kilonerf")
    if resume and overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    teacher_config = read_config(teacher_dir)
    if teacher_config["task"] != "nerf":
        raise NfieldError(
            f"{teacher_dir}: is a '{teacher_config['task']}' run; distill needs a radiance-field run (from train-nerf)"
        )
    if resume:
        config = read_config(out)
        if "teacher" not in config:
            raise NfieldError(f"{out}: is not a distilled run (no 'teacher' in config.json); resume it with train-nerf")
        recorded = config["teacher"].get("run_dir")
        if recorded and Path(recorded) != teacher_dir.resolve():
            raise NfieldError(f"{out}: was distilled from {recorded}, not {teacher_dir}; resume it with the same teacher")
        settings = _from_config(out, lambda: config_from_dict(DistillSettings, config["distill"], what="distill"))
    settings.validate()
    teacher = load_run(teacher_dir, device, data=True, source=scene)
    task = distillation_task(teacher.task, settings, teacher.device)  # bad settings fail before the run directory is written
    prepare_run_dir(out, resume, overwrite)
    if not resume:
        scene_part = {**teacher_config["scene"], "source": str(Path(teacher.task.scene.source).resolve())}
        student = {
            "scene": {**scene_part, "aabb": task.student.aabb.tolist()},
            "field": radiance_config_to_dict(settings.student),
            "task_config": dataclasses.asdict(task.images.cfg),
        }
        origin = {"run_dir": str(teacher_dir.resolve()), "model": teacher_config.get("model"), "step": teacher.step}
        origin["field"] = teacher_config.get("field", {}).get("otype")
        recorded = dataclasses.replace(settings, aabb=task.student.aabb.tolist())  # the box, also when it is the teacher's
        extra = {"teacher": origin, "distill": dataclasses.asdict(recorded)}
        write_config(out, new_config("nerf", "kilonerf", settings.train_config("finetune", progress), student, **extra))
        if (teacher_dir / "cameras.json").is_file():
            shutil.copyfile(teacher_dir / "cameras.json", out / "cameras.json")
        else:
            write_cameras(out, task.images.cameras.to("cpu"))
    n_occupied, n_cells = int(task.occupied.sum()), task.student.n_cells
    print(
        f"distilling {teacher_dir} ({teacher_config.get('model')}, step {teacher.step}) into a "
        f"{'x'.join(map(str, task.student.resolution))} KiloNeRF ({n_occupied:,} of {n_cells:,} cells occupied) on "
        f"{teacher.device}: {settings.steps} distillation + {settings.finetune_steps} fine-tuning steps -> {out}",
        file=sys.stderr,
    )
    summary = {"teacher": teacher.task.evaluate(progress=progress)}
    with live_viewer(viewer_port, out, read_config(out), task.images) as observers:
        summary.update(distil_and_finetune(task, settings, out, resume=resume, progress=progress, observers=observers))
    sizes = {"cells": n_cells, "occupied_cells": n_occupied, "parameters": task.student.parameter_count()}
    return {**summary, **sizes, "run_dir": str(out)}


@contextlib.contextmanager
def live_viewer(port: int | None, run_dir: Path, config: dict[str, Any], task: Any):
    """Serve the live viewer (`nfield.viewer.live`) of `task` on `port` while the block trains; yields
    the observers to give the block's trainers (none when `port` is None or on ranks other than 0,
    or when the viewer cannot start), and says at the end what it drew and what it cost."""
    if port is None or not writes_run_files():
        yield ()
        return
    from nfield.viewer.live import LiveViewer

    live = LiveViewer.start(run_dir, config, task, port)
    try:
        yield () if live is None else (live,)
    finally:
        if live is not None:
            print(live.close(), file=sys.stderr)


def build(config: dict[str, Any], device: torch.device, data: Any, run_dir: Path) -> tuple[Task, Trainer]:
    """The task `config` describes, on `data`, with its model initialised from the run's seed, and
    its trainer writing into `run_dir`."""
    task_cls = TASKS[config["task"]][0]
    train_cfg = train_config(config, run_dir)
    seed_everything(train_cfg.seed)  # the model's initialisation
    task = _from_config(run_dir, lambda: task_cls.from_config(config, device, data))
    return task, Trainer(task, train_cfg, run_dir, device=device)


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
    return _from_config(run_dir, lambda: config_from_dict(TrainConfig, recorded, what="train"))


def _check_resumable(config: dict[str, Any], out: Path, request: RunRequest) -> None:
    if config["task"] != request.kind:
        raise NfieldError(
            f"{out}: is a '{config['task']}' run, not {'an' if request.kind[0] in 'aeiou' else 'a'} {request.kind} run"
        )
    if request.model is not None and request.model != config.get("model"):
        raise NfieldError(f"{out}: was trained with --model {config.get('model')}; resume it without changing the model")
    if request.model_options:
        raise NfieldError("model options cannot change when resuming; start a new run to change the model")
    recorded_seed = train_config(config, out).seed
    if request.train.get("seed", recorded_seed) != recorded_seed:
        raise NfieldError(f"{out}: was trained with --seed {recorded_seed}; resume it without changing the seed")


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
    config = read_config(run_dir)
    checkpoint = require_checkpoint(run_dir)
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
    loaded = _from_config(run_dir, lambda: task_cls.load_data(config, source)) if data or source is not None else None
    return _from_config(run_dir, lambda: task_cls.from_config(config, device, loaded))


def _from_config(run_dir: Path, make):
    """`make()`, with a missing or mistyped key of the run's config.json reported in one line."""
    try:
        return make()
    except KeyError as err:
        raise NfieldError(f"{run_dir}/{CONFIG_FILE}: missing key {err}") from None
    except (TypeError, ValueError) as err:
        if isinstance(err, NfieldError):
            raise
        raise NfieldError(f"{run_dir}/{CONFIG_FILE}: a value does not fit ({err})") from None


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check that `run_dir` may be written: a fresh run refuses to clobber an existing one."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    if resume:
        read_config(run_dir)
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise NfieldError(f"--out {run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise NfieldError(f"--out {run_dir}: already holds a run; pass --resume to continue it or --overwrite to replace it")
        if (run_dir / CONFIG_FILE).exists() or list_checkpoints(run_dir):
            shutil.rmtree(run_dir)
        else:
            raise NfieldError(f"--out {run_dir}: is a non-empty directory that is not an nfield run; refusing to delete it")
    writable_directory(run_dir)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` atomically."""
    write_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json``; `NfieldError` if the directory is not a readable run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NfieldError(f"{run_dir}: no such run directory")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise NfieldError(f"{run_dir}: not an nfield run directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NfieldError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise NfieldError(f"{path}: not an nfield run config (no 'task' key)")
    return config


def require_checkpoint(run_dir: Path) -> Checkpoint:
    """The run's newest checkpoint; `NfieldError` if it has none."""
    checkpoint = latest_checkpoint(Path(run_dir))
    if checkpoint is None:
        raise NfieldError(f"{run_dir}: the run has no checkpoint yet (train it first)")
    return checkpoint
