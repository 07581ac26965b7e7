"""Fit a whole folder (or glob) of images or shapes with one preset: ``nfield fit-image DIR_OR_GLOB``.

The result is a collection directory::

    OUT/collection.json     what was asked for (the task, model and options), so --resume continues it
    OUT/index.jsonl         one line per input file, in sorted file order: file, run_dir, status
                            ("ok", "skipped": unreadable, "failed": diverged or refused) and the
                            final metrics (PSNR/SSIM, Chamfer-L1...) or the error
    OUT/<file stem>/        a run directory per signal, in the single-run format (`nfield.runs.single`), so
                            eval, render-image, mesh and info work on each

Signals of one configuration (for images: one size, which decides the grids' scales) train together
as one stacked model (`nfield.training.stacked`), `signals_per_batch` at a time (by default as many as fit
in half the free memory, estimated from the parameter and activation sizes); models that cannot be
stacked are fitted one after another. A file that cannot be read is reported and skipped.

Under ``torchrun`` the ranks share the files round-robin and write their index lines to
``OUT/.index-rank<r>.jsonl`` as each signal finishes; rank 0 merges them into index.jsonl when every
rank is done. ``--resume`` fits what no index line marks "ok" (a killed rank's signals included),
continuing any signal from its newest checkpoint, with any number of ranks.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

import nfield
from nfield.data.meshes import MESH_SUFFIXES, POINT_SUFFIXES
from nfield.distributed import barrier, device_for, init_from_environment, main_first
from nfield.errors import Interrupted, NfieldError
from nfield.geometry.marching_cubes import available_memory_bytes
from nfield.outputs import write_atomic
from nfield.run_directory import COLLECTION_FILE, INDEX_FILE, RunDirectory, read_records
from nfield.runs.loggers import check_logger, logger_observers
from nfield.runs.plots import CurvesDrawer
from nfield.runs.single import TASKS, RunRequest, build_task, run_config, train, train_config
from nfield.training.stacked import StackedTrainer, unstackable
from nfield.training.trainer import resolve_device

#: File types a folder is searched for, per task.
SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".exr", ".hdr", ".pfm"),
    "sdf": tuple(dict.fromkeys(MESH_SUFFIXES + POINT_SUFFIXES)),
}
#: Share of the free memory the auto-sized batch of signals may take.
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class CollectionRequest:
    """What ``fit-image DIR_OR_GLOB`` / ``fit-sdf DIR_OR_GLOB`` asks for: the single-run request every
    file's run is made from (its `source` the folder or glob, its `out` the collection's directory),
    and how many signals train at once (0: sized from the free memory)."""

    run: RunRequest
    signals_per_batch: int = 0

    @property
    def kind(self) -> str:
        return self.run.kind

    @property
    def out_dir(self) -> Path:
        if self.run.out is not None:
            return Path(self.run.out)
        base = Path(self.run.source)
        name = base.name if base.is_dir() else (base.parent.name or "files")
        return Path("runs") / self.kind / f"{name}-{self.run.model or TASKS[self.kind][1]}"


def is_collection(source: str) -> bool:
    """Whether a training command's input names many files: a folder or a glob pattern."""
    return Path(source).is_dir() or (not Path(source).exists() and any(c in source for c in "*?["))


def find_files(pattern: str, kind: str) -> list[Path]:
    """The input files of a folder (its files of the task's types, not recursive) or of a glob
    pattern (every file it matches), sorted."""
    path = Path(pattern)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES[kind]]
        what = f"{pattern}: no {' / '.join(s.lstrip('.') for s in SUFFIXES[kind][:6])}... files in this folder"
    else:
        files = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
        what = f"{pattern}: matches no file"
    if not files:
        raise NfieldError(what)
    return sorted(files)


