"""Test signals with known content, for benchmarking coordinate networks on equal terms.

Every generator is deterministic (a seed where randomness enters) and returns float32 arrays in
[0, 1] (images, video) or [-1, 1] (audio):

- `band_limited_noise(size, bandwidth)`: white Gaussian noise whose 2-D spectrum is cut off at
  `bandwidth` times the Nyquist frequency (a disc in frequency space), rescaled to [0, 1]. Its
  spectrum is flat inside the disc and zero outside, so it probes how far up in frequency a
  representation reaches at a given size.
- `sierpinski(size, depth)`: the Sierpinski triangle drawn exactly (a point is black when some
  level of its barycentric base-2 expansion falls in a removed middle triangle): self-similar
  detail at every scale down to the pixel.
- `siemens_star(size, n_spokes)`: the resolution target: n_spokes black and white sectors, whose
  local frequency grows without bound towards the centre (anti-aliased by 4x4 supersampling).
- `random_discs(size, n_discs)`: flat discs of random colours on grey, sharp edges (RGB).
- `audio_clip(seconds, sample_rate)`: a short synthetic melody: four notes with five harmonics
  each, a percussive envelope, a linear chirp from 200 Hz to 4 kHz underneath and a little noise.
- `moving_discs_video(n_frames, size)`: discs moving on straight lines over a drifting sinusoidal
  background (RGB), the temporal counterpart of `random_discs`.
"""

from __future__ import annotations

import math

import numpy as np


def band_limited_noise(size: int, bandwidth: float, seed: int = 0) -> np.ndarray:
    """(size, size) grey image of noise low-passed at `bandwidth` (0 < bandwidth <= 1) x Nyquist."""
    if not 0 < bandwidth <= 1:
        raise ValueError(f"bandwidth must lie in (0, 1], got {bandwidth}")
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.standard_normal((size, size)))
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")  # cycles per pixel, Nyquist 0.5
    spectrum[np.hypot(fx, fy) > 0.5 * bandwidth] = 0
    image = np.fft.ifft2(spectrum).real
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
    return image.astype(np.float32)


def crossed_waves(size: int, angle_degrees: float = 0.0, n_terms: int = 4, seed: int = 0) -> np.ndarray:
    """(size, size) grey image sum_k f_k(u) g_k(v): products of two 1-D band-limited waves (8 random
    sinusoids each, up to a quarter of the Nyquist frequency) along axes (u, v) turned by
    `angle_degrees` from the image's. At 0 it is a sum of `n_terms` separable products (rank <=
    n_terms in x and y), which factorised features (K-planes' lines) represent exactly; turned, the
    same content is not separable in x and y."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    angle = np.deg2rad(angle_degrees)
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    top = 0.25 * size / 2  # cycles over [-1, 1] at a quarter of Nyquist

    def wave(t: np.ndarray) -> np.ndarray:
        frequencies, phases = rng.uniform(0.5, top, 8), rng.uniform(0, 2 * np.pi, 8)
        return sum(np.sin(np.pi * f * t + p) for f, p in zip(frequencies, phases))

    image = sum(wave(u) * wave(v) for _ in range(n_terms))
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
    return image.astype(np.float32)


def sierpinski(size: int, depth: int = 10) -> np.ndarray:
    """(size, size) grey Sierpinski triangle: 1 on the gasket, 0 in removed triangles and outside."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    v = 1.0 - y / size  # height above the base, 0..1
    u = x / size - 0.5 * v  # distance from the left edge of the triangle along this row
    inside = (u >= 0) & (u <= 1.0 - v)
    a, b = u.copy(), v.copy()
    on = inside.copy()
    for _ in range(depth):  # barycentric coordinates doubled: the middle triangle has a < 1, b < 1, a + b > 1
        a, b = 2 * a, 2 * b
        ia, ib = a >= 1, b >= 1
        removed = (~ia) & (~ib) & (a + b > 1)
        on &= ~removed
        a, b = a - ia, b - ib
    return on.astype(np.float32)


def siemens_star(size: int, n_spokes: int = 36, supersample: int = 4) -> np.ndarray:
    """(size, size) grey Siemens star of `n_spokes` black/white sector pairs inside a disc on grey."""
    s = supersample
    y, x = (np.mgrid[0 : size * s, 0 : size * s] + 0.5) / (size * s) * 2 - 1
    angle, radius = np.arctan2(y, x), np.hypot(x, y)
    star = np.where(np.sin(n_spokes * angle) >= 0, 1.0, 0.0)
    star = np.where(radius <= 0.95, star, 0.5)
    return star.reshape(size, s, size, s).mean(axis=(1, 3)).astype(np.float32)


def random_discs(size: int, n_discs: int = 24, seed: int = 0) -> np.ndarray:
    """(size, size, 3) discs of random colours and radii (0.03 to 0.25 of the side) on grey."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    image = np.full((size, size, 3), 0.5, np.float32)
    for _ in range(n_discs):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.25)
        image[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = rng.uniform(0, 1, 3)
    return image


def audio_clip(seconds: float = 1.0, sample_rate: int = 8000, seed: int = 0) -> np.ndarray:
    """(n,) float32 samples in [-1, 1]: four harmonic notes with decaying envelopes, a chirp, noise."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    clip = np.zeros(n)
    notes = (261.63, 329.63, 392.0, 523.25)  # C4 E4 G4 C5
    length = seconds / len(notes)
    for k, f0 in enumerate(notes):
        local = t - k * length
        envelope = np.where(local >= 0, np.exp(-np.clip(local, 0, None) * 6.0), 0.0)
        for h in range(1, 6):
            if h * f0 < sample_rate / 2:
                clip += envelope * np.sin(2 * math.pi * h * f0 * local) / h
    f_start, f_end = 200.0, min(4000.0, 0.45 * sample_rate)
    phase = 2 * math.pi * (f_start * t + 0.5 * (f_end - f_start) / seconds * t**2)
    clip += 0.3 * np.sin(phase)
    clip += 0.01 * np.random.default_rng(seed).standard_normal(n)
    return (0.95 * clip / np.abs(clip).max()).astype(np.float32)


def moving_discs_video(n_frames: int = 16, size: int = 32, n_discs: int = 5, seed: int = 0) -> np.ndarray:
    """(n_frames, size, size, 3) RGB frames: discs crossing a drifting sinusoidal background."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    discs = [
        (rng.uniform(0.2, 0.8, 2), rng.uniform(-0.4, 0.4, 2), rng.uniform(0.08, 0.2), rng.uniform(0, 1, 3))
        for _ in range(n_discs)
    ]
    frames = np.empty((n_frames, size, size, 3), np.float32)
    for f in range(n_frames):
        t = f / max(n_frames - 1, 1)
        background = 0.5 + 0.25 * np.sin(2 * math.pi * (3 * x + 2 * y - t))
        frame = np.stack([background, 0.8 * background, 1 - background], axis=-1)
        for start, velocity, radius, colour in discs:
            cx, cy = start + velocity * t
            frame[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = colour
        frames[f] = frame
    return frames
