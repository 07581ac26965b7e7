"""Image loading for image fitting: files read with imageio, or images bundled with scikit-image.

Pixels stay integers (uint8; 16-bit ones as int32, since torch's uint16 lacks CUDA indexing) or
float32, so a large 8-bit image costs one byte per channel, not four; `Image.values_at` converts
only the pixels a batch needs.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfield.errors import NfieldError

#: Images that ship with scikit-image and can be named instead of a path.
BUNDLED_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel")

_HDR_SUFFIXES = {".exr", ".hdr", ".pfm"}


@dataclass
class Image:
    """An image held as (H, W, C) pixels in their stored dtype.

    Attributes:
        pixels: (H, W, C) uint8, int32 (16-bit images) or float32 tensor, row 0 at the top.
        scale: factor mapping stored values to intensities (1/255, 1/65535, or 1 for float).
        source: the path or bundled name it came from.
        high_dynamic_range: True for float images (values are linear and may exceed 1).
        data_range: peak value for PSNR/SSIM: 1 for low dynamic range, the largest value for HDR.
    """

    pixels: torch.Tensor
    scale: float
    source: str
    high_dynamic_range: bool = False
    data_range: float = 1.0

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]

    def to(self, device: torch.device | str) -> "Image":
        return Image(self.pixels.to(device), self.scale, self.source, self.high_dynamic_range, self.data_range)

    def values_at(self, flat_index: torch.Tensor) -> torch.Tensor:
        """Intensities of the pixels with row-major indices `flat_index` (B,) -> (B, C) float32."""
        return self.pixels.reshape(-1, self.channels)[flat_index].float() * self.scale

    def as_float(self) -> torch.Tensor:
        """All intensities, (H, W, C) float32."""
        return self.pixels.float() * self.scale


def load_image(source: str | Path, downscale: int = 1, stored_channels: int | None = None) -> Image:
    """Read an image file (PNG/JPEG/TIFF, 8- or 16-bit, grey/RGB/RGBA; OpenEXR in half or full float,
    read with the OpenEXR bindings; Radiance HDR/PFM where an imageio plugin reads them) or a
    bundled image name (see `BUNDLED_IMAGES`).

    An image stored with an alpha channel is fitted with the channels its pixels use
    (`significant_channels`): an alpha that is fully opaque everywhere is dropped, and RGBA whose
    R, G and B are equal everywhere is grey, so a grey picture saved as RGBA is fitted as grey.

    Args:
        source: a file path or a bundled image name such as ``"camera"``.
        downscale: integer factor; the image is box-filtered (each output pixel is the mean of a
            downscale x downscale block) and cropped to a multiple of the factor.
        stored_channels: keep the file's channels as stored when it stores this many (a run
            fitted to them before redundant channels were dropped reads its image back unchanged).

    Returns:
        An `Image`; raises `NfieldError` with one line for missing, unreadable or empty input.
    """
    if downscale < 1:
        raise NfieldError(f"--downscale must be a positive integer, got {downscale}")
    array, name = _read(source)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise NfieldError(f"{name}: expected a grey, grey+alpha, RGB or RGBA image, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise NfieldError(f"{name}: the image is empty ({array.shape[1]}x{array.shape[0]} pixels)")
    if stored_channels != array.shape[2]:
        array = significant_channels(array)
    if array.dtype == np.uint8:
        scale, hdr = 1 / 255, False
    elif array.dtype == np.uint16:
        array, scale, hdr = array.astype(np.int32), 1 / 65535, False
    elif np.issubdtype(array.dtype, np.floating):
        array, scale, hdr = array.astype(np.float32), 1.0, True
        if not np.isfinite(array).all():
            raise NfieldError(f"{name}: the image contains NaN or infinite values")
    elif np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        array, scale, hdr = array.astype(np.float32) / float(info.max), 1.0, False
    else:
        raise NfieldError(f"{name}: unsupported pixel type {array.dtype}")
    if downscale > 1:
        array, scale = _box_downscale(array.astype(np.float64) * scale, downscale, name), 1.0
    peak = float(array.max()) * scale if hdr else 1.0
    return Image(torch.from_numpy(np.ascontiguousarray(array)), scale, name, hdr, peak if peak > 0 else 1.0)


def significant_channels(array: np.ndarray) -> np.ndarray:
    """(H, W, C) pixels of an image stored with an alpha channel (grey+alpha, RGBA) without the
    channels that carry nothing: an alpha at full opacity at every pixel (255, 65535, or 1.0 for
    float images) is dropped, and RGBA's R, G and B equal at every pixel become one grey channel.
    Grey RGBA with an opaque alpha -> grey, RGB with an opaque alpha -> RGB, grey RGBA with a real
    alpha -> grey+alpha. Images stored without alpha (grey, RGB) are returned as they are."""
    channels = array.shape[2]
    if channels not in (2, 4) or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return array
    opaque = 1.0 if np.issubdtype(array.dtype, np.floating) else np.iinfo(array.dtype).max
    alpha = [] if np.all(array[..., -1] == opaque) else [channels - 1]
    red = array[..., 0]
    grey = channels == 4 and np.array_equal(red, array[..., 1]) and np.array_equal(red, array[..., 2])
    colour = [0] if grey else list(range(channels - 1))
    return array if len(colour) + len(alpha) == channels else array[..., colour + alpha]


@contextlib.contextmanager
def quiet_probing():
    """Within the block, imageio's DeprecationWarnings are not shown: probing a file that no plugin
    reads imports its legacy plugins (DICOM), whose deprecation notice would print beside our own
    one-line error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _read(source: str | Path) -> tuple[np.ndarray, str]:
    path = Path(source)
    if not path.exists() and str(source) in BUNDLED_IMAGES:
        import skimage.data

        return np.asarray(getattr(skimage.data, str(source))()), str(source)
    if not path.exists():
        hint = f"; bundled images: {', '.join(BUNDLED_IMAGES)}" if not path.suffix else ""
        raise NfieldError(f"{source}: no such file{hint}")
    if path.is_dir():
        raise NfieldError(f"{source}: is a directory, not an image file")
    try:
        with quiet_probing():
            array = _read_file(path)
    except Exception as err:  # imageio raises many types; all mean "not readable as an image"
        hint = ""
        if path.suffix.lower() in (".hdr", ".pfm"):
            hint = " (Radiance HDR and PFM need imageio's freeimage plugin: `imageio_download_bin freeimage`; or convert to EXR)"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        for named in (f"`{path}``", f"`{path}`", str(path)):  # the line names the file once, first
            reason = reason.replace(named, "it")
        raise NfieldError(f"{source}: cannot read it as an image: {reason}{hint}") from None
    return np.asarray(array), str(source)


