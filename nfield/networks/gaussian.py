"""Gaussian-activated coordinate networks (Ramasinghe & Lucey, ECCV 2022).

"Beyond Periodicity: Towards a Unifying Framework for Activations in Coordinate-MLPs",
S. Ramasinghe and S. Lucey, ECCV 2022. The paper shows that a coordinate-MLP needs no positional
encoding as long as its activation gives the network a high stable rank, and that non-periodic
activations such as the Gaussian do so while being far less sensitive to the initialisation than
sines. Every hidden unit computes, with z = W y + b,

    y' = exp(-z^2 / (2 sigma^2)),

the paper's parametrisation (e^{-0.5 x^2 / a^2} with a = sigma); the last layer is linear.
WIRE's and FINER's code write the same function as exp(-(s z)^2) with s = 1 / (sqrt(2) sigma).

Initialisation: PyTorch's default ``nn.Linear`` for every layer, weights and biases
~ U(-1/sqrt(n_in), 1/sqrt(n_in)): no activation-specific scheme (the paper's claim is that these
activations are robust to the random initialisation), as in the Gaussian baselines of the official
WIRE and FINER code (``GaussLayer``).

Defaults for images: 4 Gaussian layers of 256 and s = 30, i.e. sigma = 1 / (30 sqrt(2)) = 0.0236
(`GAUSSIAN_SIGMA`), the Gaussian baseline of FINER's image benchmark (github.com/liuzhen0212/FINER,
``run_gauss.sh`` / ``models.py``: ``hidden_layers=3``, ``hidden_features=256``, scale 30, lr 5e-3
with Adam and an exponential decay to 0.1x). A narrow Gaussian makes every unit respond to a thin
band of pre-activations: at initialisation, on inputs uniform in [-1, 1]^2, the pre-activations of
the four layers have standard deviations 0.54, 0.10, 0.24, 0.16 against sigma = 0.024, and 9 %,
52 %, 23 %, 36 % of the units output more than 0.01. On camera 128 x 128 (128 x 3 network,
300 steps, lr 5e-3) this sigma reached 42.3 dB, sigma = 0.0707 (WIRE's Gaussian baseline, s = 10)
29.7 dB.

The activation is infinitely differentiable, so double backward (eikonal losses) is exact.
float16/bfloat16 inputs are evaluated in float32 ((z / sigma)^2 overflows float16 for |z| > 6
with the default sigma) and cast back.

Example::

    >>> import torch
    >>> net = GaussianNetwork(2, 3, GaussianNetworkConfig(n_neurons=64, n_hidden_layers=2))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.networks.mlp import validate_layer_sizes
from nfield.networks.registry import NETWORKS

GAUSSIAN_SIGMA = 1.0 / (30.0 * math.sqrt(2.0))
"""Default width sigma: exp(-z^2 / (2 sigma^2)) = exp(-(30 z)^2), FINER's Gaussian baseline (scale 30)."""


def flushed_exp(log_value: torch.Tensor) -> torch.Tensor:
    """exp(log_value) with every result below sqrt(finfo.tiny) set to exactly 0 (float32: below 1.1e-19).

    Narrow Gaussians (and WIRE's Gabor windows) put most of their outputs far below float32's
    smallest normal number (1.2e-38); CPUs process such subnormal numbers far more slowly, which
    made whole training steps 3-4x slower in our measurements. Flushing at sqrt(tiny) instead of
    tiny also keeps products of a kept value with any factor above sqrt(tiny) normal. The change
    is below 1.1e-19 in value (1.5e-154 in float64) and the flushed entries get a zero gradient.

    Args:
        log_value: any shape, float32 or float64.

    Returns:
        Same shape and dtype.
    """
    cutoff = 0.5 * math.log(torch.finfo(log_value.dtype).tiny)
    return torch.exp(log_value.masked_fill(log_value < cutoff, -math.inf))


def gaussian_activation(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-z^2 / (2 sigma^2)) elementwise (see `flushed_exp` for values under 1e-19).

    Args:
        z: any shape, the pre-activation W y + b.
        sigma: width of the Gaussian, > 0.

    Returns:
        Same shape and dtype as `z` (evaluated in float32 for float16/bfloat16 inputs).
    """
    work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    scaled = work / sigma
    return flushed_exp(-0.5 * scaled * scaled).to(z.dtype)


@dataclass(frozen=True)
class GaussianNetworkConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 4  # Gaussian-activated layers (>= 1), each of width n_neurons
    sigma: float = GAUSSIAN_SIGMA  # width of exp(-z^2 / (2 sigma^2)); 0.0236 = FINER's scale 30, exp(-(30 z)^2)

    def __post_init__(self) -> None:
        validate_layer_sizes("GaussianNetworkConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
            raise NfieldError(f"GaussianNetworkConfig.sigma must be a positive finite number, got {s!r}")


@NETWORKS.register("GaussianNetwork", GaussianNetworkConfig)
class GaussianNetwork(nn.Module):
    """Hidden units exp(-(W y + b)^2 / (2 sigma^2)), PyTorch-default initialisation, linear output.

    Input (N, in_dim), typically coordinates in [-1, 1]; output (N, out_dim).
    Attributes: `hidden` (``nn.ModuleList`` of ``nn.Linear``), `output` (``nn.Linear``).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: GaussianNetworkConfig = GaussianNetworkConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim, self.out_dim = in_dim, out_dim
        widths = [in_dim] + [cfg.n_neurons] * cfg.n_hidden_layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(cfg.n_neurons, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim)."""
        for layer in self.hidden:
            x = gaussian_activation(layer(x), self.cfg.sigma)
        return self.output(x)

    def extra_repr(self) -> str:
        return f"sigma={self.cfg.sigma:.4g}"