def run_names(files: list[Path]) -> list[str]:
    """A run directory name per file: its stem, with the suffix added where two stems collide."""
    stems = [f.stem for f in files]
    names = [f"{f.stem}-{f.suffix.lstrip('.').lower()}" if stems.count(f.stem) > 1 else f.stem for f in files]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # the same name twice (a glob over several folders): number them
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def fit_collection(request: CollectionRequest) -> dict[str, Any] | None:
    """Fit every file `request` names (see the module docstring). Returns, on rank 0, a summary:
    counts, the mean of the main metric, the wall time and the index's path; None on other ranks."""
    if request.kind not in SUFFIXES:
        raise NfieldError(f"fitting a collection of files is for images and shapes, not '{request.kind}'")
    if request.run.resume and request.run.overwrite:
        raise NfieldError("--resume and --overwrite contradict each other; pass one")
    if request.signals_per_batch < 0:
        raise NfieldError(f"--signals-per-batch must be >= 0 (0: sized from free memory), got {request.signals_per_batch}")
    check_logger(request.run.logger)  # each signal's run logs into its own run directory
    started = perf_counter()
    where = init_from_environment(request.run.device)
    files = find_files(request.run.source, request.kind)
    out = request.out_dir
    main_first(lambda: _prepare(out, request, files) if where.is_main else None)
    request = _recorded(out, request) if request.run.resume else request
    names = run_names(files)
    done = {entry["file"] for entry in read_index(out) if entry.get("status") == "ok"}
    pending = [(f, out / n) for f, n in zip(files, names) if str(f) not in done]
    mine = pending[where.rank :: where.world]
    device = resolve_device(device_for(request.run.device, where))
    if where.is_main:
        ranks = f" on {where.world} ranks" if where.world > 1 else ""
        print(
            f"fitting {len(files)} files with {request.run.model or TASKS[request.kind][1]} -> {out} "
            f"({len(files) - len(pending)} done before, {len(pending)} to fit{ranks})",
            file=sys.stderr,
        )
    if not where.is_main:  # one progress bar on the console: rank 0's
        request = dataclasses.replace(
            request, run=dataclasses.replace(request.run, train={**request.run.train, "progress": False})
        )
    index = _IndexWriter(out, where.rank)
    for group in _groups(mine, request, device, index):
        _fit_group(group, request, device, index)
    barrier()
    if not where.is_main:
        return None
    entries = merge_index(out, files)
    return _summary(entries, out, perf_counter() - started)


@dataclass
class _Signal:
    """One input file on its way to a run: its config (as a single run of it would have) and data."""

    file: Path
    run_dir: Path
    config: dict[str, Any]
    data: Any
    resume_step: int  # the step of its newest checkpoint (0: starts fresh)


def _prepare(out: Path, request: CollectionRequest, files: list[Path]) -> None:
    """Check the collection directory by the run directory's rules (`RunDirectory.prepare`: fresh,
    --resume or --overwrite) and, for a fresh start, write collection.json."""
    RunDirectory(out).prepare(request.run.resume, request.run.overwrite, marker=COLLECTION_FILE)
    if request.run.resume:
        return
    settings = {
        "kind": request.kind,
        "nfield_version": nfield.__version__,
        "pattern": request.run.source,
        "model": request.run.model or TASKS[request.kind][1],
        "train": request.run.train,
        "overrides": request.run.overrides,
        "task_overrides": _jsonable(request.run.task_overrides),
        "data_options": request.run.data_options,
        "signals_per_batch": request.signals_per_batch,
        "files": [str(f) for f in files],
    }
    write_atomic(out / COLLECTION_FILE, json.dumps(settings, indent=2) + "\n")


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in options.items()}


