"""What every benchmark script shares: device synchronisation and the report's header fields."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from nfield.training.trainer import Trainer


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings measure it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'CPU (x86_64, 2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def report_header(device: torch.device, **fields) -> dict:
    """The JSON report's first keys: date (UTC), device, torch version, the command line, then `fields`."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "device": device_name(device),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        **fields,
    }


def write_report(path: Path | None, report: dict) -> None:
    """Write the JSON report atomically (nothing when `path` is None). Benchmarks call it after every
    result, so a run stopped at its time limit still leaves what it measured."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2, default=float) + "\n")
    os.replace(partial, path)


class UncheckpointedTrainer(Trainer):
    """A trainer that never writes checkpoints: benchmarks pause `fit` for clock checks and
    profiles, and each pause would otherwise save the full model and optimiser state inside the
    timed region; nothing in a benchmark resumes."""

    def save(self) -> None:
        pass
