"""Audio fitting: a field maps time t in [-1, 1] to the sample values of every channel.

As in SIREN's audio experiment, the whole clip is one function of time; the first layer's
frequency must reach the signal's (w0 in the thousands for a few seconds at 44.1 kHz, see the
audio presets). Short clips train full-batch; longer ones on random batches of samples. With
teaching (INT, `nfield.tasks.teaching`) the candidates are every sample of a full-batch clip, else a
random batch of `batch_size` samples, and each step trains on the share the field fits worst. With
IGA (`nfield.tasks.gradient_adjustment`) the groups are runs of `gradient_adjustment.patch_size`
consecutive samples (default 1,024, an image patch's worth) and random batches (teaching's
candidates too) are batch_size // patch_size whole random runs. Evaluation renders every sample and
reports PSNR (peak 1, full scale) and SNR; the export writes the reconstruction as a sound file and
a waveform/spectrogram comparison picture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nfield.data.audio import Audio, load_audio, save_audio, time_coordinates
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.metrics import psnr_from_mse
from nfield.progress import progress_bar
from nfield.tasks.gradient_adjustment import MAX_CELLS_PER_AXIS, GradientAdjustmentConfig, patch_groups, random_blocks
from nfield.tasks.signal import SignalTask
from nfield.tasks.teaching import TeachingConfig

#: IGA's default group: runs of this many samples, the samples of a default 32 x 32 image patch.
IGA_RUN = 1024


@dataclass(frozen=True)
class AudioTaskConfig:
    batch_size: int = 2**17  # samples per step; clips with at most this many samples train full-batch
    render_chunk: int = 2**17  # samples per forward pass when rendering
    teaching: TeachingConfig = dataclasses.field(default_factory=TeachingConfig)  # INT: train on the worst-fitted samples
    gradient_adjustment: GradientAdjustmentConfig = dataclasses.field(
        default_factory=lambda: GradientAdjustmentConfig(patch_size=IGA_RUN)
    )  # IGA: eNTK-balanced steps over runs of patch_size samples

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.render_chunk <= 0:
            raise NfieldError(f"--batch-size must be positive, got {self.batch_size}")


def snr_db(fitted: torch.Tensor, target: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB: 10 log10(sum target^2 / sum (fitted - target)^2)."""
    noise = (fitted.double() - target.double()).square().sum().clamp_min(1e-30)
    return float(10 * torch.log10(target.double().square().sum().clamp_min(1e-30) / noise))


