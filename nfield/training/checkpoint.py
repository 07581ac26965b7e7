"""Checkpoints: model weights in safetensors plus optimiser, RNG and task state, written atomically
(finding them is the run directory's: `nfield.run_directory.RunDirectory.latest_checkpoint`).

Layout inside a run directory::

    checkpoints/step_000500/model.safetensors   every parameter and buffer of the model
    checkpoints/step_000500/trainer.pt          step, optimiser, grad scaler, RNG and task state

A checkpoint is written into a temporary folder which is renamed into place only when both files
are complete and flushed, so a crash leaves either the old set or the new one, never half a file;
the next save removes a temporary folder a killed process left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nfield.errors import NfieldError
from nfield.run_directory import CHECKPOINTS_DIR, MODEL_FILE, STATE_FILE, Checkpoint, RunDirectory


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int = 3) -> Checkpoint:
    """Write model weights and trainer state for `step`; keep only the newest `keep` checkpoints."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:07d}"
    tmp = folder / f".tmp-step_{step:07d}-{os.getpid()}"
    for unfinished in folder.glob(".tmp-step_*"):  # ours, or left by a process killed mid-write
        shutil.rmtree(unfinished, ignore_errors=True)
    tmp.mkdir()
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    save_file(tensors, str(tmp / MODEL_FILE), metadata={"step": str(step)})
    torch.save(state, tmp / STATE_FILE)
    for name in (MODEL_FILE, STATE_FILE):
        _fsync(tmp / name)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(folder)
    for old in RunDirectory(run_dir).list_checkpoints()[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(step, final)


def load_model_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load a checkpoint's safetensors weights into `model` (strict: every key must match)."""
    try:
        tensors = load_file(str(checkpoint.model_file))
    except (SafetensorError, OSError) as err:
        raise NfieldError(f"{checkpoint.model_file}: cannot read the weights ({err})") from None
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    try:
        model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        specific = [line for line in lines[1:] if line.startswith(("size mismatch", "Missing key", "Unexpected key"))]
        reason = (specific or lines or [type(err).__name__])[0].rstrip(".")
        raise NfieldError(f"{checkpoint.model_file}: the weights do not fit this model ({reason})") from None


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    try:
        return torch.load(checkpoint.state_file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises pickle/zip/runtime errors for a damaged file
        raise NfieldError(f"{checkpoint.state_file}: cannot read the trainer state ({type(err).__name__})") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
