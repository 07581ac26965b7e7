"""A run directory's files and its rules: every file name, a new run, a resume, a load.

A run directory (``runs/<task>/<name>/``) holds::

    config.json          the full resolved configuration (what `nfield.runs.single.load_run` rebuilds)
    metrics.jsonl        one JSON record per line: train, eval and backends records, appended as it trains
    checkpoints/         step_0000500/{model.safetensors, trainer.pt}, written atomically
    eval.json            the final evaluation of the run's outputs (SDF meshes)
    cameras.json         a NeRF's training cameras (render paths and the viewer read them)
    curves.png           the metrics drawn (`nfield plot`)
    tensorboard/         TensorBoard event files (``--logger tensorboard``, `nfield.runs.loggers`)
    wandb/               Weights & Biases offline runs (``--logger wandb``; W&B's own name for its folder)
    distill/             a distilled run's first phase: a run directory of its own

A collection of many signals (``fit-image FOLDER``) keeps ``collection.json`` and ``index.jsonl``
beside one run directory per signal. `RunDirectory` owns those names and the rules every command
follows (`prepare`: a new run refuses to clobber one, ``--overwrite`` replaces only what nfield
wrote, ``--resume`` needs a run to continue; `refuse_changes`: what a resume may not change), so
single runs, collections and distillation apply the same rules in the same words.
`read_records` and `MetricsReader` are the one reader of metrics.jsonl, whole or as it grows.

This module sits at the bottom of the package (tasks write their outputs here, the trainer its
metrics and checkpoints, the commands read them back), so it imports nothing but the leaves.

Example::

    >>> run = RunDirectory(Path("runs/image/camera-siren"))     # doctest: +SKIP
    >>> run.prepare(resume=False, overwrite=False)               # doctest: +SKIP
    >>> run.write_config({"task": "image", ...})                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfield.errors import NfieldError
from nfield.outputs import check_writable_directory, writable_directory, write_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
CAMERAS_FILE = "cameras.json"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # where wandb.init(dir=RUN) writes
CHECKPOINTS_DIR = "checkpoints"
DISTILL_DIR = "distill"
COLLECTION_FILE = "collection.json"
INDEX_FILE = "index.jsonl"
MODEL_FILE = "model.safetensors"  # inside a checkpoint
STATE_FILE = "trainer.pt"  # inside a checkpoint
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk: ``checkpoints/step_<step>/`` with both of its files."""

    step: int
    path: Path

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE


