import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.networks import NETWORKS, Siren, SirenConfig


def _normal_cdf(s: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(s / math.sqrt(2)))


def _arcsine_cdf(s: torch.Tensor) -> torch.Tensor:
    return 0.5 + torch.asin(s.clamp(-1, 1)) / math.pi


def _ks_distance(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of `samples` and `cdf`."""
    s, _ = samples.flatten().double().sort()
    n = s.numel()
    f = cdf(s)
    upper = torch.arange(1, n + 1, dtype=s.dtype) / n - f
    lower = f - torch.arange(0, n, dtype=s.dtype) / n
    return max(upper.max().item(), lower.max().item())


def test_initialisation_bounds_and_variance_per_layer():
    # U(-a, a) has variance a^2 / 3; w0 != w0_initial to catch a mix-up between the two.
    torch.manual_seed(0)
    in_dim, out_dim, n = 64, 16, 256
    cfg = SirenConfig(n_neurons=n, n_hidden_layers=3, w0=30.0, w0_initial=10.0)
    net = Siren(in_dim, out_dim, cfg)
    layers = [layer.linear for layer in net.hidden] + [net.output]
    expected_bounds = [1 / in_dim] + [math.sqrt(6 / n) / 30.0] * 3
    for layer, a in zip(layers, expected_bounds):
        w = layer.weight.detach().double()
        assert w.abs().max() <= a
        assert w.abs().max() >= 0.97 * a  # >= 4096 samples reach close to the bound
        assert w.var().item() == pytest.approx(a * a / 3, rel=0.06)  # std error of the variance < 1.5 %
        # Biases keep PyTorch's default U(-1/sqrt(n_in), 1/sqrt(n_in)), as in the official code.
        b = layer.bias.detach().double()
        bias_bound = 1 / math.sqrt(layer.in_features)
        assert b.abs().max() <= bias_bound
        if b.numel() == n:  # 256 samples: std error of the variance 5.6 %
            assert b.var().item() == pytest.approx(bias_bound**2 / 3, rel=0.2)
    assert [layer.w0 for layer in net.hidden] == [10.0, 30.0, 30.0]


def test_forward_matches_hand_computation():
    torch.manual_seed(1)
    net = Siren(2, 3, SirenConfig(n_neurons=16, n_hidden_layers=3, w0=20.0, w0_initial=5.0)).double()
    x = torch.rand(32, 2, dtype=torch.float64) * 2 - 1
    y = x
    for layer, w0 in zip(net.hidden, [5.0, 20.0, 20.0]):
        y = torch.sin(w0 * (y @ layer.linear.weight.T + layer.linear.bias))
    ref = y @ net.output.weight.T + net.output.bias  # the last layer is linear, no w0
    torch.testing.assert_close(net(x), ref)


def test_hidden_activations_follow_the_papers_distributions():
    """Sitzmann et al. 2020, Sec. 3.2: with x ~ U(-1, 1), the weight term w0 * W y of every hidden
    pre-activation is ~ N(0, 1) and sine outputs are arcsine distributed (std sqrt(1/2)).

    The default biases add w0 * b ~ U(-w0/sqrt(n), w0/sqrt(n)), so the full pre-activation
    z = w0 (W y + b) has variance 2 E[y^2] + w0^2 / (3 n) (= 2.17 for w0 = 30, n = 256).
    Tolerances: statistics of one random network of width 256 on 4096 points; the spread across
    seeds is ~5 % on the stds and ~0.05 on the KS distances.
    """
    torch.manual_seed(0)
    n, w0 = 256, 30.0
    net = Siren(2, 1, SirenConfig(n_neurons=n, n_hidden_layers=6, w0=w0, w0_initial=30.0))
    x = torch.rand(4096, 2) * 2 - 1
    weight_stds, variance_ratios = [], []
    with torch.no_grad():
        y = net.hidden[0](x)
        for layer in net.hidden[1:]:
            weight_term = w0 * (y @ layer.linear.weight.T)
            z = layer.preactivation(y)
            variance_ratios.append(z.var().item() / (2 * (y * y).mean().item() + w0**2 / (3 * n)))
            y_next = layer(y)
            torch.testing.assert_close(y_next, torch.sin(z))

            weight_stds.append(weight_term.std().item())
            assert weight_term.std().item() == pytest.approx(1.0, abs=0.1)
            assert _ks_distance(weight_term, _normal_cdf) < 0.07
            assert y_next.mean().item() == pytest.approx(0.0, abs=0.05)
            assert y_next.std().item() == pytest.approx(math.sqrt(0.5), abs=0.035)
            assert _ks_distance(y_next, _arcsine_cdf) < 0.08
            y = y_next
    assert sum(weight_stds) / len(weight_stds) == pytest.approx(1.0, abs=0.03)
    assert all(0.85 < r < 1.15 for r in variance_ratios)
    assert sum(variance_ratios) / len(variance_ratios) == pytest.approx(1.0, abs=0.08)


def test_input_gradient_matches_finite_differences():
    torch.manual_seed(2)
    net = Siren(2, 2, SirenConfig(n_neurons=16, n_hidden_layers=3)).double()
    x = (torch.rand(8, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradgradcheck(net, (x,), eps=1e-6, atol=1e-4, rtol=1e-3)


def test_parameter_gradient_matches_central_differences():
    torch.manual_seed(3)
    net = Siren(2, 1, SirenConfig(n_neurons=8, n_hidden_layers=2, w0=30.0, w0_initial=30.0)).double()
    x = torch.rand(16, 2, dtype=torch.float64) * 2 - 1
    target = torch.sin(3 * x[:, :1])

    def loss() -> torch.Tensor:
        return ((net(x) - target) ** 2).mean()

    loss().backward()
    h = 1e-6
    for param in [net.hidden[0].linear.weight, net.hidden[1].linear.bias, net.output.weight]:
        for i in (0, -1):
            flat = param.data.view(-1)
            original = flat[i].item()
            flat[i] = original + h
            plus = loss().item()
            flat[i] = original - h
            minus = loss().item()
            flat[i] = original
            assert param.grad.view(-1)[i].item() == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_hidden_layers": 0}, "n_hidden_layers must be an integer >= 1"),
        ({"n_neurons": 0}, "n_neurons"),
        ({"w0": 0.0}, "w0 must be a positive finite number"),
        ({"w0": float("inf")}, "w0 must be a positive finite number"),
        ({"w0_initial": -1.0}, "w0_initial must be a positive finite number"),
    ],
)
def test_invalid_config_raises_nfield_error(kwargs, match):
    with pytest.raises(NfieldError, match=match):
        SirenConfig(**kwargs)


def test_registry_builds_siren():
    cfg = NETWORKS.from_dict({"otype": "Siren", "n_neurons": 8, "n_hidden_layers": 2, "w0": 15})
    net = NETWORKS.build(cfg, 3, 4)
    assert isinstance(net, Siren) and (net.in_dim, net.out_dim) == (3, 4)
    assert net(torch.rand(5, 3)).shape == (5, 4)