def _read_file(path: Path) -> np.ndarray:
    """The pixels of an existing image file, by format (imageio's errors pass through)."""
    import imageio.v3 as iio

    if path.suffix.lower() == ".exr":
        array = _read_exr(path)
    elif _is_16bit_colour_png(path):
        array = _read_png_16bit(path)
    elif path.suffix.lower() in {".gif", ".webp", ".apng"}:
        array = iio.imread(path, index=0)
    else:
        array = iio.imread(path)
    return array


def _read_exr(path: Path) -> np.ndarray:
    """An OpenEXR file's first part as (H, W, C) float32: its RGBA, RGB, grey (Y) or only channel
    (the OpenEXR bindings group R, G, B and A), half floats widened."""
    import OpenEXR

    with OpenEXR.File(str(path)) as exr:  # the pixels live as long as the file is open
        channels = exr.channels()
        for name in ("RGBA", "RGB", "YA", "Y"):
            if name in channels:
                return np.array(channels[name].pixels, dtype=np.float32)
        if len(channels) == 1:
            return np.array(next(iter(channels.values())).pixels, dtype=np.float32)
        raise ValueError(f"no RGB, RGBA or Y channels to fit (it has {', '.join(sorted(channels))})")


def _is_16bit_colour_png(path: Path) -> bool:
    """True for 16-bit PNGs with colour or alpha, which Pillow (imageio's PNG reader) cuts to 8 bits."""
    with open(path, "rb") as f:
        header = f.read(26)
    is_png = header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return is_png and len(header) == 26 and header[24] == 16 and header[25] != 0


def _read_png_16bit(path: Path) -> np.ndarray:
    """(H, W, C) uint16 pixels of a 16-bit PNG, via pypng (which keeps all 16 bits)."""
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return array.reshape(height, width, info["planes"])


def _box_downscale(array: np.ndarray, factor: int, name: str) -> np.ndarray:
    h, w, c = array.shape
    if h < factor or w < factor:
        raise NfieldError(f"{name}: a {w}x{h} image cannot be downscaled by {factor}")
    h, w = h - h % factor, w - w % factor
    blocks = array[:h, :w].reshape(h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(1, 3)).astype(np.float32)


def pixel_coordinates(flat_index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised coordinates of pixel centres.

    Args:
        flat_index: (B,) row-major pixel indices, int64.
        height, width: image size in pixels.

    Returns:
        (B, 2) float32 (x, y) in [-1, 1]: x grows to the right, y downwards; pixel (r, c) sits at
        x = 2 (c + 0.5) / width - 1, y = 2 (r + 0.5) / height - 1, so any resolution samples the
        same continuous square.
    """
    rows = torch.div(flat_index, width, rounding_mode="floor")
    cols = flat_index - rows * width
    x = (cols.float() + 0.5) * (2.0 / width) - 1.0
    y = (rows.float() + 0.5) * (2.0 / height) - 1.0
    return torch.stack([x, y], dim=-1)


def to_uint8(values: torch.Tensor) -> np.ndarray:
    """(H, W, C) float intensities -> (H, W) or (H, W, C) uint8 for saving, clipped to [0, 1]."""
    array = (values.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_image(path: Path, values: torch.Tensor) -> None:
    """Write (H, W, C) float intensities in [0, 1] as an 8-bit PNG/JPEG (by suffix)."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    array = to_uint8(values)
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha: PNG stores it as LA
        array = np.concatenate([array[..., :1].repeat(3, -1), array[..., 1:]], axis=-1)
    iio.imwrite(path, array)
