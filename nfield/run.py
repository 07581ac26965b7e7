"""Run directories: where a training run keeps its config, metrics, checkpoints and outputs.

``runs/<task>/<name>/config.json`` holds the full resolved configuration, so `load_run` can
rebuild the model of any run from its directory alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from nfield.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints
from nfield.errors import NfieldError

CONFIG_FILE = "config.json"


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
    run_dir.mkdir(parents=True, exist_ok=True)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, run_dir / CONFIG_FILE)


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
    checkpoint = latest_checkpoint(Path(run_dir))
    if checkpoint is None:
        raise NfieldError(f"{run_dir}: the run has no checkpoint yet (train it first)")
    return checkpoint
