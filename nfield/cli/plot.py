"""``nfield plot``: training curves of one run, or several overlaid."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from nfield.errors import NfieldError
from nfield.runs.plots import CURVES_FILE, plot_runs, write_curves

#: Where several runs' overlay goes without --out (in the current directory).
OVERLAY_FILE = "plot.png"


@dataclass(frozen=True)
class Plot:
    """Plot training curves from metrics.jsonl: loss against steps and training time, and PSNR
    (train PSNR as a line, evaluations as markers; SDF runs: their main held-out metric).

    One run: redraws RUN_DIR/curves.png (training writes it too). Several runs: overlaid, one
    colour per run, into plot.png in the current directory. --out picks the file and, by its
    extension, the format (.png, .pdf, .svg, .jpg).
    """

    run_dirs: Annotated[
        tyro.conf.Positional[tuple[Path, ...]], tyro.conf.arg(metavar="RUN_DIR...", help_behavior_hint="(required)")
    ]
    """one or more run directories"""
    out: Annotated[
        Optional[Path], tyro.conf.arg(help_behavior_hint="(default: RUN_DIR/curves.png for one run, ./plot.png for several)")
    ] = None
    """the figure to write; its extension picks the format"""

    def __call__(self) -> None:
        if not self.run_dirs:
            raise NfieldError("give one or more run directories: nfield plot RUN_DIR... [--out FILE]")
        if len(self.run_dirs) == 1:
            path = write_curves(self.run_dirs[0], self.out or self.run_dirs[0] / CURVES_FILE)
        else:
            path = plot_runs(self.run_dirs, self.out or Path(OVERLAY_FILE))
        print(f"wrote {path}", file=sys.stderr)
