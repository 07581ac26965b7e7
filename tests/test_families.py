"""The parameter budget rule: every family sized to one count, each count what the built field holds."""

import dataclasses

import numpy as np
import pytest
import torch

from nfield.encodings import IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import Field, FieldConfig
from nfield.networks import MLPConfig, WireConfig
from nfield.presets.families import NOT_FOR_AUDIO, count_parameters, field_parameters, sized_field
from nfield.presets.image import IMAGE_PRESETS

BUDGET = 20_000


@pytest.mark.parametrize("family", sorted(IMAGE_PRESETS))
def test_every_family_lands_on_the_budget_and_the_count_is_what_the_field_holds(family):
    field, count = sized_field(family, 2, 3, BUDGET, "image", 64)
    tolerance = 0.45 if family == "hash" else 0.05  # hash tables grow in powers of two
    assert abs(count - BUDGET) <= tolerance * BUDGET, (family, count)
    assert count == field_parameters(field, 2, 3)
    built = Field(2, 3, field)
    if not getattr(field.network, "fourier_reparam", False):
        assert count == count_parameters(built)
    assert built(torch.rand(7, 2) * 2 - 1).shape == (7, 3)


def test_fourier_reparameterisation_is_counted_as_the_network_it_reparameterises():
    fr, count = sized_field("relu-pe-fr", 2, 3, BUDGET, "image", 64)
    plain, plain_count = sized_field("relu-pe", 2, 3, BUDGET, "image", 64)
    assert count == plain_count and fr.network == dataclasses.replace(plain.network, fourier_reparam=True)
    assert count_parameters(Field(2, 3, fr)) > 10 * count  # the trained coefficients Lambda are many more


def test_complex_parameters_count_twice():
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.complex64))
    assert count_parameters(module) == 24
    field = FieldConfig(IdentityConfig(), WireConfig(n_neurons=16, n_hidden_layers=1))
    assert count_parameters(Field(2, 1, field)) == sum(
        p.numel() * (2 if p.is_complex() else 1) for p in Field(2, 1, field).parameters()
    )


@pytest.mark.parametrize("signal, in_dim, size", [("audio", 1, 8000), ("video", 3, 32)])
def test_other_signals_size_every_family_that_applies(signal, in_dim, size):
    for family in IMAGE_PRESETS:
        if signal == "audio" and family in NOT_FOR_AUDIO:
            with pytest.raises(NfieldError, match=f"{family} does not apply to audio"):
                sized_field(family, in_dim, 1, BUDGET, signal, size)
            continue
        field, count = sized_field(family, in_dim, 1, BUDGET, signal, size)
        assert abs(count - BUDGET) <= (0.45 if family == "hash" else 0.15) * BUDGET, (signal, family, count)
    siren, _ = sized_field("siren", 1, 1, BUDGET, "audio", 8000)
    assert siren.network.w0_initial == 3000.0  # SIREN's audio setting


def test_bad_budget_and_family_are_one_line_errors():
    with pytest.raises(NfieldError, match="--params must be positive"):
        sized_field("siren", 2, 3, 0)
    with pytest.raises(NfieldError, match="unknown family 'nope'"):
        sized_field("nope", 2, 3, 1000)
    mlp = FieldConfig(IdentityConfig(), MLPConfig(n_neurons=8, n_hidden_layers=1))
    assert field_parameters(mlp, 2, 1) == (2 * 8 + 8) + (8 * 1 + 1)


