"""``nfield view``: the web viewer of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from nfield.flag_hints import STATED


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
        from nfield.viewer.serve import view

        view(self.run_dir, self.host, self.port, self.device, self.resolution)
