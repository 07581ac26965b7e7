"""``nfield export``: geometry exported from a trained run (NeRF runs: a coloured point cloud)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from nfield.errors import NfieldError
from nfield.flag_hints import STATED
from nfield.runs.single import load_run
from nfield.runs.views import export_point_cloud
from nfield.tasks.nerf_geometry import DEFAULT_DOWNSCALE, DEFAULT_MIN_OPACITY, DEFAULT_POINTS


@dataclass(frozen=True)
class Export:
    """Export a trained run's geometry.

    NeRF runs (train-nerf, distill), with --point-cloud: render every training view (cameras.json)
    at 1/--downscale of its size and back-project each pixel more than --min-opacity opaque to its
    expected depth, with its rendered colour; at most --points points (a uniform random subset,
    fixed seed), written as .ply, .obj or .glb.
    """

    run_dir: tyro.conf.Positional[Path]  # a run directory written by train-nerf or distill
    point_cloud: bool = False  # NeRF runs: write a coloured point cloud of the training views
    out: Annotated[Optional[Path], STATED] = None  # output file, .ply/.obj/.glb (default RUN_DIR/points.ply)
    points: int = DEFAULT_POINTS  # most points written (a uniform random subset beyond that)
    downscale: int = DEFAULT_DOWNSCALE  # render the training views at 1/this of their size
    min_opacity: float = DEFAULT_MIN_OPACITY  # pixels at or below this opacity give no point
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True  # show the progress bar

    def __call__(self) -> None:
        if not self.point_cloud:
            raise NfieldError("nothing to export: pass --point-cloud (a coloured point cloud of the training views)")
        run = load_run(self.run_dir, self.device)
        options = dict(points=self.points, downscale=self.downscale, min_opacity=self.min_opacity, progress=self.progress)
        print(export_point_cloud(run, self.out, **options), file=sys.stderr)
