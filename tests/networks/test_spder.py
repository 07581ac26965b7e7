import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.networks import NETWORKS, SineNetwork, Siren, SirenConfig, Spder, SpderConfig, spder_activation
from nfield.networks.spder import SPDER_EPS


def naive_spder(z: torch.Tensor) -> torch.Tensor:
    """The activation exactly as written in the paper, differentiated factor by factor by autograd."""
    return torch.sin(z) * torch.sqrt(torch.abs(z))


def exact_derivative(z: torch.Tensor) -> torch.Tensor:
    return torch.cos(z) * z.abs().sqrt() + torch.sin(z) * z.sign() / (2 * z.abs().sqrt())


def exact_second_derivative(z: torch.Tensor) -> torch.Tensor:
    r = z.abs().sqrt()
    return -torch.sin(z) * r + torch.cos(z) * z.sign() / r - torch.sin(z) / (4 * r**3)


def _derivatives(f, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.clone().requires_grad_()
    (d1,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    return d1.detach(), d2


def test_activation_equals_damped_sine_within_the_smoothing_bound():
    z = torch.cat([torch.linspace(-40, 40, 40001, dtype=torch.float64), torch.tensor([0.0, 1e-4, -1e-4, 1e-30])])
    error = (spder_activation(z) - naive_spder(z)).abs()
    assert error.max().item() <= 0.2 * SPDER_EPS**1.5  # closed-form bound 0.19 eps^1.5, see the docstring
    assert spder_activation(torch.tensor(0.0)).item() == 0.0


def test_gradient_matches_the_analytic_derivative_away_from_zero():
    z = torch.linspace(0.01, 25, 5000, dtype=torch.float64)
    z = torch.cat([-z, z])
    d1, d2 = _derivatives(spder_activation, z)
    # Relative effect of the smoothing ~ (eps / z)^2 = 1e-4 at |z| = 0.01.
    torch.testing.assert_close(d1, exact_derivative(z), rtol=2e-4, atol=1e-8)
    far = z.abs() >= 0.05
    torch.testing.assert_close(d2[far], exact_second_derivative(z[far]), rtol=1e-3, atol=1e-6)


def test_double_backward_matches_finite_differences_including_zero():
    z = torch.tensor([0.0, 1e-5, -3e-5, 2e-4, -0.3, 1.7, -4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spder_activation, (z,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradgradcheck(spder_activation, (z,), eps=1e-7, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_derivatives_are_finite_and_small_at_zero_and_tiny_inputs(dtype):
    z = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8], dtype=dtype)
    assert spder_activation(z).dtype == dtype
    d1, d2 = _derivatives(spder_activation, z)
    assert torch.isfinite(d1).all() and torch.isfinite(d2).all()
    # True slope is 1.5 sqrt(|z|) -> 0; the smoothed one is sqrt(eps) at 0 (closed form).
    assert d1.abs().max().item() <= 1.01 * math.sqrt(SPDER_EPS)
    assert d2.abs().max().item() <= 0.68 / math.sqrt(SPDER_EPS)


def test_slope_is_continuous_through_zero():
    # A clamp such as sqrt(max(|z|, eps)) would make the slope jump by ~0.5 sqrt(eps) at |z| = eps,
    # a kink that second-order losses see; the smoothed slope is Lipschitz with constant max |f''|.
    z = torch.linspace(-1e-3, 1e-3, 20001, dtype=torch.float64)
    d1, _ = _derivatives(spder_activation, z)
    steps = (d1[1:] - d1[:-1]).abs() / (z[1:] - z[:-1])
    assert steps.max().item() <= 0.68 / math.sqrt(SPDER_EPS)


def test_naive_formulation_has_nan_gradient_at_zero():
    """Why `spder_activation` is smoothed: autograd computes sin(0) * inf = NaN for the exact one."""
    z = torch.tensor([0.0, 1.0], requires_grad=True)
    (grad,) = torch.autograd.grad(naive_spder(z).sum(), z)
    assert torch.isnan(grad[0]) and torch.isfinite(grad[1])
    # In float16 tiny pre-activations round to 0 and hit the same NaN.
    z16 = torch.tensor([1e-8], dtype=torch.float16, requires_grad=True)
    (grad16,) = torch.autograd.grad(naive_spder(z16).sum(), z16)
    assert torch.isnan(grad16).all()


def test_spder_is_siren_layout_with_the_damped_sine():
    keys = dict(n_neurons=16, n_hidden_layers=3, w0=20.0, w0_initial=10.0)
    torch.manual_seed(0)
    spder = Spder(2, 3, SpderConfig(**keys)).double()
    torch.manual_seed(0)
    siren = Siren(2, 3, SirenConfig(**keys)).double()
    for (name_a, a), (name_b, b) in zip(spder.state_dict().items(), siren.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)  # same initialisation, drawn by the same code
    x = torch.rand(32, 2, dtype=torch.float64) * 2 - 1
    y = x
    for layer, w0 in zip(spder.hidden, [10.0, 20.0, 20.0]):
        z = w0 * (y @ layer.linear.weight.T + layer.linear.bias)
        y = torch.sin(z) * z.abs().sqrt()
    ref = y @ spder.output.weight.T + spder.output.bias
    torch.testing.assert_close(spder(x), ref, rtol=1e-6, atol=1e-6)


def _grid_with_origin() -> torch.Tensor:
    t = torch.arange(-12, 13) / 12  # 25 samples, t[12] == 0 exactly
    gx, gy = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def _network_with_exact_zero_preactivations(activation) -> SineNetwork:
    """First-layer bias fixed at 0: at the origin every first-layer pre-activation is exactly 0."""
    torch.manual_seed(0)
    net = SineNetwork(2, 1, n_neurons=32, n_hidden_layers=2, w0=30.0, w0_initial=30.0, activation=activation)
    net.hidden[0].linear.bias.requires_grad_(False).zero_()
    return net


def test_fit_keeps_gradients_finite_through_exact_zeros_and_decreases_the_loss():
    coords = _grid_with_origin()
    x, y = coords[:, :1], coords[:, 1:]
    target = 0.5 * torch.sin(2 * math.pi * x) * torch.cos(math.pi * y) + 0.3 * x * y

    naive = _network_with_exact_zero_preactivations(naive_spder)
    ((naive(coords) - target) ** 2).mean().backward()
    assert torch.isnan(naive.hidden[0].linear.weight.grad).any()  # the hazard is real on this batch

    net = _network_with_exact_zero_preactivations(spder_activation)
    assert (net.hidden[0].preactivation(coords) == 0).sum().item() == 32
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(300):
        loss = ((net(coords) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params)
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]  # measured: ~1e-5 of the initial loss


def test_eikonal_loss_gradient_matches_finite_differences():
    """Double backward through the network, as an SDF fit with an eikonal term needs it."""
    net = _network_with_exact_zero_preactivations(spder_activation).double()
    x = _grid_with_origin().double()[::8].requires_grad_()  # 79 points, the origin among them
    assert (x == 0).all(dim=-1).any()

    def eikonal() -> torch.Tensor:
        (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        return ((grad.norm(dim=-1) - 1) ** 2).mean()

    eikonal().backward()
    params = [net.hidden[0].linear.weight, net.hidden[1].linear.weight, net.hidden[1].linear.bias, net.output.weight]
    assert all(torch.isfinite(p.grad).all() for p in params)  # the output bias does not enter the gradient
    h = 1e-7
    for param in params:
        for i in (0, -1):
            flat = param.data.view(-1)
            original = flat[i].item()
            flat[i] = original + h
            plus = eikonal().item()
            flat[i] = original - h
            minus = eikonal().item()
            flat[i] = original
            assert param.grad.view(-1)[i].item() == pytest.approx((plus - minus) / (2 * h), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"n_hidden_layers": 0}, {"n_neurons": -1}, {"w0": 0}, {"w0_initial": float("nan")}])
def test_invalid_config_raises_nfield_error(kwargs):
    with pytest.raises(NfieldError):
        SpderConfig(**kwargs)


def test_registry_builds_spder():
    cfg = NETWORKS.from_dict({"otype": "Spder", "n_neurons": 8, "n_hidden_layers": 1})
    net = NETWORKS.build(cfg, 2, 1)
    assert isinstance(net, Spder) and (net.in_dim, net.out_dim) == (2, 1)
