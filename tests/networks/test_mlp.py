import math

import pytest
import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.networks import ACTIVATIONS, MLP, NETWORKS, MLPConfig, activation_module

REFERENCE_ACTIVATIONS = {
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "softplus": lambda x: torch.log1p(torch.exp(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "tanh": lambda x: 1 - 2 / (torch.exp(2 * x) + 1),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "none": lambda x: x,
}


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("in_dim,out_dim,n_neurons,n_hidden_layers", [(3, 4, 16, 0), (3, 4, 16, 1), (2, 1, 32, 3)])
def test_layer_shapes_and_parameter_count(in_dim, out_dim, n_neurons, n_hidden_layers):
    net = MLP(in_dim, out_dim, MLPConfig(n_neurons=n_neurons, n_hidden_layers=n_hidden_layers))
    widths = [in_dim] + [n_neurons] * n_hidden_layers + [out_dim]
    assert [tuple(l.weight.shape) for l in _linears(net)] == [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    if n_hidden_layers == 0:
        expected = (in_dim + 1) * out_dim
    else:
        first, middle, last = (in_dim + 1) * n_neurons, (n_neurons + 1) * n_neurons, (n_neurons + 1) * out_dim
        expected = first + (n_hidden_layers - 1) * middle + last
    assert sum(p.numel() for p in net.parameters()) == expected
    assert (net.in_dim, net.out_dim) == (in_dim, out_dim)
    assert net(torch.rand(5, in_dim)).shape == (5, out_dim)


def _reference_forward(net: MLP, x: torch.Tensor, hidden, output) -> torch.Tensor:
    linears = _linears(net)
    for layer in linears[:-1]:
        x = hidden(x @ layer.weight.T + layer.bias)
    return output(x @ linears[-1].weight.T + linears[-1].bias)


def test_forward_matches_hand_computation_with_output_activation():
    torch.manual_seed(0)
    net = MLP(3, 2, MLPConfig(n_neurons=8, n_hidden_layers=2, activation="tanh", output_activation="sigmoid"))
    x = torch.randn(64, 3)
    ref = _reference_forward(net, x, REFERENCE_ACTIVATIONS["tanh"], REFERENCE_ACTIVATIONS["sigmoid"])
    out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert out.min() > 0 and out.max() < 1


def test_output_activation_is_applied_only_at_the_end():
    torch.manual_seed(0)
    plain = MLP(2, 3, MLPConfig(n_neurons=8, n_hidden_layers=2))
    relu_out = MLP(2, 3, MLPConfig(n_neurons=8, n_hidden_layers=2, output_activation="relu"))
    relu_out.load_state_dict(plain.state_dict())
    x = torch.randn(256, 2)
    torch.testing.assert_close(relu_out(x), plain(x).clamp_min(0))
    assert (plain(x) < 0).any()  # so the comparison above is not vacuous


@pytest.mark.parametrize("name", sorted(REFERENCE_ACTIVATIONS))
def test_each_activation_name_computes_its_function(name):
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    torch.testing.assert_close(activation_module(name)(x), REFERENCE_ACTIVATIONS[name](x))


def test_activation_table_is_the_documented_one():
    assert set(ACTIVATIONS) == set(REFERENCE_ACTIVATIONS)


@pytest.mark.parametrize(
    "spelling,name", [("ReLU", "relu"), ("LeakyReLU", "leaky_relu"), ("None", "none"), ("Sigmoid", "sigmoid")]
)
def test_tiny_cuda_nn_spellings_are_accepted(spelling, name):
    x = torch.linspace(-3, 3, 61)
    torch.testing.assert_close(activation_module(spelling)(x), REFERENCE_ACTIVATIONS[name](x))


@pytest.mark.parametrize("key", ["activation", "output_activation"])
def test_unknown_activation_raises_nfield_error(key):
    with pytest.raises(NfieldError, match="unknown activation 'sine'.*relu"):
        MLPConfig(**{key: "sine"})
    with pytest.raises(NfieldError, match="unknown activation"):
        NETWORKS.from_dict({"otype": "MLP", key: "swish2"})


@pytest.mark.parametrize(
    "kwargs", [{"n_neurons": 0}, {"n_neurons": -3}, {"n_neurons": 2.5}, {"n_neurons": True}, {"n_hidden_layers": -1}]
)
def test_invalid_sizes_raise_nfield_error(kwargs):
    with pytest.raises(NfieldError, match="must be an integer"):
        MLPConfig(**kwargs)


def test_registry_round_trip_builds_the_same_network():
    cfg = MLPConfig(n_neurons=8, n_hidden_layers=1, activation="silu", output_activation="softplus")
    data = NETWORKS.to_dict(cfg)
    assert data["otype"] == "MLP"
    assert NETWORKS.from_dict(data) == cfg
    net = NETWORKS.build(cfg, 5, 2)
    assert isinstance(net, MLP) and (net.in_dim, net.out_dim) == (5, 2)
