"""fit-audio end to end: a generated chirp through WAV and FLAC files, its outputs, render and eval."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import soundfile
import torch

from nfield.data.audio import load_audio, save_audio, time_coordinates
from nfield.errors import NfieldError
from tests.run_checks import cli

RATE = 8000


def chirp(seconds=0.25, f0=200.0, f1=900.0, channels=1):
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    mono = 0.6 * np.sin(phase) * np.hanning(len(t)) ** 0.25
    return np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def test_files_round_trip_and_times_are_interval_centres(tmp_path):
    samples = torch.from_numpy(chirp(channels=2))
    for suffix, tolerance in ((".wav", 0), (".flac", 2**-22)):
        save_audio(tmp_path / f"c{suffix}", samples, RATE)
        back = load_audio(tmp_path / f"c{suffix}")
        assert back.sample_rate == RATE and back.samples.shape == samples.shape
        assert (back.samples - samples).abs().max() <= tolerance
    assert time_coordinates(torch.tensor([0, 3]), 4).flatten().tolist() == [-0.75, 0.75]
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(NfieldError, match="cannot read it as audio"):
        load_audio(tmp_path / "bad.wav")
    with pytest.raises(NfieldError, match="no such file"):
        load_audio(tmp_path / "missing.flac")


def test_siren_fits_a_chirp_and_the_run_renders_evaluates_and_resamples(tmp_path, capsys):
    soundfile.write(str(tmp_path / "chirp.wav"), chirp(), RATE, subtype="FLOAT")
    status, out, err = cli(
        capsys, "fit-audio", tmp_path / "chirp.wav", "--steps", 300, "--out", tmp_path / "run", "--no-progress"
    )
    assert status == 0, err
    result = json.loads(out[-1])
    assert result["psnr"] > 40 and result["snr"] > 30, result  # measured 114 dB and 99 dB: 2,000 samples, 200k parameters
    fitted = load_audio(tmp_path / "run" / "reconstruction.wav")
    assert fitted.sample_rate == RATE and fitted.samples.shape == (2000, 1)
    assert iio.imread(tmp_path / "run" / "comparison.png").shape[:2] == (900, 1100)  # the figure, 11 x 9 inches at 100 dpi
    status, out, err = cli(capsys, "eval", tmp_path / "run")
    assert status == 0 and json.loads(out[-1])["psnr"] == pytest.approx(result["psnr"], abs=1e-4), err
    status, _, err = cli(capsys, "render", tmp_path / "run", "--sample-rate", 2 * RATE, "--out", tmp_path / "x2.wav")
    assert status == 0, err
    doubled = load_audio(tmp_path / "x2.wav").samples[:, 0]
    target = torch.from_numpy(chirp()[:, 0])
    between = torch.from_numpy(np.interp((np.arange(4000) + 0.5) / 2 - 0.5, np.arange(2000), target.numpy()))
    assert len(doubled) == 4000 and float(torch.corrcoef(torch.stack([doubled.double(), between]))[0, 1]) > 0.9
    assert cli(capsys, "render", tmp_path / "run", "--out", tmp_path / "x1.wav")[0] == 0
    assert torch.equal(load_audio(tmp_path / "x1.wav").samples, fitted.samples)  # the clip's own rate: the reconstruction
    status, lines, _ = cli(capsys, "info", tmp_path / "run")
    assert status == 0 and "task audio" in lines[0]
    status, _, err = cli(capsys, "fit-audio", tmp_path / "chirp.wav", "--model", "nope", "--out", tmp_path / "x")
    assert status == 1 and "unknown model 'nope'" in err


@pytest.mark.parametrize("seconds", [0.25, 1.5], ids=["samples-as-lines", "long-clip-as-bands"])
def test_the_comparison_figure_titles_and_labels_every_panel(seconds):
    """comparison.png: each panel has a title and axis labels with units, and the panel with two
    waveforms has a legend naming them."""
    from nfield.data.audio_figure import audio_comparison_figure

    target = torch.from_numpy(chirp(seconds)[:, 0])
    fitted = target + 0.01 * torch.randn(len(target), generator=torch.Generator().manual_seed(0))
    figure = audio_comparison_figure(target, fitted, RATE, title="chirp.wav")
    *panels, colour_bar = figure.axes
    assert len(panels) == 4 and figure.get_suptitle() == "chirp.wav"
    for ax in panels:
        assert ax.get_title() and ax.get_xlabel() == "time (s)", ax.get_title()
        assert abs(ax.get_xlim()[1] - seconds) < 0.02, ax.get_xlim()
    waves, difference, target_spectrum, fitted_spectrum = panels
    assert "target and fitted" in waves.get_title() and "difference" in difference.get_title()
    assert [t.get_text() for t in waves.get_legend().get_texts()] == ["target", "fitted"]
    assert waves.get_ylabel() == difference.get_ylabel() == "amplitude (full scale = 1)"
    for spectrum, name in ((target_spectrum, "target"), (fitted_spectrum, "fitted")):
        assert name in spectrum.get_title() and spectrum.get_ylabel() == "frequency (Hz)"
        assert spectrum.get_ylim() == (0, RATE / 2)
    assert "dB" in colour_bar.get_ylabel()
