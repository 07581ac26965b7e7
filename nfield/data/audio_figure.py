"""The figure that compares a fitted sound with its target: waveforms, their difference, and
spectrograms on one colour scale (``comparison.png`` of an audio run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nfield.outputs import check_figure_path, write_figure

#: Waveforms longer than this many samples are drawn as the range (min to max) of each of as many time bins.
WAVEFORM_BINS = 2000
#: The spectrograms' colour scale: from this many dB under the target's loudest bin up to it.
SPECTROGRAM_FLOOR_DB = -80.0


def audio_comparison_figure(target, fitted, sample_rate: int, title: str | None = None):
    """The comparison of a fitted sound with its target, both mono (T,) tensors or arrays at
    `sample_rate`: their waveforms together (a legend tells them apart), their difference, and
    their spectrograms side by side on one colour scale (dB relative to the target's loudest bin).
    Every panel has a title and labelled axes in seconds, amplitude (full scale = 1) or hertz."""
    from matplotlib.figure import Figure

    from nfield.data.audio import spectrogram_magnitude

    target, fitted = (np.asarray(_numpy(x), dtype=np.float64).reshape(-1) for x in (target, fitted))
    seconds = len(target) / sample_rate
    figure = Figure(figsize=(11, 9), dpi=100)  # a fixed layout: a constrained one takes twice as long to draw
    grid = figure.add_gridspec(3, 2, height_ratios=(1, 1, 1.4))
    figure.subplots_adjust(left=0.08, right=0.9, top=0.9 if title else 0.94, bottom=0.07, wspace=0.25, hspace=0.5)
    waves, difference = figure.add_subplot(grid[0, :]), figure.add_subplot(grid[1, :])
    spectra = [figure.add_subplot(grid[2, 0]), figure.add_subplot(grid[2, 1])]

    _draw_waveform(waves, target, sample_rate, color="0.55", label="target", width=2.2, alpha=0.5)
    _draw_waveform(waves, fitted, sample_rate, color="C1", label="fitted", width=1.0, alpha=0.6)
    waves.legend(loc="upper right", fontsize=9)
    waves.set_title("waveforms: target and fitted", fontsize=10)
    error = fitted - target
    _draw_waveform(difference, error, sample_rate, color="C3", label="fitted - target", width=1.0, alpha=0.8)
    rms = float(np.sqrt(np.mean(error**2))) if len(error) else 0.0
    difference.set_title(f"difference: fitted - target (RMS {rms:.3g})", fontsize=10)
    for ax in (waves, difference):
        ax.set_xlim(0, seconds)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("amplitude (full scale = 1)")
        ax.grid(alpha=0.3)

    target_magnitude, fitted_magnitude = spectrogram_magnitude(_tensor(target)), spectrogram_magnitude(_tensor(fitted))
    peak = max(float(target_magnitude.max()), 1e-12)
    extent = (0.0, seconds, 0.0, sample_rate / 2)
    for ax, magnitude, name in zip(spectra, (target_magnitude, fitted_magnitude), ("target", "fitted")):
        decibels = 20 * np.log10(np.maximum(magnitude, 1e-12) / peak)
        image = ax.imshow(
            decibels, origin="lower", aspect="auto", extent=extent, cmap="inferno", vmin=SPECTROGRAM_FLOOR_DB, vmax=0.0
        )
        ax.set_title(f"{name} spectrogram", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
    colour_bar = figure.colorbar(image, ax=spectra, fraction=0.04, pad=0.02)
    colour_bar.set_label("level (dB re. the target's peak)")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def write_audio_comparison(out: Path | str, target, fitted, sample_rate: int, title: str | None = None) -> Path:
    """Draw `audio_comparison_figure` into `out` (PNG, PDF, SVG...); returns the path."""
    out = Path(out)
    check_figure_path(out)
    return write_figure(audio_comparison_figure(target, fitted, sample_rate, title), out)


def _draw_waveform(ax, samples: np.ndarray, sample_rate: int, color, label: str, width: float, alpha: float) -> None:
    """`samples` against time at sample centres, a line `width` points wide; a long signal as the
    min-to-max range of each of `WAVEFORM_BINS` time bins (a band of opacity `alpha`), so every peak shows."""
    if len(samples) <= 2 * WAVEFORM_BINS:
        ax.plot((np.arange(len(samples)) + 0.5) / sample_rate, samples, "-", color=color, lw=width, label=label)
        return
    bins = np.array_split(samples, WAVEFORM_BINS)
    edges = np.cumsum([0] + [len(b) for b in bins])
    times = 0.5 * (edges[:-1] + edges[1:]) / sample_rate
    low, high = np.array([b.min() for b in bins]), np.array([b.max() for b in bins])
    ax.fill_between(times, low, high, color=color, alpha=alpha, lw=0, label=label)


def _numpy(values) -> np.ndarray:
    """A tensor (any device) or array as a NumPy array."""
    detach = getattr(values, "detach", None)
    return detach().float().cpu().numpy() if callable(detach) else np.asarray(values)


def _tensor(values: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
