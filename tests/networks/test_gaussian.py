import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.networks.gaussian import GAUSSIAN_SIGMA, GaussianNetwork, GaussianNetworkConfig, flushed_exp, gaussian_activation
from nfield.networks.registry import NETWORKS
from tests.networks.network_checks import camera_fit_psnr, check_gradients


def reference_gaussian(net: GaussianNetwork, x: torch.Tensor) -> torch.Tensor:
    """Ramasinghe & Lucey's activation e^{-0.5 z^2 / a^2} after every hidden linear layer; linear output."""
    a = net.cfg.sigma
    y = x
    for layer in net.hidden:
        z = y @ layer.weight.T + layer.bias
        y = torch.exp(-0.5 * z**2 / a**2)
    return y @ net.output.weight.T + net.output.bias


def test_forward_matches_the_papers_formula_in_float64():
    torch.manual_seed(0)
    net = GaussianNetwork(3, 2, GaussianNetworkConfig(n_neurons=32, n_hidden_layers=3, sigma=0.3)).double()
    x = torch.rand(64, 3, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(net(x), reference_gaussian(net, x), rtol=1e-12, atol=1e-12)
    net32 = GaussianNetwork(2, 1, GaussianNetworkConfig(n_neurons=64, n_hidden_layers=2))  # default sigma
    x32 = torch.rand(256, 2) * 2 - 1
    out = net32(x32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_gaussian(net32.double(), x32.double()), rtol=1e-5, atol=1e-5)


def test_default_sigma_is_finers_scale_30():
    assert GaussianNetworkConfig().sigma == GAUSSIAN_SIGMA
    z = torch.linspace(-0.2, 0.2, 101, dtype=torch.float64)
    torch.testing.assert_close(gaussian_activation(z, GAUSSIAN_SIGMA), torch.exp(-((30 * z) ** 2)))


def test_tiny_values_are_flushed_to_zero_not_subnormal():
    log_values = torch.tensor([0.0, -10.0, -43.0, -44.0, -90.0, -200.0])
    out = flushed_exp(log_values)
    torch.testing.assert_close(out[:3], torch.exp(log_values[:3]))
    assert (out[3:] == 0).all()  # exp(-44) = 7.8e-20 < sqrt(float32 tiny) = 1.1e-19
    tiny = torch.finfo(torch.float32).tiny
    activations = gaussian_activation(torch.linspace(-1, 1, 10001), GAUSSIAN_SIGMA)
    assert not ((activations > 0) & (activations < tiny)).any()
    # float64 keeps everything down to 1.5e-154.
    assert flushed_exp(torch.tensor([-300.0], dtype=torch.float64)).item() == pytest.approx(math.exp(-300))


def test_initialisation_is_pytorchs_default():
    torch.manual_seed(0)
    net = GaussianNetwork(2, 3, GaussianNetworkConfig(n_neurons=256, n_hidden_layers=3))
    for layer in [*net.hidden, net.output]:
        bound = 1 / math.sqrt(layer.in_features)
        w, b = layer.weight.detach().double(), layer.bias.detach().double()
        assert w.abs().max() <= bound and w.abs().max() > 0.97 * bound
        assert b.abs().max() <= bound
        if w.numel() >= 256 * 256:
            assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


def test_gradients_flow_and_match_finite_differences():
    torch.manual_seed(1)
    check_gradients(GaussianNetwork(2, 2, GaussianNetworkConfig(n_neurons=8, n_hidden_layers=3, sigma=0.5)).double(), seed=1)


def test_low_precision_inputs_do_not_overflow():
    z = torch.tensor([0.0, 0.01, 8.0, -300.0], dtype=torch.float16)  # (z / sigma)^2 overflows float16 from |z| = 6
    out = gaussian_activation(z, GAUSSIAN_SIGMA)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), torch.exp(-((30 * z.float()) ** 2)), rtol=1e-3, atol=1e-4)
    zz = z.float().requires_grad_()
    gaussian_activation(zz.half(), GAUSSIAN_SIGMA).float().sum().backward()
    assert torch.isfinite(zz.grad).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_hidden_layers": 0}, "n_hidden_layers must be an integer >= 1"),
        ({"n_neurons": 0}, "n_neurons must be an integer >= 1"),
        ({"sigma": 0.0}, "sigma must be a positive finite number"),
        ({"sigma": -0.1}, "sigma must be a positive finite number"),
        ({"sigma": float("inf")}, "sigma must be a positive finite number"),
        ({"sigma": "0.1"}, "sigma must be a positive finite number"),
    ],
)
def test_invalid_config_raises_one_line_nfield_error(kwargs, match):
    with pytest.raises(NfieldError, match=match) as info:
        GaussianNetworkConfig(**kwargs)
    assert "\n" not in str(info.value) and str(info.value).startswith("GaussianNetworkConfig.")


def test_registry_round_trip_and_build():
    cfg = GaussianNetworkConfig(n_neurons=16, n_hidden_layers=2, sigma=0.05)
    data = NETWORKS.to_dict(cfg)
    assert data == {"otype": "GaussianNetwork", "n_neurons": 16, "n_hidden_layers": 2, "sigma": 0.05}
    assert NETWORKS.from_dict(data) == cfg
    assert NETWORKS.from_dict(NETWORKS.to_dict(GaussianNetworkConfig())) == GaussianNetworkConfig()
    net = NETWORKS.build(cfg, 2, 3)
    assert isinstance(net, GaussianNetwork) and (net.in_dim, net.out_dim) == (2, 3)
    out = net(torch.rand(5, 2) * 2 - 1)
    assert out.shape == (5, 3) and out.dtype == torch.float32


def test_fits_a_small_image(tmp_path):
    # lr 5e-3: FINER's run_gauss.sh.
    psnr = camera_fit_psnr(GaussianNetworkConfig(n_neurons=64, n_hidden_layers=2), 5e-3, tmp_path)
    assert psnr > 38  # measured 45.6 dB (SIREN 64 x 2 at its lr 1e-4: 26.1 dB, ReLU MLP: 18.2 dB)
