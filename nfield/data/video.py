"""Videos: frames read from an mp4 (or anything ffmpeg reads), an animated GIF or a folder of images.

Frames are kept as uint8 (T, H, W, C) on the CPU (C = 3, RGB; alpha and grey are converted), so a
video costs its pixels and never a coordinate table. A field sees them as a function of
(x, y, t) in [-1, 1]^3: pixel centres as for images (x to the right, y down) and frame k of T at
t = 2 (k + 0.5) / T - 1, so any other frame count samples the same span (temporal super-resolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from nfield.data.images import quiet_probing
from nfield.errors import NfieldError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = 25.0  # frame rate assumed for folders of frames and files that do not state one


@dataclass
class Video:
    """frames (T, H, W, 3) uint8 on the CPU at `fps` frames per second, and where they came from."""

    frames: torch.Tensor
    fps: float
    source: str

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def channels(self) -> int:
        return self.frames.shape[3]


def load_video(source: str | Path, downscale: int = 1, max_frames: int | None = None) -> Video:
    """Read a video file, an animated GIF or a folder of frame images (sorted by name).

    Args:
        source: the file or folder.
        downscale: integer box-filter factor applied to every frame (sizes cropped to a multiple).
        max_frames: keep only the first this many frames.

    Returns:
        A `Video`; raises `NfieldError` with one line for missing, unreadable or empty input.
    """
    path = Path(source)
    if downscale < 1:
        raise NfieldError(f"--downscale must be a positive integer, got {downscale}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise NfieldError(f"{path}: a folder of frames needs images ({', '.join(FRAME_SUFFIXES)}); found none")
        files = files[:max_frames] if max_frames else files
        frames, fps = [_rgb(_read_frame(f), f) for f in files], DEFAULT_FPS
        if len({f.shape for f in frames}) > 1:
            raise NfieldError(f"{path}: the frames differ in size ({sorted({f.shape[:2] for f in frames})})")
    elif path.is_file():
        frames, fps = _read_file(path, max_frames)
    else:
        raise NfieldError(f"{path}: no such file or folder")
    array = np.stack(frames)
    if downscale > 1:
        t, h, w, c = array.shape
        h, w = h // downscale * downscale, w // downscale * downscale
        if h == 0 or w == 0:
            raise NfieldError(f"--downscale {downscale}: larger than the {array.shape[2]}x{array.shape[1]} frames")
        blocks = array[:, :h, :w].reshape(t, h // downscale, downscale, w // downscale, downscale, c)
        array = (blocks.astype(np.float32).mean(axis=(2, 4)) + 0.5).astype(np.uint8)
    return Video(torch.from_numpy(np.ascontiguousarray(array)), float(fps), str(path))


def _read_frame(path: Path) -> np.ndarray:
    try:
        with quiet_probing():
            return iio.imread(path)
    except Exception as err:
        raise NfieldError(f"{path}: cannot read it as an image ({type(err).__name__})") from None


def _read_file(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    """Every frame of a video file or animated image, and its frame rate."""
    fps = DEFAULT_FPS
    try:
        with quiet_probing():
            meta = iio.immeta(path)
            if meta.get("fps"):
                fps = float(meta["fps"])
            elif meta.get("duration"):  # GIFs: milliseconds per frame
                fps = 1000.0 / float(meta["duration"])
            frames = []
            for frame in iio.imiter(path):
                frames.append(_rgb(np.asarray(frame), path))
                if max_frames and len(frames) >= max_frames:
                    break
    except NfieldError:
        raise
    except Exception as err:
        raise NfieldError(f"{path}: cannot read it as a video ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if len(frames) < 2:
        raise NfieldError(f"{path}: holds {len(frames)} frame(s); a video needs at least 2 (use fit-image for one)")
    if len({f.shape for f in frames}) > 1:
        raise NfieldError(f"{path}: the frames differ in size")
    return frames, fps


def _rgb(frame: np.ndarray, where: Path) -> np.ndarray:
    """(H, W, 3) uint8 from a grey, grey+alpha, RGB or RGBA frame of any integer depth."""
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.integer):
            raise NfieldError(f"{where}: frames must hold integer pixels, got {frame.dtype}")
        frame = (frame.astype(np.float64) * 255 / np.iinfo(frame.dtype).max + 0.5).astype(np.uint8)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 2, 3, 4) or 0 in frame.shape[:2]:
        raise NfieldError(f"{where}: not a grey, grey+alpha, RGB or RGBA frame (shape {frame.shape})")
    colour = frame[..., :3] if frame.shape[2] >= 3 else np.repeat(frame[..., :1], 3, axis=2)
    return np.ascontiguousarray(colour)


def video_coordinates(frame: torch.Tensor, row: torch.Tensor, column: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B,) frame, row and column indices of a (T, H, W) video -> (B, 3) float32 (x, y, t) in [-1, 1]
    at the pixels' centres and the frames' interval centres."""
    n_frames, height, width = shape
    x = (column.float() + 0.5) * (2.0 / width) - 1.0
    y = (row.float() + 0.5) * (2.0 / height) - 1.0
    t = (frame.float() + 0.5) * (2.0 / n_frames) - 1.0
    return torch.stack([x, y, t], dim=-1)
