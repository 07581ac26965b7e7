import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.networks.registry import NETWORKS
from nfield.networks.wire import Wire, WireConfig, gabor_wavelet, wire_width
from tests.networks.network_checks import camera_fit_psnr, check_gradients


def _complex_weights(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's parameters of a complex layer as complex128 tensors."""
    weight = torch.complex(layer.weight_real.detach().double(), layer.weight_imag.detach().double())
    imag = layer.bias_imag.detach().double() if layer.bias_imag is not None else torch.zeros_like(layer.bias_real).double()
    return weight, torch.complex(layer.bias_real.detach().double(), imag)


def reference_wire(net: Wire, x: torch.Tensor) -> torch.Tensor:
    """WIRE written with torch's complex arithmetic, as in the paper: psi(z) = exp(j w0 z) exp(-|s0 z|^2)."""
    omega0, s0 = net.cfg.omega0, net.cfg.s0

    def psi(z: torch.Tensor) -> torch.Tensor:
        return torch.exp(1j * omega0 * z) * torch.exp(-((s0 * z).abs() ** 2))

    z = x.double() @ net.first.weight.detach().double().T + net.first.bias.detach().double()  # real first layer
    y = psi(z.to(torch.complex128))
    for layer in net.hidden:
        weight, bias = _complex_weights(layer)
        y = psi(y @ weight.T + bias)
    weight, bias = _complex_weights(net.output)
    return (y @ weight.T + bias).real


def test_forward_matches_complex_arithmetic_in_float64():
    torch.manual_seed(0)
    net = Wire(3, 2, WireConfig(n_neurons=24, n_hidden_layers=3, omega0=7.0, s0=2.5)).double()
    x = torch.rand(64, 3, dtype=torch.float64) * 2 - 1
    out = net(x)
    assert out.dtype == torch.float64 and out.shape == (64, 2)
    torch.testing.assert_close(out, reference_wire(net, x), rtol=1e-12, atol=1e-12)
    # The float32 module computes the same function (default hyper-parameters, default dtype).
    net32 = Wire(2, 1, WireConfig(n_neurons=32, n_hidden_layers=2))
    x32 = torch.rand(256, 2) * 2 - 1
    assert net32(x32).dtype == torch.float32
    torch.testing.assert_close(net32(x32).double(), reference_wire(net32, x32.double()), rtol=1e-4, atol=1e-5)


def test_gabor_wavelet_formula():
    z = torch.complex(torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64) * 0.2)
    omega0, s0 = 20.0, 3.0
    expected = torch.exp(1j * omega0 * z - (s0 * z.abs()) ** 2)
    out = gabor_wavelet(z.real[None], z.imag[None], omega0, s0)[0]
    torch.testing.assert_close(torch.complex(out[:50], out[50:]), expected)
    real_input = gabor_wavelet(z.real[None], None, omega0, s0)[0]
    torch.testing.assert_close(
        torch.complex(real_input[:50], real_input[50:]), torch.exp(1j * omega0 * z.real - (s0 * z.real) ** 2)
    )
    # Amplitudes under sqrt(tiny) become exact zeros (no subnormal numbers); the change is below 1.1e-19.
    far = gabor_wavelet(torch.tensor([[0.0, 1.0, 3.0]]), None, 20.0, 10.0)
    assert far[0, 2] == 0 and far[0, 5] == 0 and far[0, 0] == 1
    assert not ((far != 0) & (far.abs() < torch.finfo(torch.float32).tiny)).any()


def test_width_follows_the_official_sqrt2_reduction_and_parameter_count():
    assert [wire_width(n) for n in (256, 300, 64, 2, 1)] == [181, 212, 45, 1, 1]
    cfg = WireConfig(n_neurons=256, n_hidden_layers=4)
    net = Wire(2, 3, cfg)
    m = 181
    first = (2 + 1) * m  # real
    hidden = 3 * 2 * (m * m + m)  # complex: two reals per entry
    output = 2 * m * 3 + 3  # complex weight, real part of the bias (the imaginary part never reaches the output)
    assert sum(p.numel() for p in net.parameters()) == first + hidden + output
    assert all(not p.is_complex() for p in net.parameters())
    # 199,284 real numbers: within 0.2 % of the real 256-wide network with as many activated layers (198,915).
    real = (2 + 1) * 256 + 3 * (256 * 256 + 256) + (256 + 1) * 3
    assert abs(sum(p.numel() for p in net.parameters()) / real - 1) < 2e-3