@dataclass(frozen=True)
class RunDirectory:
    """The directory of one run (or, with ``marker=COLLECTION_FILE``, of a collection of runs).

    Attributes:
        path: the directory.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- file names ---------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def eval(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def cameras(self) -> Path:
        return self.path / CAMERAS_FILE

    @property
    def curves(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def wandb(self) -> Path:
        return self.path / WANDB_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def distill(self) -> RunDirectory:
        """A distilled run's first phase, a run directory of its own."""
        return RunDirectory(self.path / DISTILL_DIR)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    # --- the config ---------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether a config.json says this is a run (written when the run started)."""
        return self.config.is_file()

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json``; `NfieldError` if the directory is not a readable run."""
        if not self.path.is_dir():
            raise NfieldError(f"{self.path}: no such run directory")
        if not self.config.is_file():
            raise NfieldError(f"{self.path}: not an nfield run directory (no {CONFIG_FILE})")
        try:
            config = json.loads(self.config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise NfieldError(f"{self.config}: unreadable ({type(err).__name__}: {err})") from None
        if not isinstance(config, dict) or "task" not in config:
            raise NfieldError(f"{self.config}: not an nfield run config (no 'task' key)")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        write_atomic(self.config, json.dumps(config, indent=2) + "\n")

    def recorded_eval(self) -> dict[str, Any]:
        """The metrics the run's outputs were scored with (eval.json), or {} when it has none."""
        return json.loads(self.eval.read_text()) if self.eval.is_file() else {}

    # --- checkpoints --------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints of the run, oldest first."""
        found = []
        if self.checkpoints.is_dir():
            for entry in self.checkpoints.iterdir():
                match = _STEP_DIR.match(entry.name)
                if match and (entry / MODEL_FILE).is_file() and (entry / STATE_FILE).is_file():
                    found.append(Checkpoint(int(match.group(1)), entry))
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint(self) -> Checkpoint | None:
        found = self.list_checkpoints()
        return found[-1] if found else None

    def require_checkpoint(self) -> Checkpoint:
        """The run's newest checkpoint; `NfieldError` if it has none."""
        checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            raise NfieldError(f"{self.path}: the run has no checkpoint yet (train it first)")
        return checkpoint

    # --- the rules ----------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """`NfieldError` now, before any data is read, if the directory could not be created."""
        check_writable_directory(self.path)

    def prepare(self, resume: bool, overwrite: bool, marker: str = CONFIG_FILE) -> None:
        """Check that the directory may be written and make it: a fresh start refuses to clobber an
        existing run (``--overwrite`` replaces it, but never a folder nfield did not write), and a
        resume needs one. `marker` is the file that says what the directory holds: a run's
        config.json, or a collection's collection.json."""
        what = "collection" if marker == COLLECTION_FILE else "run"
        if resume and overwrite:
            raise NfieldError("--resume and --overwrite contradict each other; pass one")
        if self.path.exists() and not self.path.is_dir():
            raise NfieldError(f"--out {self.path}: exists and is not a directory")
        if resume:
            if what == "run":
                self.read_config()
            elif not (self.path / marker).is_file():
                raise NfieldError(f"--out {self.path}: holds no collection to resume (no {marker}); start without --resume")
            return
        if self.path.is_dir() and any(self.path.iterdir()):
            held = "a run" if what == "run" else "runs"
            if not overwrite:
                raise NfieldError(
                    f"--out {self.path}: already holds {held}; pass --resume to continue "
                    f"{'it' if what == 'run' else 'them'} or --overwrite to replace {'it' if what == 'run' else 'them'}"
                )
            if (self.path / marker).exists() or (what == "run" and self.list_checkpoints()):
                shutil.rmtree(self.path)
            else:
                raise NfieldError(
                    f"--out {self.path}: is a non-empty directory that is not an nfield {what}; refusing to delete it"
                )
        writable_directory(self.path)

    def refuse_changes(self, recorded: dict[str, Any], asked: dict[str, Any], what: str = "run") -> None:
        """`NfieldError` when a resume asks to change what a run (or collection) cannot change.

        Args:
            recorded: what the run was started with: ``kind``, ``model`` and ``seed``.
            asked: what the resume asks for: ``kind``, and optionally ``model`` (None: unchanged),
                ``overrides`` (model hyper-parameters: any is a change) and ``seed``.
            what: "run" or "collection", for the messages.
        """
        verb = "trained" if what == "run" else "fitted"
        kind = asked["kind"]
        if recorded["kind"] != kind:
            if what == "run":
                raise NfieldError(
                    f"{self.path}: is a '{recorded['kind']}' run, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} run"
                )
            raise NfieldError(f"{self.path}: is a collection of '{recorded['kind']}' runs, not {kind}")
        if asked.get("model") is not None and asked["model"] != recorded.get("model"):
            raise NfieldError(
                f"{self.path}: was {verb} with --model {recorded.get('model')}; resume it without changing the model"
            )
        if asked.get("overrides"):
            raise NfieldError(f"model options cannot change when resuming; start a new {what} to change the model")
        if asked.get("seed", recorded.get("seed")) != recorded.get("seed"):
            raise NfieldError(f"{self.path}: was {verb} with --seed {recorded.get('seed')}; resume it without changing the seed")


class MetricsReader:
    """A metrics.jsonl read as it grows (the live viewer's way): `read_new` returns the records
    appended since the last call, whole lines only (`read_records` reads a whole file).

    Lines that are not JSON objects (a line cut by a kill) are skipped.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.offset = 0  # bytes of whole lines read so far

    def read_new(self) -> tuple[list[dict[str, Any]], bool]:
        """(the records appended since the last call, whether the file was rewritten since: a
        resumed run drops the lines past its checkpoint, and reading starts over)."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return [], False
        restarted = size < self.offset
        if restarted:
            self.offset = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return _records(complete.decode("utf-8", "replace")), restarted


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (metrics.jsonl, a collection's index.jsonl), in file order
    (a last line without its newline included)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise NfieldError(f"{path}: unreadable ({err.strerror or err})") from None
    return _records(text)


def _records(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_metrics(path: Path | str, record: dict[str, Any]) -> None:
    """Append one record as a line of metrics.jsonl."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path | str, step: int) -> None:
    """Drop the lines of a metrics.jsonl written after `step` (by a run interrupted after its last
    checkpoint), and lines that are not records."""
    path = Path(path)
    if not path.exists():
        return
    kept = [record for record in read_records(path) if record.get("step", 0) <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
