"""Audio signals: reading and writing sound files, and pictures of waveforms and spectrograms.

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

from nfield.colormap import inferno
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


def waveform_image(samples: torch.Tensor, width: int = 1024, height: int = 160) -> torch.Tensor:
    """(height, width, 3) picture of a mono waveform (T,): each column spans T / width samples and
    is filled between their minimum and maximum (white on black, a grey zero line)."""
    samples = samples.detach().float().cpu()
    columns = torch.tensor_split(samples, width)
    low = torch.stack([c.min() if c.numel() else torch.tensor(0.0) for c in columns]).clamp(-1, 1)
    high = torch.stack([c.max() if c.numel() else torch.tensor(0.0) for c in columns]).clamp(-1, 1)
    rows = torch.linspace(1, -1, height)[:, None]  # amplitude at each row, top = +1
    filled = (rows >= low[None, :] - 1 / height) & (rows <= high[None, :] + 1 / height)
    image = torch.zeros(height, width, 3)
    image[height // 2] = 0.35
    image[filled] = 1.0
    return image


def spectrogram_image(samples: torch.Tensor, n_fft: int = 512, floor_db: float = -80.0) -> torch.Tensor:
    """(n_fft / 2 + 1, frames, 3) log-magnitude spectrogram of a mono signal (T,), low frequencies at
    the bottom, 0 dB (the largest bin) bright and `floor_db` black (inferno colour map)."""
    samples = samples.detach().float().cpu()
    n_fft = int(min(n_fft, 2 ** int(np.log2(max(len(samples), 2)))))
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(samples, n_fft, hop_length=max(n_fft // 4, 1), window=window, return_complex=True).abs()
    decibels = 20 * torch.log10(spectrum.clamp_min(1e-12) / spectrum.max().clamp_min(1e-12))
    return inferno(((decibels - floor_db) / -floor_db).clamp(0, 1)).flip(0)


def comparison_image(target: torch.Tensor, fitted: torch.Tensor, width: int = 1024) -> torch.Tensor:
    """One picture comparing two mono signals (T,): target waveform, fitted waveform, their
    difference (x4), then the two spectrograms side by side. (H, width, 3) in [0, 1]."""
    rows = [waveform_image(target, width), waveform_image(fitted, width), waveform_image(4 * (fitted - target), width)]
    spectra = [spectrogram_image(signal) for signal in (target, fitted)]
    height = spectra[0].shape[0]
    half = width // 2
    resized = [
        torch.nn.functional.interpolate(s.permute(2, 0, 1)[None], size=(height, half), mode="nearest")[0].permute(1, 2, 0)
        for s in spectra
    ]
    separator = torch.full((4, width, 3), 0.2)
    bottom = torch.cat([resized[0], torch.full((height, width - 2 * half, 3), 0.2), resized[1]], dim=1)
    return torch.cat([rows[0], separator, rows[1], separator, rows[2], separator, bottom], dim=0)
