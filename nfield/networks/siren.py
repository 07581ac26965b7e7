"""SIREN: sine-activated networks with their initialisation (Sitzmann et al. 2020).

Hidden unit: y = sin(w0 * (W x + b)); the first layer uses `w0_initial`, the last layer is linear.
Initialisation, as in the paper (Sec. 3.2, supplement Sec. 1) and the official code:

- first layer: W ~ U(-1/n_in, 1/n_in);
- every other layer, the final linear one included: W ~ U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0);
- biases: PyTorch's default Linear init, U(-1/sqrt(n_in), 1/sqrt(n_in)), as in the official code.

With this, the weight term w0 * W y of every hidden pre-activation has standard deviation 1 and
each sine output follows the arcsine distribution on [-1, 1] (std sqrt(1/2)). The default biases
add variance w0^2 / (3 n_neurons) to the pre-activations (1.17 for w0 = 30, 256 neurons), which the
paper's analysis leaves out; it only pushes the sine outputs closer to the arcsine law.

`SineNetwork` is this layout for any activation of the scaled pre-activation; `Siren` uses sin and
SPDER (spder.py) uses sin(z) * sqrt(|z|).

Depth convention: ``n_hidden_layers`` counts sine layers, tiny-cuda-nn style. The official SIREN
code's ``hidden_layers=3`` builds 4 sine layers (a first layer plus 3 hidden ones), which is
``n_hidden_layers=4`` here.

Example::

    >>> import torch
    >>> net = Siren(2, 3, SirenConfig(n_neurons=64, n_hidden_layers=2))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.networks.mlp import validate_layer_sizes
from nfield.networks.registry import NETWORKS


def siren_weight_bound(fan_in: int, w0: float, first: bool) -> float:
    """Half-width a of SIREN's uniform weight distribution U(-a, a).

    Args:
        fan_in: input features of the layer.
        w0: frequency factor of the layers after the first (ignored when `first`).
        first: the layer that sees the raw input.

    Returns:
        1 / fan_in for the first layer, sqrt(6 / fan_in) / w0 otherwise.
    """
    return 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0


def validate_frequencies(owner: str, w0: float, w0_initial: float) -> None:
    """Raise `NfieldError` unless both frequency factors are positive finite numbers."""
    for key, value in (("w0", w0), ("w0_initial", w0_initial)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise NfieldError(f"{owner}.{key} must be a positive finite number, got {value!r}")


class SineLayer(nn.Module):
    """y = activation(w0 * (W x + b)) with SIREN initialisation of W.

    Args:
        in_features, out_features: layer sizes.
        w0: frequency factor multiplying the pre-activation.
        first: use the first-layer weight range U(-1/n_in, 1/n_in) (else sqrt(6/n_in)/w0).
        activation: elementwise function of the scaled pre-activation z = w0 (W x + b).

    Input (N, in_features); output (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        w0: float,
        first: bool,
        activation: Callable[[torch.Tensor], torch.Tensor],
    ):
        super().__init__()
        self.w0 = w0
        self.activation = activation
        self.linear = nn.Linear(in_features, out_features)
        bound = siren_weight_bound(in_features, w0, first)
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """z = w0 * (W x + b), (N, out_features)."""
        return self.w0 * self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.preactivation(x))

    def extra_repr(self) -> str:
        return f"w0={self.w0}, activation={getattr(self.activation, '__name__', self.activation)}"


class SineNetwork(nn.Module):
    """SIREN layout for any activation: `n_hidden_layers` `SineLayer`s and a linear output.

    Args:
        in_dim, out_dim: input and output features.
        n_neurons: width of every hidden layer.
        n_hidden_layers: number of sine layers (>= 1); the first one uses `w0_initial`.
        w0: frequency factor of the other sine layers; also sets the output layer's init range.
        w0_initial: frequency factor of the first layer.
        activation: elementwise function applied to each scaled pre-activation.

    Input (N, in_dim), typically coordinates in [-1, 1]; output (N, out_dim).
    Attributes: `hidden` (``nn.ModuleList`` of `SineLayer`), `output` (``nn.Linear``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        n_neurons: int,
        n_hidden_layers: int,
        w0: float,
        w0_initial: float,
        activation: Callable[[torch.Tensor], torch.Tensor],
    ):
        super().__init__()
        assert n_hidden_layers >= 1, "configs validate n_hidden_layers >= 1"
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden = nn.ModuleList(
            SineLayer(
                in_dim if i == 0 else n_neurons,
                n_neurons,
                w0_initial if i == 0 else w0,
                first=i == 0,
                activation=activation,
            )
            for i in range(n_hidden_layers)
        )
        self.output = nn.Linear(n_neurons, out_dim)
        bound = siren_weight_bound(n_neurons, w0, first=False)
        nn.init.uniform_(self.output.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = layer(x)
        return self.output(x)


@dataclass(frozen=True)
class SirenConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 4  # sine layers (>= 1), each of width n_neurons; 4 is the SIREN paper's 5-layer network
    w0: float = 30.0  # frequency factor of the hidden sine layers after the first
    w0_initial: float = 30.0  # frequency factor of the first layer: sets the finest detail at init

    def __post_init__(self) -> None:
        validate_layer_sizes("SirenConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        validate_frequencies("SirenConfig", self.w0, self.w0_initial)


@NETWORKS.register("Siren", SirenConfig)
class Siren(SineNetwork):
    """Sinusoidal representation network: hidden units sin(w0 (W x + b)), linear output.

    Input (N, in_dim), coordinates in [-1, 1]; output (N, out_dim). Smooth to every order, so
    gradients and Laplacians of the field are well defined (eikonal and Poisson losses).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: SirenConfig = SirenConfig()):
        super().__init__(in_dim, out_dim, cfg.n_neurons, cfg.n_hidden_layers, cfg.w0, cfg.w0_initial, torch.sin)
        self.cfg = cfg
