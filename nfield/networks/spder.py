"""SPDER: the SIREN layout with the damped sine sin(z) * sqrt(|z|) (Shah & Sitawarin 2023).

"SPDER: Semiperiodic Damping-Enabled Object Representation" replaces SIREN's sin(z) by
sin(z) * delta(z) with the sublinear damping delta(z) = sqrt(|z|). Everything else is SIREN: the
paper's reference code keeps the frequency scaling, z = w0 * (W x + b) with w0 = 30 in every layer
(the first included), SIREN's weight initialisation, default biases and a linear output layer.
So `Spder` is `SineNetwork` (siren.py) with `spder_activation`, and its keys are SIREN's.

Example::

    >>> import torch
    >>> net = Spder(2, 1, SpderConfig(n_neurons=64, n_hidden_layers=2))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nfield.networks.mlp import validate_layer_sizes
from nfield.networks.registry import NETWORKS
from nfield.networks.siren import SineNetwork, validate_frequencies

SPDER_EPS = 1e-4
"""Smoothing scale of the damping in `spder_activation`, in units of the pre-activation z."""


def spder_activation(z: torch.Tensor, eps: float = SPDER_EPS) -> torch.Tensor:
    """SPDER's damped sine, smoothed at the origin: sin(z) * (z^2 + eps^2)^(1/4).

    The exact activation f(z) = sin(z) * sqrt(|z|) is C^1 (f'(0) = 0) but its second derivative
    grows like 0.75 / sqrt(|z|) near 0 (7.5e14 at z = 1e-30), and autograd differentiates the
    product factor by factor: at z = 0 it multiplies sin(0) = 0 by d sqrt(|z|)/dz = inf and
    returns NaN, in every dtype; in float16 every |z| < 3e-8 rounds to 0 and gives NaN too.
    Replacing sqrt(|z|) by (z^2 + eps^2)^(1/4) gives a function that is infinitely differentiable
    everywhere (double backward for eikonal losses is safe) and whose autograd never sees an
    infinite factor, since z^2 + eps^2 >= eps^2. The price, in closed form for eps << 1:

    - value: |f_eps - f| <= 0.19 eps^1.5 (2e-7 for the default eps = 1e-4), largest near |z| = eps;
    - slope: f_eps'(0) = sqrt(eps) (0.01) instead of 0, relative error ~ (eps / z)^2 elsewhere;
    - curvature: |f_eps''| <= 0.68 / sqrt(eps) (68) around 0, where the exact one is unbounded.

    float16 and bfloat16 inputs are evaluated in float32 (eps^2 underflows in float16) and the
    result is cast back to the input dtype.

    Args:
        z: any shape, the scaled pre-activation w0 * (W x + b).
        eps: smoothing scale, > 0.

    Returns:
        Same shape and dtype as `z`.
    """
    work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    damping = (work * work + eps * eps).pow(0.25)
    return (torch.sin(work) * damping).to(z.dtype)


@dataclass(frozen=True)
class SpderConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 4  # damped-sine layers (>= 1), each of width n_neurons (as SirenConfig)
    w0: float = 30.0  # frequency factor of the hidden layers after the first (paper: 30)
    w0_initial: float = 30.0  # frequency factor of the first layer (paper: 30)

    def __post_init__(self) -> None:
        validate_layer_sizes("SpderConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        validate_frequencies("SpderConfig", self.w0, self.w0_initial)


@NETWORKS.register("Spder", SpderConfig)
class Spder(SineNetwork):
    """Hidden units spder_activation(w0 (W x + b)) ~ sin(z) sqrt(|z|), SIREN init, linear output.

    Input (N, in_dim), coordinates in [-1, 1]; output (N, out_dim). The same seed gives the same
    parameters as a `Siren` with the same keys; only the activation differs.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: SpderConfig = SpderConfig()):
        super().__init__(in_dim, out_dim, cfg.n_neurons, cfg.n_hidden_layers, cfg.w0, cfg.w0_initial, spder_activation)
        self.cfg = cfg
