"""The ``nfield`` command line: tyro over dataclasses of flags, one call into `nfield.runs.single` each.

Every training command takes ``--steps``, ``--out``, ``--seed``, ``--device`` and ``--resume``;
``nfield eval RUN_DIR`` prints its metrics as one JSON object on the last stdout line. A user
error prints one line on stderr and exits with status 1; a malformed command line (an unknown
flag, a value of the wrong type, a missing argument) prints one line naming the flag, what it
expects and the closest flags (`nfield.cli.parse_errors`) and exits with status 2. Ctrl-C or
SIGTERM during training saves a checkpoint, says how to resume, and exits with status 130.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import torch
import tyro

import nfield
from nfield.backends import choose_backend
from nfield.cli.audio import FitAudio
from nfield.cli.distill import Distill
from nfield.cli.export import Export
from nfield.cli.image import FitImage, RenderImage
from nfield.cli.nerf import TrainNeRF
from nfield.cli.parse_errors import CommandLineError, one_line_parse_errors
from nfield.cli.plot import Plot
from nfield.cli.process_data import ProcessData
from nfield.cli.sdf import FitSDF, Mesh
from nfield.cli.video import FitVideo
from nfield.cli.view import View
from nfield.distributed import layout, shutdown
from nfield.encodings.grid import GRID_BACKENDS
from nfield.errors import Interrupted, NfieldError
from nfield.flag_hints import STATED
from nfield.networks.mlp import MLP_BACKENDS
from nfield.render.volume import RENDER_BACKENDS
from nfield.runs.single import load_run
from nfield.runs.views import RenderOptions, describe, evaluate, render
from nfield.training.trainer import resolve_device


@dataclass(frozen=True)
class Render:
    """Render a trained run: an image run's picture at any size, a NeRF along a camera path to an
    mp4, or a fitted SDF by sphere tracing (one view and its depth map, or a turntable with --orbit)."""

    run_dir: tyro.conf.Positional[Path]  # a run directory written by fit-image, fit-sdf, train-nerf or distill
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    options: Annotated[RenderOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="render")] = RenderOptions()

    def __call__(self) -> None:
        print(render(load_run(self.run_dir, self.device), self.options), file=sys.stderr)


@dataclass(frozen=True)
class Evaluate:
    """Evaluate a run against its target; prints one JSON object on the last line.

    Image runs: PSNR and SSIM. NeRF runs: PSNR and SSIM over every held-out view. SDF runs:
    chamfer_l1 and normal_consistency between a mesh extracted at --resolution and the input
    surface (normalised [-1, 1] box units), and the volumetric iou.
    """

    run_dir: tyro.conf.Positional[Path]  # a run directory
    image: Annotated[Optional[str], STATED] = None  # image runs: target image (default: the one the run was fitted to)
    scene: Annotated[Optional[str], STATED] = None  # NeRF runs: scene folder (default: the one the run was trained on)
    shape: Annotated[Optional[Path], STATED] = None
    """SDF runs: reference mesh or point cloud (default: the one the run was fitted to)"""
    lod: Annotated[Optional[int], STATED] = None  # SDF runs: level of detail (default the finest)
    resolution: int = 256  # SDF runs: marching-cubes samples per axis
    half: bool = False  # NeRF runs: evaluate the field in half precision (float16 on CUDA, bfloat16 on CPU)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True  # show a progress bar (NeRF views, SDF mesh extraction)

    def __call__(self) -> None:
        sources = [s for s in (self.image, self.scene, self.shape) if s is not None]
        if len(sources) > 1:
            raise NfieldError("pass at most one of --image, --scene and --shape (the one the run's kind takes)")
        run = load_run(self.run_dir, self.device, data=True, source=sources[0] if sources else None)
        print(json.dumps(evaluate(run, self.lod, self.resolution, self.half, self.progress)))


@dataclass(frozen=True)
class Info:
    """Print versions, the compute device and available backends, or a run's summary."""

    run_dir: Annotated[tyro.conf.Positional[Optional[Path]], STATED] = None
    """a run directory to describe (without one: versions, devices and backends)"""

    def __call__(self) -> None:
        if self.run_dir is not None:
            print("\n".join(describe(load_run(self.run_dir, "cpu"))))
            return
        print("\n".join(environment()))


def environment() -> list[str]:
    """Versions, devices, the backends installed and the one `auto` picks for each component."""
    import numpy

    lines = [f"nfield {nfield.__version__}", f"python {platform.python_version()} ({platform.machine()})"]
    lines += [f"torch {torch.__version__}", f"numpy {numpy.__version__}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            memory = props.total_memory / 2**30
            lines.append(f"device cuda:{i}: {props.name}, {memory:.1f} GiB, compute capability {props.major}.{props.minor}")
    else:
        lines.append(f"device cpu ({torch.get_num_threads()} threads); CUDA not available")
    lines += ["backends:", "  torch (reference): available"]
    for module, label in (("triton", "triton kernels"), ("tinycudann", "tiny-cuda-nn")):
        try:
            version = getattr(__import__(module), "__version__", "installed")
            lines.append(f"  {label}: {version} ({'usable' if torch.cuda.is_available() else 'installed, needs CUDA'})")
        except Exception:
            lines.append(f"  {label}: not installed")
    device = resolve_device("auto")
    chosen = {
        "HashGrid, DenseGrid": choose_backend("HashGrid", "auto", device, GRID_BACKENDS),
        "MLP": choose_backend("MLP", "auto", device, MLP_BACKENDS, auto_triton=False),
        "composite, render_weights": choose_backend("composite", "auto", device, RENDER_BACKENDS),
        "OccupancyGrid.march": choose_backend("OccupancyGrid.march", "auto", device, RENDER_BACKENDS),
    }
    lines.append(f"backend 'auto' on {device}: " + "; ".join(f"{name} -> {backend}" for name, backend in chosen.items()))
    return lines


COMMANDS = {
    "fit-image": FitImage,
    "render-image": RenderImage,
    "fit-sdf": FitSDF,
    "train-nerf": TrainNeRF,
    "process-data": ProcessData,
    "fit-audio": FitAudio,
    "fit-video": FitVideo,
    "distill": Distill,
    "mesh": Mesh,
    "export": Export,
    "render": Render,
    "eval": Evaluate,
    "info": Info,
    "plot": Plot,
    "view": View,
}


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (what `kill` and job schedulers send) stops a command as Ctrl-C does: a training run
    saves a checkpoint and says how to resume."""
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, ``nfield: warning: ...``, not Python's two lines of source location."""
    text = (str(message).strip().splitlines() or [category.__name__])[0]
    print(f"nfield: warning: {text}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nfield`` console script; returns the exit status."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        with one_line_parse_errors(sys.argv[1:] if argv is None else list(argv), COMMANDS):
            command = tyro.extras.subcommand_cli_from_dict(
                COMMANDS,
                prog="nfield",
                args=argv,
                description="nfield: neural fields from the command line",
                config=(tyro.conf.DisallowNone, tyro.conf.PositionalMetavarFromFieldName),
            )
        command()
    except CommandLineError as err:
        if layout().is_main:
            print(f"nfield: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        if layout().is_main:
            print(f"nfield: {err}", file=sys.stderr)
        return 130
    except NfieldError as err:
        if layout().is_main:  # under torchrun, rank 0 says it once
            print(f"nfield: error: {err}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("nfield: error: out of GPU memory; lower --batch-size (or render at a smaller --scale)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nfield: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`nfield info | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        shutdown()
        warnings.showwarning = shown
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0
