import numpy as np
import pytest
import torch

from nfield.data.images import Image, pixel_coordinates
from nfield.encodings import IdentityConfig, SpatiallyAdaptiveProgressiveConfig
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig
from nfield.tasks.image import ImageTask, ImageTaskConfig, render_field

SMALL = FieldConfig(IdentityConfig(), MLPConfig(n_neurons=16, n_hidden_layers=1))


def random_image(height, width, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    pixels = torch.from_numpy(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))
    return Image(pixels, 1 / 255, "random")


def test_large_images_train_on_random_pixel_batches_without_a_coordinate_table():
    image = random_image(600, 500)
    task = ImageTask(image, SMALL, ImageTaskConfig(batch_size=1000), seed=3)
    assert not task.full_batch and not hasattr(task, "_coords")
    coords, targets = task.sample(0)
    assert coords.shape == (1000, 2) and targets.shape == (1000, 3)
    # every sampled coordinate is a pixel centre whose target is that pixel's value
    cols = ((coords[:, 0] + 1) / 2 * image.width - 0.5).round().long()
    rows = ((coords[:, 1] + 1) / 2 * image.height - 0.5).round().long()
    assert torch.allclose(targets, image.pixels[rows, cols].float() / 255)
    assert len(set((rows * image.width + cols).tolist())) > 990  # spread over the image


def test_sampler_state_round_trips_for_exact_resume():
    task = ImageTask(random_image(64, 64), SMALL, ImageTaskConfig(batch_size=100), seed=1)
    task.sample(0)
    state = task.state_dict()
    expected = task.sample(1)[0]
    other = ImageTask(random_image(64, 64), SMALL, ImageTaskConfig(batch_size=100), seed=99)
    other.load_state_dict(state)
    assert torch.equal(other.sample(1)[0], expected)


def test_small_images_train_full_batch_on_every_pixel():
    image = random_image(8, 6)
    task = ImageTask(image, SMALL)
    coords, targets = task.sample(0)
    assert task.full_batch and coords.shape == (48, 2)
    assert torch.allclose(targets.reshape(8, 6, 3), image.as_float())


def test_chunked_rendering_equals_one_pass():
    task = ImageTask(random_image(20, 30), SMALL)
    whole = render_field(task.model, 20, 30, chunk=10**6)
    assert torch.allclose(render_field(task.model, 20, 30, chunk=7), whole, atol=1e-6)
    assert whole.shape == (20, 30, 3)


def test_loss_feeds_the_per_pixel_error_back_to_sape():
    cfg = FieldConfig(SpatiallyAdaptiveProgressiveConfig(n_frequencies=4, grid_resolution=8), MLPConfig(n_neurons=16))
    task = ImageTask(random_image(16, 16), cfg)
    loss, metrics = task.loss(task.sample(0))
    encoding = task.model.encoding
    assert float(encoding.error_count.sum()) == 256
    assert float(encoding.error_sum.sum()) == pytest.approx(float(loss) * 256, rel=1e-5)
    assert float(metrics["psnr"]) == pytest.approx(-10 * np.log10(float(loss)), rel=1e-5)


def test_stateful_encodings_resume_exactly(tmp_path):
    """SAPE's progress map and the PINs schedule live in buffers: pause + resume == one run."""
    from nfield.networks import ProgressiveNetworkConfig
    from nfield.training.trainer import TrainConfig, Trainer, seed_everything

    image = random_image(24, 24)
    for name, field in {
        "sape": FieldConfig(SpatiallyAdaptiveProgressiveConfig(n_frequencies=4, grid_resolution=8), MLPConfig(n_neurons=16)),
        "pins": FieldConfig(IdentityConfig(), ProgressiveNetworkConfig(n_lods=2, n_frequencies=4, n_neurons=16)),
    }.items():
        cfg = TrainConfig(steps=30, lr=1e-2, checkpoint_every=10, eval_every=0, progress=False)

        def trainer(run_dir, seed=0):
            seed_everything(seed)
            task = ImageTask(image, field, ImageTaskConfig(batch_size=200), seed=seed)
            return task, Trainer(task, cfg, run_dir)

        whole, run = trainer(tmp_path / name / "whole")
        run.fit()
        _, paused = trainer(tmp_path / name / "paused")
        paused.fit(stop_after=20)
        resumed, run = trainer(tmp_path / name / "paused", seed=7)
        run.resume()
        run.fit()
        for key, value in whole.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), (name, key)


