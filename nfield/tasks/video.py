"""Video fitting: a field maps (x, y, t) in [-1, 1]^3 to RGB.

Each step draws `batch_size` random pixels across all frames (a random frame, row and column per
sample) from the frames kept as uint8 on the CPU, so a long video is never one coordinate table and
device memory does not grow with its length.

With teaching (INT, `nfield.tasks.teaching`) a pick draws `candidate_batches` random batches' worth
of pixels the same way and the field trains on the share of them it fits worst, until the next
pick. The default of one batch is what image fitting does on random batches: a step never trains
on more than `batch_size` pixels, and early steps on fewer (the schedule's share), which is where
INT saves time. More candidate batches rank more pixels; the trained batch then grows with the
share up to all of them. The picks are flat pixel indices (frame, row, column), kept in
checkpoints with the sampler's generator.

With IGA (`nfield.tasks.gradient_adjustment`) the groups are `gradient_adjustment.patch_size`
squares of one frame (default 32 x 32, the image's), border patches cut to the frame, and every
random draw (teaching's candidates too) is whole random patches of random frames, as many as fill
the draw's pixels: batch_size // patch_size^2 (at least one) per batch.

Evaluation renders the frames it scores (`eval_frames` evenly spaced ones, or all) and reports the
mean PSNR and SSIM, the PSNR of each scored frame and the indices of those frames; the export
writes the reconstruction as an mp4 at the video's frame rate and every frame's PSNR. Rendering takes any frame
count and size: more frames over the same span is temporal super-resolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nfield.data.video import Video, load_video, video_coordinates
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.metrics import psnr, psnr_from_mse, ssim
from nfield.progress import progress_bar
from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig, patch_groups, random_blocks
from nfield.tasks.signal import SignalTask
from nfield.tasks.teaching import TeachingConfig
from nfield.video import write_video


@dataclass(frozen=True)
class VideoTaskConfig:
    batch_size: int = 2**18  # pixels per step, drawn across all frames
    render_chunk: int = 2**17  # pixels per forward pass when rendering
    eval_frames: int = 0  # frames scored by the periodic evaluation, evenly spaced (0: all)
    teaching: TeachingConfig = dataclasses.field(default_factory=TeachingConfig)  # INT: train on the worst-fitted pixels
    candidate_batches: int = 1  # teaching: pixels ranked per pick, in training batches (1: never more than a batch)
    gradient_adjustment: GradientAdjustmentConfig = dataclasses.field(
        default_factory=GradientAdjustmentConfig
    )  # IGA: eNTK-balanced steps over patches of one frame

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.render_chunk <= 0:
            raise NfieldError(f"--batch-size must be positive, got {self.batch_size}")
        if self.candidate_batches < 1:
            raise NfieldError(f"candidate_batches must be >= 1, got {self.candidate_batches}")
        if self.eval_frames < 0:
            raise NfieldError(f"eval_frames must be >= 0, got {self.eval_frames}")


class VideoTask(SignalTask):
    """Fit `video` with a `Field` of 3 inputs (x, y, t) and 3 outputs (RGB).

    Args:
        video: the target (frames stay on the CPU); None builds the task without its data, enough
            to render a trained field.
        field_cfg: the field to fit.
        cfg: batch, rendering and evaluation sizes.
        device: where training runs.
        seed: seeds the pixel sampler's own generator (saved in checkpoints, with the teacher's picks).
    """

    name = "fit-video"
    kind = "video"
    config_class = VideoTaskConfig
    data_noun = "video"
    output_files = ("reconstruction.mp4", "psnr_per_frame.json")
    sampler_device = "cpu"  # the frames stay on the CPU, and so do the draws of their pixels

    def __init__(
        self,
        video: Video | None,
        field_cfg: FieldConfig,
        cfg: VideoTaskConfig = VideoTaskConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        super().__init__(video, 3, 3, field_cfg, cfg, device, seed)
        self._feedback = [m for m in self.model.modules() if callable(getattr(m, "observe_error", None))]

    @property
    def video(self) -> Video | None:
        """The video fitted, its frames on the CPU (None: built without it)."""
        return self.signal

    # --- a run directory's task ---------------------------------------------------------------
    @classmethod
    def run_config(cls, video: Video, downscale: int, field_cfg: FieldConfig, cfg: VideoTaskConfig) -> dict[str, Any]:
        """The task's part of a new run's config.json: the video, the field and the task settings."""
        fitted = {
            "source": str(Path(video.source).resolve()),
            "downscale": downscale,
            "frames": video.n_frames,
            "height": video.height,
            "width": video.width,
            "fps": video.fps,
        }
        return cls._config_part(fitted, field_cfg, cfg)

    @staticmethod
    def load_data(config: dict[str, Any], source: str | Path | None = None) -> Video:
        """The run's video (or `source` instead), which must have the run's frame count and size."""
        fitted = config["video"]
        video = load_video(source or fitted["source"], fitted["downscale"], max_frames=fitted["frames"])
        if (video.n_frames, video.height, video.width) != (fitted["frames"], fitted["height"], fitted["width"]):
            raise NfieldError(
                f"{video.source}: is {video.n_frames} frames of {video.width}x{video.height}, "
                f"the run was fitted to {fitted['frames']} of {fitted['width']}x{fitted['height']}"
            )
        return video

    @classmethod
    def _options_without_data(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Nothing: the field's outputs are RGB whatever the video."""
        return {}

    def _data_summary(self) -> str:
        video = self._data()
        return f"{video.n_frames} frames of {video.width}x{video.height} at {video.fps:g} fps"

    def _batch_summary(self) -> list[str]:
        return [f"{self.cfg.batch_size:,} pixels per step"]

    # --- the trainer's interface -------------------------------------------------------------
    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, 3) as (x, y, t), targets (B, 3) in [0, 1]) for one step; with teaching, the
        pixels of a larger random batch the field fits worst, re-picked on the teacher's schedule;
        with IGA, whole random patches of one frame each (the groups IGA's eNTK is sampled from)."""
        if self.teacher is not None:
            return self._taught(step)
        return self._at(*self._random_pixels(self.cfg.batch_size))

    def _random_pixels(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame, row, column), each (n,) on the CPU, drawn uniformly with the task's generator; with
        IGA, (B,) each: the pixels of n // patch_size^2 (at least one) whole random patches."""
        frames, shape = self._data().frames, (n,)
        if self.adjuster is not None:
            side = self.cfg.gradient_adjustment.patch_size
            cells = random_blocks(frames.shape[:3], (1, side, side), max(1, n // side**2), self.generator)
            return cells[:, 0], cells[:, 1], cells[:, 2]
        frame = torch.randint(0, frames.shape[0], shape, generator=self.generator)
        row = torch.randint(0, frames.shape[1], shape, generator=self.generator)
        column = torch.randint(0, frames.shape[2], shape, generator=self.generator)
        return frame, row, column

    def _at(self, frame: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, 3), targets (B, 3)) on the device of the pixels at `frame`, `row`, `column`
        (each (B,) on the CPU)."""
        frames = self._data().frames
        targets = frames[frame, row, column].float() / 255
        coords = video_coordinates(frame, row, column, tuple(frames.shape[:3]))
        return coords.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def _taught(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        teacher, (_, height, width, _) = self.teacher, self._data().frames.shape
        if teacher.due(step, self.total):
            frame, row, column = self._random_pixels(self.cfg.candidate_batches * self.cfg.batch_size)
            index = ((frame * height + row) * width + column).to(self.device)  # flat pixel indices name the candidates
            teacher.pick(step, self.total, index, *self._at(frame, row, column), self.model)
        picked = teacher.picked.cpu()
        return self._at(picked // (height * width), picked // width % height, picked % width)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss to backpropagate, {"psnr"}): the MSE; with IGA, a loss whose value is the MSE and
        whose gradient is IGA's 2 / (B C) J^T S r over patches of one frame."""
        coords, targets = batch
        outputs = self.model(coords)
        outputs = outputs.to(torch.promote_types(outputs.dtype, torch.float32))
        squared = (outputs - targets).square()
        for module in self._feedback:  # SAPE's masks follow the per-pixel error
            module.observe_error(coords, squared.detach().mean(dim=-1))
        mse = squared.mean()
        metrics = {"psnr": psnr_from_mse(mse.detach())}
        if self.adjuster is None:
            return mse, metrics
        video, side = self._data(), self.cfg.gradient_adjustment.patch_size
        resolution = (video.width, video.height, video.n_frames)  # the columns of (x, y, t)
        groups, slots = patch_groups(coords, resolution, (side, side, 1))
        return self.adjuster.loss(self.model, coords, outputs, targets, groups, slots), metrics

    @torch.no_grad()
    def evaluate(self, frames: int | None = None, progress: bool = False, leave: bool = True) -> dict[str, Any]:
        """Mean PSNR (dB) and SSIM over `frames` frames, evenly spaced (0: all; default
        `cfg.eval_frames`), the lowest frame PSNR, each scored frame's PSNR (``psnr_per_frame``)
        and which frames those are (``scored_frames``: their indices from 0, in the same order);
        `progress` shows a bar over the pixels rendered (`leave`: kept when done)."""
        video = self._data()
        limit = self.cfg.eval_frames if frames is None else frames
        count = video.n_frames if limit <= 0 else min(limit, video.n_frames)
        indices = torch.linspace(0, video.n_frames - 1, count).round().long().unique().tolist()
        rendered = self.render(
            video.n_frames, video.height, video.width, frames=indices, progress=progress, label="eval", leave=leave
        )
        return self._scores(rendered, indices)

    def _scores(self, rendered: torch.Tensor, indices: list[int]) -> dict[str, Any]:
        """The metrics of `evaluate` for frames `indices` rendered as `rendered` (F, H, W, 3)."""
        video = self._data()
        scores = []
        for k, index in enumerate(indices):
            target = video.frames[index].float() / 255
            scores.append((psnr(rendered[k], target), ssim(rendered[k], target)))
        per_frame = [round(s[0], 4) for s in scores]
        return {
            "psnr": sum(s[0] for s in scores) / len(scores),
            "ssim": sum(s[1] for s in scores) / len(scores),
            "psnr_min": min(per_frame),
            "psnr_per_frame": per_frame,
            "scored_frames": indices,
        }

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None:
        """Write reconstruction.mp4 (every frame, at the video's frame rate) and psnr_per_frame.json
        (every frame's PSNR, item k for frame k), from one render of every frame (with a bar when
        `progress` is set)."""
        import json

        video, run_dir = self._data(), Path(run_dir)
        rendered = self.render(video.n_frames, video.height, video.width, progress=progress, label="outputs")
        write_video(run_dir / "reconstruction.mp4", to_uint8_frames(rendered), video.fps)
        per_frame = self._scores(rendered, list(range(video.n_frames)))["psnr_per_frame"]
        (run_dir / "psnr_per_frame.json").write_text(json.dumps(per_frame) + "\n")

    # --- rendering -----------------------------------------------------------------------------
    @torch.no_grad()
    def render(
        self,
        n_frames: int,
        height: int,
        width: int,
        frames: list[int] | None = None,
        progress: bool = False,
        label: str = "render",
        leave: bool = True,
    ) -> torch.Tensor:
        """(F, height, width, 3) float32 on the CPU: frames `frames` (default all) of the video's span
        cut into `n_frames` equal intervals, each at height x width pixel centres; `progress` shows
        a bar over the pixels labelled `label` (`leave`: kept when done)."""
        frames = list(range(n_frames)) if frames is None else frames
        was_training = self.model.training
        self.model.eval()
        out = torch.empty(len(frames), height, width, 3)
        pixels = height * width
        bar = progress_bar(total=len(frames) * pixels, desc=label, unit="px", unit_scale=True, enabled=progress, leave=leave)
        with bar:
            for k, frame in enumerate(frames):
                flat = out[k].view(-1, 3)
                for start in range(0, pixels, self.cfg.render_chunk):
                    index = torch.arange(start, min(start + self.cfg.render_chunk, pixels))
                    row, column = index // width, index % width
                    coords = video_coordinates(torch.full_like(index, frame), row, column, (n_frames, height, width))
                    flat[start : start + len(index)] = self.model(coords.to(self.device)).float().cpu()
                    bar.update(len(index))
        self.model.train(was_training)
        return out


def to_uint8_frames(frames: torch.Tensor) -> np.ndarray:
    """(F, H, W, 3) float values in [0, 1] -> uint8 frames for a video file."""
    return (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
