"""Audio command: ``fit-audio``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from nfield.cli.image import ImageModelOptions
from nfield.cli.options import RunFlags, TrainingCommand, device_default, gradient_adjustment_flags, train_options
from nfield.flag_hints import STATED
from nfield.presets.audio import AUDIO_PRESETS
from nfield.tasks.audio import AudioTaskConfig
from nfield.tasks.teaching import TeachingConfig

AudioTrainOptions = train_options(AUDIO_PRESETS)
_IGA = AudioTaskConfig().gradient_adjustment  # audio's IGA defaults, stated in the help


@dataclass(frozen=True)
class FitAudio(TrainingCommand):
    """Fit a neural field to a sound (WAV/FLAC/OGG/MP3) as a function of time, SIREN's audio setting.

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, reconstruction.wav and
    comparison.png (waveforms, their difference and spectrograms); prints PSNR (full scale = 1) and
    SNR in dB as JSON on the last line.
    """

    audio: tyro.conf.Positional[str]  # sound file
    model: Annotated[Optional[str], STATED] = None
    """siren, relu-pe, fourier, or any image family that applies to 1-D signals (wire, finer, gauss, cam, planes, ...;
    not hash, dense, neurbf, sape) in its audio form (default siren)"""
    batch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(AUDIO_PRESETS, "batch_size"))] = None
    """samples per step; shorter clips train full-batch"""
    teaching: bool = False  # INT (nonparametric teaching): each step trains on the samples fitted worst
    iga: bool = False  # IGA (inductive gradient adjustment): gradients rebalanced by the eNTK against spectral bias
    iga_patch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.patch_size})")] = None
    """IGA: length in samples of the runs of consecutive samples that each give one eNTK sample"""
    iga_n_balanced: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.n_balanced})")] = None
    """IGA: the n largest eNTK eigenvalues are lowered to the (n+1)-th"""
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[AudioTrainOptions, tyro.conf.OmitArgPrefixes] = AudioTrainOptions()
    model_options: Annotated[ImageModelOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="model")] = ImageModelOptions()

    def __call__(self) -> None:
        task = {
            "batch_size": self.batch_size,
            "teaching": TeachingConfig(enabled=True) if self.teaching else None,
            "gradient_adjustment": gradient_adjustment_flags(self.iga, self.iga_patch_size, self.iga_n_balanced, _IGA),
        }
        self.submit("audio", self.audio, task, {})