def _recorded(out: Path, request: CollectionRequest) -> CollectionRequest:
    """The request a collection was started with; a resume may change the training keys (--steps ...)."""
    try:
        settings = json.loads((out / COLLECTION_FILE).read_text())
        kind, model = settings["kind"], settings["model"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise NfieldError(f"{out / COLLECTION_FILE}: unreadable ({type(err).__name__}: {err})") from None
    recorded = {"kind": kind, "model": model, "seed": settings.get("train", {}).get("seed")}
    asked = {"kind": request.kind, "model": request.run.model, "overrides": request.run.overrides}
    if "seed" in request.run.train:
        asked["seed"] = request.run.train["seed"]
    RunDirectory(out).refuse_changes(recorded, asked, what="collection")
    recorded_tasks = _recorded_key(settings, "task_overrides", "task_options")
    run = dataclasses.replace(
        request.run,
        model=model,
        train={**settings.get("train", {}), **request.run.train},
        overrides=_recorded_key(settings, "overrides", "model_options"),
        task_overrides={**_task_overrides(kind, recorded_tasks), **request.run.task_overrides},
        data_options=settings.get("data_options", {}),
    )
    return dataclasses.replace(request, run=run)


def _recorded_key(settings: dict[str, Any], key: str, before: str) -> dict[str, Any]:
    """collection.json's `key` (collections before 0.3 wrote it as `before`)."""
    return settings.get(key, settings.get(before, {}))


def _task_overrides(kind: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """Task options read back from collection.json (nested configs as their dataclasses)."""
    from nfield.components import config_from_dict
    from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig
    from nfield.tasks.teaching import TeachingConfig

    nested = {"teaching": TeachingConfig, "gradient_adjustment": GradientAdjustmentConfig}
    return {k: config_from_dict(nested[k], v) if k in nested and isinstance(v, dict) else v for k, v in recorded.items()}


def _load_signal(file: Path, run_dir: Path, request: CollectionRequest, device: torch.device) -> _Signal:
    """The config and data of one file's run as its single run makes them (`run_config`): a new one
    from the preset, or (resuming) the one in its run directory when that has a checkpoint."""
    directory = RunDirectory(run_dir)
    checkpoint = directory.latest_checkpoint() if directory.is_run() else None
    resume = request.run.resume and checkpoint is not None
    run = dataclasses.replace(request.run, source=str(file), out=run_dir, overrides={} if resume else request.run.overrides)
    config, data = run_config(run, device, directory, resume=resume)
    if data is None:
        data = TASKS[request.kind][0].load_data(config)
    return _Signal(file, run_dir, config, data, checkpoint.step if resume else 0)


def _groups(mine: list[tuple[Path, Path]], request: CollectionRequest, device: torch.device, index: _IndexWriter):
    """This rank's signals in groups of one configuration (and one resume step), in file order of
    their first member; unreadable files are written to the index as skipped on the way.

    Yields lists of (file, run_dir) pairs: only the configuration is kept here, the data is read
    again when its group trains (a large collection never sits in memory at once)."""
    groups: dict[str, list[tuple[Path, Path]]] = {}
    for file, run_dir in mine:
        try:
            signal = _load_signal(file, run_dir, request, device)
        except NfieldError as err:
            _record_failure(index, file, run_dir, "skipped", err)
            continue
        groups.setdefault(_configuration_key(signal), []).append((file, run_dir))
    yield from groups.values()


def _configuration_key(signal: _Signal) -> str:
    """What signals must share to train as one stacked model: everything in the config but the data's
    identity, plus the step they resume from."""
    config = {k: v for k, v in signal.config.items() if k not in ("image", "shape")}
    data_part = signal.config.get("image") or {}
    shape = [data_part.get(k) for k in ("height", "width", "channels", "downscale", "high_dynamic_range")]
    return json.dumps([config, shape, signal.resume_step], sort_keys=True, default=str)


def _fit_group(group: list[tuple[Path, Path]], request: CollectionRequest, device: torch.device, index: _IndexWriter) -> None:
    """Train one configuration's signals: stacked, `signals_per_batch` (or as many as fit) at a
    time, or one after another when the model cannot be stacked."""
    position = 0
    size = request.signals_per_batch or None
    while position < len(group):
        if size is None:  # auto: as many as half the free memory holds, measured on the first signal
            signals, tasks = _build(group[position : position + 1], request, device, index)
            if not signals:
                position += 1
                continue
            size = max(1, int(_free_memory(device) * MEMORY_SHARE // _bytes_per_signal(tasks[0], signals[0])))
            del signals, tasks
        chunk = group[position : position + size]
        position += len(chunk)
        signals, tasks = _build(chunk, request, device, index)
        if not signals:
            continue
        try:
            _fit_chunk(signals, tasks, request, device, index)
        except _TooLarge:  # the estimate was too high: the same signals again, in halves
            position -= len(chunk)
            size = max(1, len(signals) // 2)
            print(f"nfield: {len(signals)} signals did not fit in GPU memory; trying {size} at a time", file=sys.stderr)


class _TooLarge(Exception):
    """A stacked batch ran out of GPU memory in its first step."""


def _fit_chunk(
    signals: list[_Signal], tasks: list[Any], request: CollectionRequest, device: torch.device, index: _IndexWriter
) -> None:
    """Fit the chunk's signals as one stacked model, or one after another when they cannot be
    stacked; every outcome goes to the index."""
    reason = unstackable(tasks) if len(tasks) > 1 else "one signal"
    if reason is None:
        train_cfg = train_config(signals[0].config, signals[0].run_dir)
        resume = signals[0].resume_step > 0
        trainer = StackedTrainer(tasks, train_cfg, [s.run_dir for s in signals], device, resume=resume)
        trainer.observers.extend([CurvesDrawer(), *logger_observers(request.run.logger)])
        try:
            trainer.probe()
        except NfieldError as err:
            reason = str(err)
    if reason is not None:
        if len(signals) > 1:
            print(f"nfield: fitting {len(signals)} signals one after another: {reason}", file=sys.stderr)
        del tasks
        for signal in signals:
            _fit_alone(signal, request, index)
        return
    print(f"fitting {len(signals)} signals as one stacked model on {device}", file=sys.stderr)
    try:
        results = trainer.fit()
    except torch.cuda.OutOfMemoryError:
        if len(signals) == 1 or trainer.step > 0:
            raise
        del trainer, tasks
        torch.cuda.empty_cache()
        raise _TooLarge from None
    except Interrupted:
        raise
    except NfieldError as err:
        for signal in signals:
            index.write({"file": str(signal.file), "run_dir": str(signal.run_dir), "status": "failed", "error": str(err)})
        return
    for i, (signal, result) in enumerate(zip(signals, results)):
        if result is None:
            entry = {"status": "failed", "error": trainer.failures.get(i, "diverged")}
        else:
            entry = {"status": "ok", **result, "signals_in_batch": len(signals)}
        index.write({"file": str(signal.file), **entry, "run_dir": str(signal.run_dir)})


def _build(
    chunk: list[tuple[Path, Path]], request: CollectionRequest, device: torch.device, index: _IndexWriter
) -> tuple[list[_Signal], list[Any]]:
    """The chunk's signals with their run directories written (config.json) and tasks built as their
    single runs would be (seeded, so with the same initial weights)."""
    signals, tasks = [], []
    for file, run_dir in chunk:
        try:
            signal = _load_signal(file, run_dir, request, device)
            directory = RunDirectory(run_dir)
            if signal.resume_step == 0:  # a signal left without a checkpoint (a fit killed before its first) starts over
                directory.prepare(resume=False, overwrite=True)
            directory.write_config(signal.config)
            task = build_task(signal.config, device, signal.data, run_dir)
        except NfieldError as err:
            _record_failure(index, file, run_dir, "skipped", err)
            continue
        signals.append(signal)
        tasks.append(task)
    return signals, tasks


def _fit_alone(signal: _Signal, request: CollectionRequest, index: _IndexWriter) -> None:
    """One signal as a single run (`nfield.runs.single.train`); its failure is recorded, never raised."""
    resume = signal.resume_step > 0
    overrides = {} if resume else request.run.overrides  # a resumed signal keeps its own recorded model
    run = dataclasses.replace(
        request.run, source=str(signal.file), out=signal.run_dir, resume=resume, overwrite=not resume, overrides=overrides
    )
    try:
        result = train(run)
    except Interrupted:
        raise
    except NfieldError as err:
        _record_failure(index, signal.file, signal.run_dir, "failed", err)
        return
    index.write(
        {"file": str(signal.file), "status": "ok", **(result or {}), "run_dir": str(signal.run_dir), "signals_in_batch": 1}
    )


def _record_failure(index: _IndexWriter, file: Path, run_dir: Path, status: str, err: NfieldError) -> None:
    """Say on stderr that `file` was skipped (unreadable, refused) or failed (in training), naming it
    once, and write the index entry with the whole message."""
    said = f"skipped {file}" if status == "skipped" else f"{file} failed"
    print(f"nfield: {said}: {without_path(str(err), file)}", file=sys.stderr)
    index.write({"file": str(file), "run_dir": str(run_dir), "status": status, "error": str(err)})


def without_path(message: str, file: Path) -> str:
    """`message` without a leading ``<file>: `` (the readers' errors name the file they could not
    read), so a line that already names `file` does not name it twice."""
    for prefix in dict.fromkeys((f"{file}: ", f"{Path(file).resolve()}: ")):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _free_memory(device: torch.device) -> float:
    """Bytes free for training on `device`: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    available = available_memory_bytes()
    return float(available) if available is not None else 4.0 * 2**30  # no way to ask: assume a modest machine


def _bytes_per_signal(task: Any, signal: _Signal) -> float:
    """An estimate of one stacked signal's memory: weights, gradients and Adam's two moments (4x
    the parameters), its data, and the activations of a batch kept for backward (every module
    output, measured on a few points, times the batch, twice for their gradients)."""
    model = task.model
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    points = 16
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()) if torch.is_tensor(out) else None)
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            x = torch.zeros(points, task.coordinate_dim, device=next(model.parameters()).device)
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    batch = getattr(task, "global_batch", None) or task.cfg.batch_size
    if task.kind == "image":
        batch = min(batch, task.n_pixels)
    activations = sum(sizes) / points * batch * 4 * 2
    data = signal.data.pixels.numel() * signal.data.pixels.element_size() if task.kind == "image" else 0
    if task.kind == "sdf":
        data = task.cfg.pool_size * 12 * 4
    return 4 * parameters + activations + data


class _IndexWriter:
    """Appends this rank's index lines to ``OUT/.index-rank<r>.jsonl`` as signals finish."""

    def __init__(self, out: Path, rank: int):
        self.path = Path(out) / f".index-rank{rank}.jsonl"

    def write(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_index(out: Path) -> list[dict[str, Any]]:
    """Every index line of a collection: index.jsonl, then the ranks' partial files (later wins)."""
    out = Path(out)
    paths = [out / INDEX_FILE, *sorted(out.glob(".index-rank*.jsonl"))]
    return [entry for path in paths if path.is_file() for entry in read_records(path)]  # a line cut by a kill is skipped


def merge_index(out: Path, files: list[Path]) -> list[dict[str, Any]]:
    """Write index.jsonl (atomically): the latest line per file, in `files` order, and remove the
    ranks' partial files. An "ok" line is kept over a later failure of a resumed attempt."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in read_index(out):
        previous = latest.get(entry.get("file"))
        if previous is None or entry.get("status") == "ok" or previous.get("status") != "ok":
            latest[entry.get("file")] = entry
    entries = [latest[str(f)] for f in files if str(f) in latest]
    write_atomic(out / INDEX_FILE, "".join(json.dumps(e) + "\n" for e in entries))
    for partial in out.glob(".index-rank*.jsonl"):
        partial.unlink(missing_ok=True)
    return entries


def _summary(entries: list[dict[str, Any]], out: Path, seconds: float) -> dict[str, Any]:
    """Counts per status, the mean of the main metric over the fitted signals, the time, the index."""
    ok = [e for e in entries if e.get("status") == "ok"]
    summary: dict[str, Any] = {
        "files": len(entries),
        "ok": len(ok),
        "skipped": sum(e.get("status") == "skipped" for e in entries),
        "failed": sum(e.get("status") == "failed" for e in entries),
    }
    for metric in ("psnr", "ssim", "chamfer_l1", "normal_consistency"):
        values = [e[metric] for e in ok if isinstance(e.get(metric), (int, float))]
        if values:
            summary[f"mean_{metric}"] = sum(values) / len(values)
    summary["seconds"] = round(seconds, 3)
    summary["index"] = str(out / INDEX_FILE)
    return summary
