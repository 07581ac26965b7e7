"""The benchmark's generated signals have the content their docstrings promise."""

import numpy as np

from scenes import signals


def test_band_limited_noise_has_no_energy_past_its_cutoff_and_fills_the_band_below():
    image = signals.band_limited_noise(64, 0.25, seed=3)
    assert image.shape == (64, 64) and image.min() == 0 and image.max() == 1
    spectrum = np.abs(np.fft.fft2(image - image.mean()))
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    radius = np.hypot(fx, fy)
    assert spectrum[radius > 0.125 + 1e-9].max() < 1e-5 * spectrum.max()  # float32 round-off
    assert (spectrum[(radius > 0) & (radius < 0.1)] > 1e-6 * spectrum.max()).mean() > 0.95
    assert np.array_equal(image, signals.band_limited_noise(64, 0.25, seed=3))


def test_sierpinski_has_its_middle_triangle_removed_at_every_level():
    image = signals.sierpinski(256)
    assert image[-1, 128] == 1 and image[-1, 2] == 1  # the base line is on the gasket
    assert image[round(256 * (1 - 1 / 6)), 128] == 0  # centroid of the largest removed triangle
    assert image[round(256 * (1 - 1 / 12)), 64] == 0  # ... of the one in the bottom-left corner triangle
    assert image[5, 5] == 0 and image[5, 250] == 0  # outside the triangle
    assert 0.05 < image.mean() < 0.3  # a fractal: far less than the triangle's half of the square


def test_siemens_star_has_two_transitions_per_spoke_around_a_circle():
    star = signals.siemens_star(256, n_spokes=12, supersample=1)
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False) + 0.01
    rows = (128 + 80 * np.sin(angles)).astype(int)
    cols = (128 + 80 * np.cos(angles)).astype(int)
    ring = star[rows, cols] > 0.5
    assert np.count_nonzero(ring != np.roll(ring, 1)) == 24
    assert star[2, 2] == 0.5  # grey outside the disc


def test_discs_audio_and_video_are_deterministic_and_in_range():
    discs = signals.random_discs(32, seed=1)
    assert discs.shape == (32, 32, 3) and 0 <= discs.min() and discs.max() <= 1
    assert np.array_equal(discs, signals.random_discs(32, seed=1))
    clip = signals.audio_clip(1.0, 8000)
    assert clip.shape == (8000,) and abs(np.abs(clip).max() - 0.95) < 1e-6
    spectrum = np.abs(np.fft.rfft(clip[:2000]))  # the first note: C4, 261.63 Hz (4 Hz bins)
    assert abs(np.argmax(spectrum) * 4.0 - 261.63) < 4
    video = signals.moving_discs_video(6, 16)
    assert video.shape == (6, 16, 16, 3) and 0 <= video.min() and video.max() <= 1
    assert np.abs(video[0] - video[-1]).mean() > 0.01  # it moves


def test_crossed_waves_are_separable_along_the_axes_and_not_when_turned():
    def rank(image):  # singular values above float32 round-off
        values = np.linalg.svd(image.astype(np.float64), compute_uv=False)
        return int((values > 1e-4 * values[0]).sum())

    straight, turned = signals.crossed_waves(64, 0.0), signals.crossed_waves(64, 45.0)
    assert straight.shape == turned.shape == (64, 64) and straight.min() == 0 and straight.max() == 1
    assert rank(straight) <= 4 + 1  # n_terms products, plus the constant of the [0, 1] normalisation
    assert rank(turned) > 15  # band-limited, so not full rank, but far from separable
    assert np.array_equal(straight, signals.crossed_waves(64, 0.0))
