"""Signal quality: PSNR and SSIM, computed in torch on any device (the surfaces' metrics are
`nfield.geometry.surface_metrics`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr_from_mse(mse: float | torch.Tensor, data_range: float = 1.0) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / mse); inf for a perfect match."""
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(data_range**2 / mse)
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB between two images of the same shape (any layout), computed in float64."""
    mse = torch.mean((prediction.double() - target.double()) ** 2).item()
    return float(psnr_from_mse(mse, data_range))


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over pixels and channels.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`` (the paper's settings, K1=0.01, K2=0.03),
    evaluated on the 'valid' region where the whole window fits, as scikit-image crops it. Images
    smaller than the window (11 px, where scikit-image refuses) have their edges replicated to fit one.

    Args:
        prediction, target: (H, W) or (H, W, C) images.
        data_range: the dynamic range of the values (1 for images in [0, 1]).

    Returns:
        The mean SSIM, a float in [-1, 1].
    """
    x, y = (_as_batch(t) for t in (prediction, target))
    channels = x.shape[1]
    radius = int(3.5 * sigma + 0.5)  # scikit-image's truncate=3.5 for the Gaussian filter
    size = 2 * radius + 1
    coords = torch.arange(size, dtype=torch.float64, device=x.device) - radius
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size)

    short = max(size - x.shape[-2], size - x.shape[-1], 0)
    if short:  # smaller than the window (11 px): edges replicated until one window fits
        pad = (short // 2, short - short // 2) * 2
        x, y = F.pad(x, pad, mode="replicate"), F.pad(y, pad, mode="replicate")

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    # scikit-image averages over the region at least (window_size - 1) / 2 away from the border
    crop = (window_size - 1) // 2 - radius
    if crop > 0:
        s = s[..., crop:-crop, crop:-crop]
    return float(s.mean())


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    """(H, W) or (H, W, C) -> (1, C, H, W) float64."""
    if image.dim() == 2:
        image = image[..., None]
    return image.permute(2, 0, 1)[None].double()
