import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfield.data.images import load_image, pixel_coordinates, save_image
from nfield.errors import NfieldError


def write(path, array):
    iio.imwrite(path, array)
    return path


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12 * 10, dtype=np.uint8).reshape(12, 10),
        (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3),
        (np.arange(12 * 10 * 4) % 256).astype(np.uint8).reshape(12, 10, 4),
        (np.arange(12 * 10, dtype=np.uint16) * 500).reshape(12, 10),
    ],
    ids=["grey8", "rgb8", "rgba8", "grey16"],
)
def test_png_round_trip_keeps_dtype_and_values(tmp_path, array):
    image = load_image(write(tmp_path / "x.png", array))
    expected = array.reshape(12, 10, -1)
    assert image.pixels.dtype == {np.uint8: torch.uint8, np.uint16: torch.int32}[array.dtype.type]
    assert np.array_equal(image.pixels.numpy(), expected)
    full = 255.0 if array.dtype == np.uint8 else 65535.0
    assert torch.allclose(image.as_float(), torch.from_numpy(expected / full).float())
    assert (image.height, image.width, image.channels) == (12, 10, expected.shape[2])


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_keeps_all_16_bits(tmp_path, channels):
    import png

    array = (np.arange(6 * 5 * channels).reshape(6, 5, channels) * 997 + 3).astype(np.uint16)
    with open(tmp_path / "x.png", "wb") as f:
        png.Writer(5, 6, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16).write(f, array.reshape(6, -1))
    image = load_image(tmp_path / "x.png")
    assert image.pixels.dtype == torch.int32 and image.scale == 1 / 65535
    assert np.array_equal(image.pixels.numpy(), array)


def test_float_tiff_is_read_as_high_dynamic_range(tmp_path):
    array = np.linspace(0, 4, 6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    image = load_image(write(tmp_path / "x.tif", array))
    assert image.high_dynamic_range and image.data_range == pytest.approx(4.0)
    assert torch.equal(image.as_float(), torch.from_numpy(array))


def test_jpeg_and_bundled_images():
    camera = load_image("camera")
    assert (camera.height, camera.width, camera.channels) == (512, 512, 1)
    astronaut = load_image("astronaut", downscale=4)
    assert (astronaut.height, astronaut.width, astronaut.channels) == (128, 128, 3)


def test_box_downscale_is_the_block_mean(tmp_path):
    array = (np.random.default_rng(0).random((9, 8, 3)) * 255).astype(np.uint8)
    image = load_image(write(tmp_path / "x.png", array), downscale=2)
    expected = array[:8, :8].astype(np.float64).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3)) / 255
    assert image.pixels.shape == (4, 4, 3)
    assert np.allclose(image.as_float().numpy(), expected, atol=1e-6)


def test_values_at_gathers_row_major_pixels(tmp_path):
    array = (np.arange(5 * 7 * 3) % 256).astype(np.uint8).reshape(5, 7, 3)
    image = load_image(write(tmp_path / "x.png", array))
    index = torch.tensor([0, 8, 34])
    rows, cols = index // 7, index % 7
    assert torch.allclose(image.values_at(index), torch.from_numpy(array[rows, cols] / 255).float())


def test_pixel_coordinates_are_pixel_centres_in_unit_square():
    coords = pixel_coordinates(torch.arange(4 * 2), height=4, width=2)
    assert torch.allclose(coords[0], torch.tensor([-0.5, -0.75]))
    assert torch.allclose(coords[-1], torch.tensor([0.5, 0.75]))
    # a 2x upsampled grid samples the same square: its pixel centres straddle the coarse ones
    fine = pixel_coordinates(torch.arange(8 * 4), height=8, width=4).reshape(8, 4, 2)
    assert torch.allclose(fine[0:2, 0:2].mean(dim=(0, 1)), coords[0])


def test_save_image_writes_8bit_png(tmp_path):
    values = torch.linspace(0, 1, 4 * 3 * 3).reshape(4, 3, 3)
    save_image(tmp_path / "out.png", values)
    back = iio.imread(tmp_path / "out.png")
    assert back.dtype == np.uint8 and back.shape == (4, 3, 3)
    assert np.abs(back / 255.0 - values.numpy()).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: (p / "notes.png").write_text("this is not an image") and p / "notes.png", "cannot read it as an image"),
        (lambda p: (p / "empty.png").write_bytes(b"") or p / "empty.png", "cannot read it as an image"),
        (lambda p: p, "is a directory"),
    ],
    ids=["missing", "text", "zero-bytes", "directory"],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    with pytest.raises(NfieldError, match=message) as info:
        load_image(make(tmp_path))
    assert "\n" not in str(info.value)


def test_an_image_without_pixels_is_rejected(tmp_path, monkeypatch):
    path = write(tmp_path / "x.png", np.zeros((2, 2), dtype=np.uint8))
    monkeypatch.setattr(iio, "imread", lambda *a, **k: np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(NfieldError, match=r"the image is empty \(4x0 pixels\)"):
        load_image(path)


def test_nan_pixels_are_rejected(tmp_path):
    array = np.ones((4, 4), dtype=np.float32)
    array[1, 2] = np.nan
    with pytest.raises(NfieldError, match="NaN"):
        load_image(write(tmp_path / "x.tif", array))


def write_exr(path, channels):
    import OpenEXR

    channels = {name: np.ascontiguousarray(values) for name, values in channels.items()}  # the writer ignores strides
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, channels) as exr:
        exr.write(str(path))


