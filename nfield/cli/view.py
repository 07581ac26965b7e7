"""``nfield view RUN_DIR``: the page for a run, following its checkpoints as they appear.

The run may be finished, still training in another process, or just started: until its first
checkpoint the page and the terminal say the viewer is waiting, and every newer checkpoint is
loaded (within `POLL_SECONDS`) and the frames redrawn. Image and video runs show their target
when it can still be read.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import tyro

from nfield.errors import NfieldError
from nfield.flag_hints import STATED
from nfield.run_directory import RunDirectory
from nfield.runs.single import task_from_config
from nfield.training.checkpoint import load_model_weights
from nfield.training.trainer import resolve_device


@dataclass(frozen=True)
class View:
    """Serve a web page that shows a run from any viewpoint, following its checkpoints as they appear.

    NeRF and KiloNeRF runs: rendered from the browser's camera (RGB, depth or opacity), coarse while
    the camera moves and refined when it stops, with the training cameras and KiloNeRF's occupied
    cells. SDF runs: the sphere-traced surface with a LOD slider, or the exported mesh. Image and
    video runs: the reconstruction at any zoom beside the target and the error map. The page shows
    the step and the loss and PSNR curves. On a remote machine: ssh -L PORT:localhost:PORT HOST.
    """

    run_dir: tyro.conf.Positional[Path]  # a run directory (finished, training, or waiting for its first checkpoint)
    port: int = 8080  # the page's port (it must be free)
    host: str = "127.0.0.1"  # the address to listen on (0.0.0.0: every network interface)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    resolution: Annotated[Optional[int], STATED] = None
    """rows of a full frame (default 720 on CUDA, 240 on the CPU; image and video runs: the image's pixels one to one,
    240 to 720 rows on the CPU; the page has a slider)"""

    def __call__(self) -> None:
        view(self.run_dir, self.host, self.port, self.device, self.resolution)


#: Seconds between looks for a newer checkpoint.
POLL_SECONDS = 1.0
#: Seconds of drawing between looks at the page's events.
WORK_SECONDS = 0.1


def view(run_dir: Path, host: str = "127.0.0.1", port: int = 8080, device: str = "auto", resolution: int | None = None) -> None:
    """Serve `run_dir`'s page until Ctrl-C (or SIGTERM).

    The loop draws while a browser wants frames and otherwise sleeps (`Viewer.wait_for_work`) until
    a browser event or the next look for a checkpoint (every `POLL_SECONDS`): an idle page costs
    next to no CPU.
    """
    from nfield.viewer.server import MAX_ROWS, MIN_ROWS, Viewer, check_port  # viser: loaded by this command only

    run_dir = Path(run_dir)
    config = RunDirectory(run_dir).read_config()
    if resolution is not None and not MIN_ROWS <= resolution <= MAX_ROWS:
        raise NfieldError(f"--resolution {resolution}: rows of a full frame, from {MIN_ROWS} to {MAX_ROWS}")
    check_port(host, port)
    torch_device = resolve_device(device)
    task = _task(run_dir, config, torch_device)
    viewer = Viewer(run_dir, config, task, host, port, resolution)
    print(f"viewer: {viewer.url} shows {run_dir} (Ctrl-C to stop)", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    loaded, next_look, waiting_said = None, 0.0, False
    try:
        while True:
            if time.perf_counter() >= next_look:
                next_look = time.perf_counter() + POLL_SECONDS
                checkpoint = RunDirectory(run_dir).latest_checkpoint()
                if checkpoint is None and not waiting_said:
                    waiting_said = True
                    print(f"viewer: {run_dir} has no checkpoint yet; waiting for the first one", file=sys.stderr)
                    viewer.set_progress("*waiting for the run's first checkpoint*")
                elif checkpoint is not None and checkpoint.step != loaded:
                    try:
                        load_model_weights(task.model, checkpoint)
                    except NfieldError:  # being replaced (a newer one rotated it out): next look
                        checkpoint = None
                    if checkpoint is not None:
                        task.model.eval()
                        first = loaded is None
                        loaded = checkpoint.step
                        viewer.weights_changed()
                        if first:
                            viewer.calibrate()
                        print(f"viewer: showing step {loaded:,}", file=sys.stderr)
                if loaded is not None:
                    viewer.refresh_curves()
                    viewer.set_progress(_status(loaded, config, viewer))
            if loaded is not None and viewer.has_work():
                viewer.work(WORK_SECONDS)
            else:
                viewer.wait_for_work(next_look - time.perf_counter(), drawing=loaded is not None)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        viewer.close()
    print("viewer: stopped", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _task(run_dir: Path, config: dict[str, Any], device: torch.device) -> Any:
    """The run's task; image and video runs with their target when it is still readable."""
    if config["task"] in ("image", "video"):
        try:
            return task_from_config(run_dir, config, device, data=True)
        except NfieldError as err:
            print(f"viewer: the target is not readable ({err}); showing the reconstruction only", file=sys.stderr)
    return task_from_config(run_dir, config, device)


def _status(step: int, config: dict[str, Any], viewer: Any) -> str:
    total = config.get("train", {}).get("steps")
    parts = [f"checkpoint step {step:,}" + (f" of {total:,}" if total else "")]
    record, last_eval = viewer.curves.last, viewer.curves.last_eval
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4g}")
    if "psnr" in last_eval:
        parts.append(f"eval PSNR {last_eval['psnr']:.2f} dB")
    elif "train_psnr" in record:
        parts.append(f"train PSNR {record['train_psnr']:.2f} dB")
    return " · ".join(parts)
