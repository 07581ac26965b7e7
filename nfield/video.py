"""Rendered frame sequences to H.264 mp4 videos through imageio-ffmpeg's ffmpeg binary.

Where that binary is missing (imageio-ffmpeg not installed, a platform without its bundled binary,
or IMAGEIO_FFMPEG_EXE pointing nowhere), the frames are written as numbered PNGs in a folder next
to the requested video instead, with one line on stderr saying so and how to get videos.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def _ffmpeg_missing() -> str | None:
    """Why no ffmpeg binary is usable, as one phrase, or None when imageio-ffmpeg has one."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return "imageio-ffmpeg is not installed"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # what it raises when it finds no binary
        return "imageio-ffmpeg found no ffmpeg binary"
    if shutil.which(exe) is None:
        return f"no ffmpeg binary at {exe}"
    return None


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Write `frames` (N, H, W, 3) uint8 as the mp4 `path` at `fps` frames per second.

    Returns what was written: `path`, or, without an ffmpeg binary, the folder ``<stem>_frames``
    next to it holding ``frame_0000.png`` ... (earlier frames there are replaced).

    >>> write_video(Path("orbit.mp4"), np.zeros((8, 32, 32, 3), np.uint8), fps=30)
    PosixPath('orbit.mp4')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = _ffmpeg_missing()
    if missing is None:
        iio.imwrite(path, frames, plugin="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=2)
        return path
    folder = path.with_name(f"{path.stem}_frames")
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("frame_*.png"):
        stale.unlink()
    digits = max(4, len(str(len(frames) - 1)))
    for index, frame in enumerate(frames):
        iio.imwrite(folder / f"frame_{index:0{digits}d}.png", frame)
    print(
        f"{missing}: wrote {len(frames)} PNG frames to {folder} instead of {path} "
        "(for videos: pip install imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to an ffmpeg binary)",
        file=sys.stderr,
    )
    return folder