def test_openexr_files_are_read_in_full_range(tmp_path):
    """OpenEXR (the bindings of the OpenEXR project): RGB float, RGBA half, grey Y, one odd channel."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((5, 7, 3)) * 8).astype(np.float32)
    write_exr(tmp_path / "rgb.exr", {"RGB": rgb})
    image = load_image(tmp_path / "rgb.exr")
    assert image.high_dynamic_range and image.channels == 3 and image.data_range == pytest.approx(rgb.max())
    assert np.array_equal(image.as_float().numpy(), rgb)
    rgba = rgb[..., [0, 1, 2, 0]].astype(np.float16)
    write_exr(tmp_path / "rgba.exr", {"R": rgba[..., 0], "G": rgba[..., 1], "B": rgba[..., 2], "A": rgba[..., 3]})
    assert np.array_equal(load_image(tmp_path / "rgba.exr").as_float().numpy(), rgba.astype(np.float32))
    write_exr(tmp_path / "grey.exr", {"Y": rgb[..., 0]})
    assert load_image(tmp_path / "grey.exr").as_float().shape == (5, 7, 1)
    write_exr(tmp_path / "depth.exr", {"Z": rgb[..., 1]})
    assert np.array_equal(load_image(tmp_path / "depth.exr").as_float()[..., 0].numpy(), rgb[..., 1])
    write_exr(tmp_path / "layers.exr", {"diffuse.R": rgb[..., 0], "specular.R": rgb[..., 1]})
    with pytest.raises(NfieldError, match="no RGB, RGBA or Y channels to fit"):
        load_image(tmp_path / "layers.exr")
    (tmp_path / "broken.exr").write_bytes(b"v/1" + bytes(40))
    with pytest.raises(NfieldError, match="broken.exr: cannot read it as an image"):
        load_image(tmp_path / "broken.exr")


def test_an_opaque_alpha_and_equal_colour_channels_are_not_fitted(tmp_path):
    """An image stored with alpha is fitted with the channels it uses: grey stored as RGBA (alpha 1
    everywhere) is one grey channel, RGB with an opaque alpha three; a real alpha stays, and a run
    fitted to the stored layout keeps it."""
    rng = np.random.default_rng(0)
    grey = (rng.random((5, 7)) * 4).astype(np.float16)  # HDR values, half floats as EXR stores them
    colour = (rng.random((5, 7, 3)) * 4).astype(np.float16)
    opaque = np.ones((5, 7), dtype=np.float16)
    write_exr(tmp_path / "grey.exr", {"R": grey, "G": grey, "B": grey, "A": opaque})
    image = load_image(tmp_path / "grey.exr")
    assert image.channels == 1 and image.high_dynamic_range
    assert np.array_equal(image.as_float()[..., 0].numpy(), grey.astype(np.float32))
    assert load_image(tmp_path / "grey.exr", stored_channels=4).channels == 4  # a run fitted before keeps its 4
    write_exr(tmp_path / "rgb.exr", {"R": colour[..., 0], "G": colour[..., 1], "B": colour[..., 2], "A": opaque})
    assert np.array_equal(load_image(tmp_path / "rgb.exr").as_float().numpy(), colour.astype(np.float32))
    half_transparent = opaque.copy()
    half_transparent[0, 0] = 0.5
    write_exr(tmp_path / "grey-alpha.exr", {"R": grey, "G": grey, "B": grey, "A": half_transparent})
    assert load_image(tmp_path / "grey-alpha.exr").channels == 2  # grey + its alpha

    grey8 = (rng.random((6, 5)) * 255).astype(np.uint8)
    full8 = np.full((6, 5), 255, dtype=np.uint8)
    cases = [
        (np.stack([grey8, grey8, grey8, full8], -1), 1),  # grey stored as RGBA
        (np.stack([grey8, grey8, grey8], -1), 3),  # stored without alpha: as stored
        (np.stack([grey8, full8], -1), 1),  # grey + an opaque alpha
        (np.stack([grey8, 255 - grey8, grey8, full8], -1), 3),  # RGB + an opaque alpha
        (np.stack([grey8, grey8, grey8, grey8], -1), 2),  # grey + a real alpha
    ]
    for k, (array, channels) in enumerate(cases):
        image = load_image(write(tmp_path / f"case{k}.png", array))
        assert image.channels == channels, (k, image.channels)
        assert np.array_equal(image.pixels[..., 0].numpy(), grey8)
    import png

    grey16 = (rng.random((4, 3)) * 65535).astype(np.uint16)
    rgba16 = np.stack([grey16, grey16, grey16, np.full_like(grey16, 65535)], -1)
    with open(tmp_path / "grey16.png", "wb") as f:
        png.Writer(3, 4, greyscale=False, alpha=True, bitdepth=16).write(f, rgba16.reshape(4, -1))
    image = load_image(tmp_path / "grey16.png")
    assert image.channels == 1 and np.array_equal(image.pixels[..., 0].numpy(), grey16)