def test_other_tasks_take_the_image_families_from_the_command_line(tmp_path, capsys):
    """fit-audio, fit-video and fit-sdf train an image family each; a family a signal does not take
    is refused in one line that says why."""
    import json

    import imageio.v3 as iio
    import numpy as np
    import soundfile
    import trimesh

    from scenes import signals
    from tests.run_checks import cli

    soundfile.write(str(tmp_path / "clip.wav"), signals.audio_clip(0.05, 8000), 8000, subtype="FLOAT")
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(signals.moving_discs_video(3, 16)):
        iio.imwrite(tmp_path / "frames" / f"{k:03d}.png", (frame * 255).round().astype(np.uint8))
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(tmp_path / "sphere.obj")
    runs = {
        "fit-audio": (tmp_path / "clip.wav", "--model", "finer", "--n-neurons", 32, "--n-hidden-layers", 2),
        "fit-video": (tmp_path / "frames", "--model", "sape", "--n-neurons", 32, "--batch-size", 256),
        "fit-sdf": (tmp_path / "sphere.obj", "--model", "neurbf", "--batch-size", 256, "--pool-size", 2048)
        + ("--mesh-resolution", 16, "--metric-points", 1024),
    }
    for command, argv in runs.items():
        out = tmp_path / command
        status, lines, err = cli(capsys, command, *argv, "--steps", 5, "--out", out, "--no-progress", "--device", "cpu")
        assert status == 0, err
        result = json.loads(lines[-1])
        assert np.isfinite(result.get("psnr", result.get("distance_mae"))), result
        assert json.loads((out / "config.json").read_text())["model"] == argv[2]
    status, _, err = cli(capsys, "fit-audio", tmp_path / "clip.wav", "--model", "hash", "--out", tmp_path / "x", "--no-progress")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "a 1-D grid as fine as the clip" in lines[0], err
    status, _, err = cli(capsys, "fit-sdf", tmp_path / "sphere.obj", "--model", "sape", "--out", tmp_path / "y", "--no-progress")
    assert status == 1 and "SAPE's masks follow a per-sample reconstruction error" in err, err


def test_every_family_is_a_nerf_geometry_network(tmp_path, capsys):
    """train-nerf takes the image families under NGP's colour head: each field gives finite colours
    and densities with gradients, one trains from the command line, and sape is refused with why."""
    import json

    from nfield.fields.radiance import build_radiance_field
    from nfield.presets.nerf import NERF_PRESETS, nerf_models, resolve_nerf_preset
    from scenes.synthetic import generate
    from tests.run_checks import cli

    aabb = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
    x, d = torch.rand(16, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(16, 3), dim=-1)
    for model in nerf_models():
        if model in NERF_PRESETS:
            continue
        field = build_radiance_field(resolve_nerf_preset(model, {}).field, aabb)
        rgb, sigma = field(x, d)
        assert rgb.shape == (16, 3) and sigma.shape == (16,) and torch.isfinite(rgb).all() and (sigma >= 0).all(), model
        (rgb.sum() + sigma.sum()).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters()), model
    with pytest.raises(NfieldError, match="a NeRF's is per ray"):
        resolve_nerf_preset("sape", {})
    scene = generate("textured", tmp_path / "scene", size=16, n_train=4, n_val=1, n_test=1)
    small = ("--occupancy-resolution", 16, "--occupancy-warmup", 4, "--steps-per-ray", 32, "--batch-rays", 128, "--no-progress")
    status, lines, err = cli(capsys, "train-nerf", scene, "--model", "planes", *small, "--steps", 4, "--out", tmp_path / "run")
    assert status == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["field"]["encoding"]["otype"] == "FeaturePlanes" and np.isfinite(json.loads(lines[-1])["psnr"])


def test_the_shifted_lattice_follows_the_image_and_other_tasks_keep_the_papers_target_range():
    from nfield.presets.families import family_preset
    from nfield.presets.image import resolve_image_preset
    from nfield.presets.video import VIDEO_PRESETS

    encoding = resolve_image_preset("shifted-gaussian", {}, 100, 60).field.encoding
    assert encoding.n_samples == 100 and encoding.diagonals  # one sample per pixel along each of 4 directions
    assert resolve_image_preset("shifted-gaussian", {}, 2000, 1000).field.encoding.n_samples == 512  # capped
    assert resolve_image_preset("shifted-gaussian", {"n_samples": 32}, 100, 60).field.encoding.n_samples == 32
    assert family_preset("siren", 3, "video", 32, VIDEO_PRESETS["relu-pe"]).target_range == (-1.0, 1.0)
    assert family_preset("hash", 3, "video", 32, VIDEO_PRESETS["relu-pe"]).target_range is None
