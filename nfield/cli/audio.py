"""Audio command: ``fit-audio``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from nfield.cli.options import FieldOptions, RunFlags, TrainingCommand, device_default, train_options
from nfield.presets.audio import AUDIO_PRESETS

AudioTrainOptions = train_options(AUDIO_PRESETS)


@dataclass(frozen=True)
class FitAudio(TrainingCommand):
    """Fit a neural field to a sound (WAV/FLAC/OGG/MP3) as a function of time, SIREN's audio setting.

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, reconstruction.wav and
    comparison.png (waveforms, their difference and spectrograms); prints PSNR (full scale = 1) and
    SNR in dB as JSON on the last line.
    """

    audio: tyro.conf.Positional[str]  # sound file
    model: Optional[str] = None  # siren, relu-pe, fourier (default siren)
    batch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(AUDIO_PRESETS, "batch_size"))] = None
    """samples per step; shorter clips train full-batch"""
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[AudioTrainOptions, tyro.conf.OmitArgPrefixes] = AudioTrainOptions()
    model_options: Annotated[FieldOptions, tyro.conf.OmitArgPrefixes] = FieldOptions()

    def __call__(self) -> None:
        self.submit("audio", self.audio, {"batch_size": self.batch_size}, {})