def test_a_target_range_is_learned_by_the_network_and_mapped_back(tmp_path):
    """--target-range: the network's outputs are the image mapped to [lo, hi], the field's values
    (renders, metrics) are in the image's units, the map is in config.json, and a config without it
    (every run before it existed) maps nothing."""
    from nfield.fields import Field, field_config_from_dict, field_config_to_dict
    from nfield.run_directory import RunDirectory
    from nfield.runs.single import RunRequest, load_run, train

    request = RunRequest(
        "image",
        "camera",
        model="siren",
        out=tmp_path / "run",
        device="cpu",
        train={"steps": 150, "progress": False},
        data_options={"downscale": 16},
    )
    result = train(request)
    config = RunDirectory(tmp_path / "run").read_config()
    assert config["field"]["output"] == {"scale": 0.5, "shift": 0.5}  # siren's [-1, 1] for [0, 1] intensities
    run = load_run(tmp_path / "run", "cpu", data=True)
    target = run.task._data().as_float()
    rendered = run.task.render(32, 32)
    assert rendered.mean().item() == pytest.approx(target.mean().item(), abs=0.02)  # the image's units
    with torch.no_grad():
        raw = run.task.model.network(run.task.model.encoding(pixel_coordinates(torch.arange(32 * 32), 32, 32)))
    assert torch.allclose(raw.reshape(32, 32, -1), 2 * rendered - 1, atol=1e-5)  # the network learned [-1, 1]
    assert result["psnr"] > 25
    legacy = {key: value for key, value in config["field"].items() if key != "output"}
    assert field_config_from_dict(legacy) == FieldConfig(
        field_config_from_dict(legacy).encoding, field_config_from_dict(legacy).network
    )
    assert "output" not in field_config_to_dict(field_config_from_dict(legacy))
    x = torch.rand(16, 2) * 2 - 1
    plain, mapped = Field(2, 1, field_config_from_dict(legacy)), Field(2, 1, field_config_from_dict(config["field"]))
    mapped.load_state_dict(plain.state_dict())
    assert torch.allclose(mapped(x), 0.5 * plain(x) + 0.5)


def _pixel_index(coords, image):
    cols = ((coords[:, 0] + 1) / 2 * image.width - 0.5).round().long()
    rows = ((coords[:, 1] + 1) / 2 * image.height - 0.5).round().long()
    return rows, cols


@pytest.mark.parametrize("batch_size", [10_000, 50])
def test_even_pixels_train_on_even_rows_and_columns_and_score_the_odd_odd_ones(batch_size):
    image = random_image(9, 8)
    task = ImageTask(image, SMALL, ImageTaskConfig(batch_size=batch_size, train_pixels="even"), seed=2)
    coords, targets = task.sample(0)
    rows, cols = _pixel_index(coords, image)
    assert (rows % 2 == 0).all() and (cols % 2 == 0).all()
    assert torch.allclose(targets, image.pixels[rows, cols].float() / 255)
    if task.full_batch:
        assert len(coords) == 5 * 4  # every even-even pixel of 9 x 8, once
    held_rows, held_cols = task._held_out // 8, task._held_out % 8
    assert len(task._held_out) == 4 * 4 and (held_rows % 2 == 1).all() and (held_cols % 2 == 1).all()


def test_held_out_psnr_is_scored_on_the_pixels_never_trained_on():
    # a field that reproduces the image exactly on the trained pixels and is off by 0.1 on the
    # others scores infinite PSNR there and exactly 20 dB on the held-out pixels
    image = random_image(6, 6, channels=1)
    task = ImageTask(image, SMALL, ImageTaskConfig(train_pixels="random", train_fraction=0.5), seed=5)
    trained = set(task._trained.tolist())
    assert len(trained) == 18 and trained.isdisjoint(task._held_out.tolist())
    again = ImageTask(image, SMALL, ImageTaskConfig(train_pixels="random", train_fraction=0.5), seed=5)
    assert torch.equal(again._trained, task._trained)  # drawn from the seed alone: the same after a resume
    target = image.as_float().reshape(-1, 1)
    off = torch.full_like(target, 0.1)
    off[task._trained] = 0.0
    render = (target + off).reshape(6, 6, 1)
    task._renders = lambda *args, **kwargs: {0: render}
    metrics = task.evaluate()
    assert metrics["psnr_held_out"] == pytest.approx(20.0, abs=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * np.log10(1 / (0.5 * 0.01)), abs=1e-5)


def test_held_out_pixels_refuse_int_and_iga():
    from nfield.errors import NfieldError
    from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig
    from nfield.tasks.teaching import TeachingConfig

    with pytest.raises(NfieldError, match="fit every pixel"):
        ImageTaskConfig(train_pixels="even", teaching=TeachingConfig(enabled=True))
    with pytest.raises(NfieldError, match="fit every pixel"):
        ImageTaskConfig(train_pixels="random", gradient_adjustment=GradientAdjustmentConfig(enabled=True))
    with pytest.raises(NfieldError, match="--train-pixels must be one of"):
        ImageTaskConfig(train_pixels="odd")
    with pytest.raises(NfieldError, match="--train-fraction"):
        ImageTaskConfig(train_pixels="random", train_fraction=1.0)