def test_initialisation_is_pytorchs_default_for_real_and_complex_linear_layers():
    torch.manual_seed(0)
    net = Wire(2, 3, WireConfig(n_neurons=256, n_hidden_layers=3))
    bound = 1 / math.sqrt(2)
    for p in (net.first.weight, net.first.bias):
        assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound
    for layer in [*net.hidden, net.output]:
        bound = 1 / math.sqrt(layer.in_features)
        for p in (layer.weight_real, layer.weight_imag, layer.bias_real, layer.bias_imag):
            if p is None:
                continue
            p = p.detach().double()
            assert p.abs().max() <= bound
            assert p.abs().max() >= 0.9 * bound
            if p.numel() >= 181 * 181:  # U(-a, a): variance a^2 / 3, standard error < 1.5 %
                assert p.var().item() == pytest.approx(bound**2 / 3, rel=0.05)
    # Real and imaginary parts are drawn independently.
    corr = torch.corrcoef(torch.stack([net.hidden[0].weight_real.flatten(), net.hidden[0].weight_imag.flatten()]))[0, 1]
    assert abs(corr.item()) < 0.02


def test_gradients_flow_and_match_finite_differences():
    torch.manual_seed(1)
    check_gradients(Wire(2, 2, WireConfig(n_neurons=8, n_hidden_layers=3, omega0=5.0, s0=1.5)).double(), seed=1)


def test_low_precision_inputs_are_evaluated_in_float32():
    torch.manual_seed(2)
    net = Wire(2, 1, WireConfig(n_neurons=16, n_hidden_layers=2))
    z = torch.randn(4, 8) * 0.3
    half = gabor_wavelet(z.half(), z.half(), 20.0, 10.0)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), gabor_wavelet(z.half().float(), z.half().float(), 20.0, 10.0), rtol=1e-3, atol=1e-3)
    assert torch.isfinite(net.half()(torch.rand(8, 2).half())).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_hidden_layers": 0}, "n_hidden_layers must be an integer >= 1"),
        ({"n_neurons": 0}, "n_neurons must be an integer >= 1"),
        ({"n_neurons": 64.0}, "n_neurons"),
        ({"omega0": 0.0}, "omega0 must be a positive finite number"),
        ({"omega0": float("nan")}, "omega0 must be a positive finite number"),
        ({"s0": -1.0}, "s0 must be a positive finite number"),
        ({"s0": True}, "s0 must be a positive finite number"),
    ],
)
def test_invalid_config_raises_one_line_nfield_error(kwargs, match):
    with pytest.raises(NfieldError, match=match) as info:
        WireConfig(**kwargs)
    assert "\n" not in str(info.value) and str(info.value).startswith("WireConfig.")


def test_registry_round_trip_and_build():
    cfg = WireConfig(n_neurons=32, n_hidden_layers=2, omega0=15.0, s0=5.0)
    data = NETWORKS.to_dict(cfg)
    assert data == {"otype": "Wire", "n_neurons": 32, "n_hidden_layers": 2, "omega0": 15.0, "s0": 5.0}
    assert NETWORKS.from_dict(data) == cfg
    net = NETWORKS.build(cfg, 2, 3)
    assert isinstance(net, Wire) and (net.in_dim, net.out_dim) == (2, 3)
    out = net(torch.rand(7, 2) * 2 - 1)
    assert out.shape == (7, 3) and out.dtype == torch.float32
    assert NETWORKS.from_dict({"otype": "Wire"}) == WireConfig()
    with pytest.raises(NfieldError, match="unknown key"):
        NETWORKS.from_dict({"otype": "Wire", "sigma0": 10})


def test_fits_a_small_image(tmp_path):
    # lr 5e-3: the official code's recommended range (5e-3 to 2e-2) and the peak of FINER's WIRE sweep.
    psnr = camera_fit_psnr(WireConfig(n_neurons=64, n_hidden_layers=2), 5e-3, tmp_path)
    assert psnr > 45  # measured 55.6 dB (SIREN 64 x 2 at its lr 1e-4: 26.1 dB, ReLU MLP: 18.2 dB)
