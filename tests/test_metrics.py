import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nfield.metrics import psnr, psnr_from_mse, ssim


@pytest.mark.parametrize("shape", [(37, 53), (40, 31, 3), (24, 24, 4)])
def test_ssim_matches_scikit_image_gaussian_ssim(shape):
    rng = np.random.default_rng(0)
    a = rng.random(shape)
    b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)
    expected = structural_similarity(
        a,
        b,
        channel_axis=2 if len(shape) == 3 else None,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ssim(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, abs=1e-10)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(20, 20, 3)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_scikit_image_and_closed_form():
    rng = np.random.default_rng(1)
    a = rng.random((16, 16, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    assert psnr(torch.tensor(b), torch.tensor(a)) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    assert psnr_from_mse(0.0) == math.inf
    assert float(psnr_from_mse(torch.tensor(1e-2))) == pytest.approx(20.0)
