"""Audio signals: reading and writing sound files, and their spectrograms.

Files are read and written with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3 and more).
Samples are float32 in [-1, 1] (full scale), shaped (T, C): T samples per channel, C channels.
A field fits them as a function of time t in [-1, 1]: sample i of T sits at t = 2 (i + 0.5) / T - 1,
the centre of its interval, so any other sample rate samples the same span.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfield.errors import NfieldError

#: Container formats `save_audio` writes, by suffix.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class Audio:
    """A sound: samples (T, C) float32 in [-1, 1] at `sample_rate` Hz, and where it came from."""

    samples: torch.Tensor
    sample_rate: int
    source: str

    @property
    def n_samples(self) -> int:
        return self.samples.shape[0]

    @property
    def channels(self) -> int:
        return self.samples.shape[1]

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def to(self, device: torch.device | str) -> Audio:
        return Audio(self.samples.to(device), self.sample_rate, self.source)


def load_audio(path: str | Path) -> Audio:
    """Read a sound file as float32 samples in [-1, 1]; `NfieldError` with one line if it cannot."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise NfieldError(f"{path}: no such file")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as err:
        raise NfieldError(f"{path}: cannot read it as audio ({str(err).strip() or type(err).__name__})") from None
    if samples.shape[0] < 2:
        raise NfieldError(f"{path}: holds {samples.shape[0]} samples; a signal needs at least 2")
    if not np.isfinite(samples).all():
        raise NfieldError(f"{path}: holds NaN or infinite samples")
    return Audio(torch.from_numpy(np.ascontiguousarray(samples)), int(sample_rate), str(path))


def save_audio(path: str | Path, samples: torch.Tensor, sample_rate: int) -> Path:
    """Write (T, C) samples (clipped to [-1, 1]) as .wav (float32), .flac (24-bit) or .ogg."""
    import soundfile

    path = Path(path)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise NfieldError(f"{path}: audio is written as {', '.join(AUDIO_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = samples.detach().float().clamp(-1, 1).cpu().numpy()
    subtype = {".wav": "FLOAT", ".flac": "PCM_24", ".ogg": "VORBIS"}[path.suffix.lower()]
    soundfile.write(str(path), data, int(sample_rate), subtype=subtype)
    return path


def time_coordinates(index: torch.Tensor, n_samples: int) -> torch.Tensor:
    """(B,) sample indices of a T-sample signal -> (B, 1) float32 times in [-1, 1] (interval centres)."""
    return ((index.float() + 0.5) * (2.0 / n_samples) - 1.0)[:, None]


def spectrogram_magnitude(samples: torch.Tensor, n_fft: int = 512) -> np.ndarray:
    """|STFT| (n_fft / 2 + 1 frequencies, frames) of a mono signal (T,): Hann windows
    of `n_fft` samples (fewer for a shorter signal) a quarter window apart, row 0 the lowest frequency."""
    samples = samples.detach().float().cpu()
    n_fft = int(min(n_fft, 2 ** int(np.log2(max(len(samples), 2)))))
    hop = max(n_fft // 4, 1)
    spectrum = torch.stft(samples, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return spectrum.numpy()
