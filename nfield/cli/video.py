"""Video command: ``fit-video``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from nfield.cli.image import ImageModelOptions
from nfield.cli.options import RunFlags, TrainingCommand, device_default, gradient_adjustment_flags, train_options
from nfield.flag_hints import STATED
from nfield.presets.video import VIDEO_PRESETS
from nfield.tasks.teaching import TeachingConfig
from nfield.tasks.video import VideoTaskConfig

VideoTrainOptions = train_options(VIDEO_PRESETS)
_IGA = VideoTaskConfig().gradient_adjustment  # video's IGA defaults, stated in the help


@dataclass(frozen=True)
class FitVideo(TrainingCommand):
    """Fit a neural field over (x, y, t) to a video (mp4 or anything ffmpeg reads, an animated GIF,
    or a folder of frame images), on random pixel batches across all frames.

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, reconstruction.mp4 and
    psnr_per_frame.json (every frame's PSNR); prints the mean PSNR/SSIM as JSON on the last line with
    psnr_per_frame for the frames the final evaluation scored and scored_frames, their indices.
    `nfield render RUN --frames N --fps F` re-renders it at any frame count, rate and size.
    """

    video: tyro.conf.Positional[str]  # video file, animated GIF or folder of frames
    model: Annotated[Optional[str], STATED] = None
    """hash, siren, relu-pe, or any other fit-image model over (x, y, t) (default hash)"""
    downscale: int = 1  # integer box-filter downscaling of every frame
    max_frames: Annotated[Optional[int], STATED] = None  # fit only the first this many frames
    batch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(VIDEO_PRESETS, "batch_size"))] = None
    """pixels per step, drawn across all frames"""
    teaching: bool = False
    """INT (nonparametric teaching): each step trains on the pixels of a random batch fitted worst"""
    iga: bool = False  # IGA (inductive gradient adjustment): gradients rebalanced by the eNTK against spectral bias
    iga_patch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.patch_size})")] = None
    """IGA: side in pixels of the patches of one frame that each give one eNTK sample"""
    iga_n_balanced: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.n_balanced})")] = None
    """IGA: the n largest eNTK eigenvalues are lowered to the (n+1)-th"""
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[VideoTrainOptions, tyro.conf.OmitArgPrefixes] = VideoTrainOptions()
    model_options: Annotated[ImageModelOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="model")] = ImageModelOptions()

    def __call__(self) -> None:
        data = {"downscale": self.downscale, "max_frames": self.max_frames}
        task = {
            "batch_size": self.batch_size,
            "teaching": TeachingConfig(enabled=True) if self.teaching else None,
            "gradient_adjustment": gradient_adjustment_flags(self.iga, self.iga_patch_size, self.iga_n_balanced, _IGA),
        }
        self.submit("video", self.video, task, data)