class AudioTask(SignalTask):
    """Fit `audio` with a `Field` of 1 input (time) and one output per channel.

    Args:
        audio: the target (moved to `device`); None builds the task without its data (`channels`
            then says the field's outputs), enough to render a trained field.
        field_cfg: the field to fit.
        cfg: batch and rendering sizes.
        device: where training runs.
        seed: seeds the sample sampler's own generator (saved in checkpoints, with the teacher's picks).
        channels: output channels when `audio` is None.
    """

    name = "fit-audio"
    kind = "audio"
    config_class = AudioTaskConfig
    data_noun = "clip"
    output_files = ("reconstruction.wav", "comparison.png")

    def __init__(
        self,
        audio: Audio | None,
        field_cfg: FieldConfig,
        cfg: AudioTaskConfig = AudioTaskConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels: int | None = None,
    ):
        device = torch.device(device)
        audio = None if audio is None else audio.to(device)
        super().__init__(audio, 1, audio.channels if audio is not None else channels, field_cfg, cfg, device, seed)
        if self.adjuster is not None and audio is not None and audio.n_samples > MAX_CELLS_PER_AXIS:
            raise NfieldError(
                f"{audio.source}: IGA tells samples apart by their float32 times, distinct up to "
                f"{MAX_CELLS_PER_AXIS:,} samples; this clip has {audio.n_samples:,}: fit a shorter cut"
            )
        self.full_batch = audio is not None and audio.n_samples <= cfg.batch_size
        if self.full_batch:
            self._coords = time_coordinates(torch.arange(audio.n_samples, device=self.device), audio.n_samples)

    @property
    def audio(self) -> Audio | None:
        """The clip fitted, on the task's device (None: built without it)."""
        return self.signal

    # --- a run directory's task ---------------------------------------------------------------
    @classmethod
    def run_config(cls, audio: Audio, field_cfg: FieldConfig, cfg: AudioTaskConfig) -> dict[str, Any]:
        """The task's part of a new run's config.json: the clip, the field and the task settings."""
        fitted = {
            "source": str(Path(audio.source).resolve()),
            "sample_rate": audio.sample_rate,
            "n_samples": audio.n_samples,
            "channels": audio.channels,
        }
        return cls._config_part(fitted, field_cfg, cfg)

    @staticmethod
    def load_data(config: dict[str, Any], source: str | Path | None = None) -> Audio:
        """The run's clip (or `source` instead), which must have the run's length and channels."""
        fitted, audio = config["audio"], load_audio(source or config["audio"]["source"])
        if (audio.n_samples, audio.channels) != (fitted["n_samples"], fitted["channels"]):
            raise NfieldError(
                f"{audio.source}: has {audio.n_samples} samples x {audio.channels} channels, "
                f"the run was fitted to {fitted['n_samples']} x {fitted['channels']}"
            )
        return audio

    def _data_summary(self) -> str:
        audio = self._data()
        return f"{audio.seconds:.2f} s, {audio.n_samples:,} samples x {audio.channels} at {audio.sample_rate} Hz"

    # --- the trainer's interface -------------------------------------------------------------
    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(times (B, 1), targets (B, C)) for one step; with teaching, the candidates (every sample,
        or a random batch of them) the field fits worst, re-picked on the teacher's schedule; with
        IGA on a clip larger than a batch, whole random runs (the groups IGA's eNTK is sampled from)."""
        audio = self._data()
        if self.teacher is not None:
            return self._taught(step)
        if self.full_batch:
            return self._coords, audio.samples
        return self._at(self._random_batch())

    def _random_batch(self) -> torch.Tensor:
        """(B,) sample indices drawn with the task's generator: batch_size uniform ones, or with IGA
        the samples of batch_size // run (at least one) whole random runs, the last run cut to the clip."""
        n_samples = self._data().n_samples
        if self.adjuster is None:
            return torch.randint(0, n_samples, (self.cfg.batch_size,), device=self.device, generator=self.generator)
        run = self.cfg.gradient_adjustment.patch_size
        return random_blocks((n_samples,), (run,), max(1, self.cfg.batch_size // run), self.generator, self.device)[:, 0]

    def _at(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(times (B, 1), targets (B, C)) of the samples `index` (B,)."""
        audio = self._data()
        return time_coordinates(index, audio.n_samples), audio.samples[index]

    def _taught(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = self.teacher
        if teacher.due(step, self.total):
            index = torch.arange(self._data().n_samples, device=self.device) if self.full_batch else self._random_batch()
            teacher.pick(step, self.total, index, *self._at(index), self.model)
        return self._at(teacher.picked)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss to backpropagate, {"psnr"}): the MSE; with IGA, a loss whose value is the MSE and
        whose gradient is IGA's 2 / (B C) J^T S r over runs of samples."""
        times, targets = batch
        outputs = self.model(times)
        outputs = outputs.to(torch.promote_types(outputs.dtype, torch.float32))
        mse = (outputs - targets).square().mean()
        metrics = {"psnr": psnr_from_mse(mse.detach())}
        if self.adjuster is None:
            return mse, metrics
        groups, slots = patch_groups(times, (self._data().n_samples,), self.cfg.gradient_adjustment.patch_size)
        return self.adjuster.loss(self.model, times, outputs, targets, groups, slots), metrics

    @torch.no_grad()
    def evaluate(self, progress: bool = False, leave: bool = True) -> dict[str, float]:
        """PSNR (dB, peak 1 = full scale) and SNR (dB) of every sample of the clip, with a bar over
        the samples rendered when `progress` is set (`leave`: kept when done)."""
        audio = self._data()
        fitted = self.render(audio.n_samples, progress, "eval", leave)
        mse = (fitted - audio.samples).square().mean()
        return {"psnr": float(psnr_from_mse(mse)), "snr": snr_db(fitted, audio.samples)}

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None:
        """Write reconstruction.wav (at the clip's rate) and comparison.png (first channel): the
        waveforms, their difference and the spectrograms (`nfield.data.audio_figure.audio_comparison_figure`)."""
        from nfield.data.audio_figure import write_audio_comparison

        audio, run_dir = self._data(), Path(run_dir)
        fitted = self.render(audio.n_samples, progress, "outputs")
        save_audio(run_dir / "reconstruction.wav", fitted, audio.sample_rate)
        which = f", channel 1 of {audio.channels}" if audio.channels > 1 else ""
        title = f"{Path(audio.source).name}: {audio.n_samples:,} samples at {audio.sample_rate:,} Hz{which}"
        write_audio_comparison(run_dir / "comparison.png", audio.samples[:, 0], fitted[:, 0], audio.sample_rate, title)

    # --- rendering -----------------------------------------------------------------------------
    @torch.no_grad()
    def render(self, n_samples: int, progress: bool = False, label: str = "render", leave: bool = True) -> torch.Tensor:
        """(n_samples, channels) float32: the field at the centres of n_samples equal intervals of
        the clip's span (the clip's own count reproduces it; more is temporal super-resolution);
        `progress` shows a bar over the samples labelled `label` (`leave`: kept when done)."""
        was_training = self.model.training
        self.model.eval()
        out = torch.empty(n_samples, self.model.out_dim, device=self.device)
        with progress_bar(total=n_samples, desc=label, unit="sample", unit_scale=True, enabled=progress, leave=leave) as bar:
            for start in range(0, n_samples, self.cfg.render_chunk):
                index = torch.arange(start, min(start + self.cfg.render_chunk, n_samples), device=self.device)
                out[start : start + len(index)] = self.model(time_coordinates(index, n_samples)).float()
                bar.update(len(index))
        self.model.train(was_training)
        return out
