"""FINER: the SIREN layout with the variable-periodic activation sin(w0 (|u| + 1) u) (Liu et al., CVPR 2024).

"FINER: Flexible spectral-bias tuning in Implicit NEural Representation by Variable-periodic
Activation Functions", Z. Liu, H. Zhu, Q. Zhang, J. Fu, W. Deng, Z. Ma, Y. Guo and X. Cao, CVPR 2024.
Every hidden unit computes, with u = W y + b,

    y' = sin(w0 (|u| + 1) u),

a sine whose local frequency w0 (2 |u| + 1) grows with |u|: the bias of a unit selects which part
of the activation (which band of frequencies) it uses, so the range of the bias initialisation
tunes the network's spectral bias. The last layer is linear.

Initialisation, as in the paper and the official code (github.com/liuzhen0212/FINER, ``models.py``):

- weights: SIREN's, first layer U(-1/n_in, 1/n_in), every other layer (the output included)
  U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0);
- biases: PyTorch's default U(-1/sqrt(n_in), 1/sqrt(n_in)), except the first layer's, which the
  paper draws from a wider U(-k, k) to reach the higher-frequency parts of the activation
  (``first_bias_scale`` = k; the official code's ``first_bias_scale``, applied to the first layer only).

Defaults for images: w0 = 30 in every layer, 4 FINER layers of 256 (the official ``run_finer.sh``:
``hidden_layers=3``, ``hidden_features=256``, lr 5e-4 with Adam and an exponential decay to 0.1x)
and k = `FINER_FIRST_BIAS_SCALE` = 1. The official image, SDF and NeRF scripts leave
``first_bias_scale`` unset, i.e. PyTorch's k = 1/sqrt(in_dim) (0.71 for 2-D coordinates); k = 1 is
slightly wider and never worse in our runs on camera (300 steps, lr 5e-4, training PSNR):

    image, network       k = 1/sqrt(2)   k = 1    k = 5    k = 10   k = 20
    32 x 32, 64 x 2          69.9        102.3      -       84.4     73.7
    128 x 128, 64 x 3        29.9         30.2     31.5       -      27.5
    128 x 128, 128 x 3       36.1         37.7     51.0     57.5     55.7
    256 x 256, 128 x 3         -          30.6       -      28.6     20.0

Wider ranges helped where the network had parameters to spare (33k parameters, 16k pixels) and
hurt with more pixels than parameters (33k, 65k), the usual case at full resolution; k is a knob to
tune per signal, as the paper presents it.

Gradient of the scale: the official code computes the factor (|u| + 1) under ``torch.no_grad()``
(``scale_req_grad=False``), so its backward pass differentiates sin(w0 a u) with a held constant:
w0 (|u| + 1) cos(.) instead of the true derivative w0 (2 |u| + 1) cos(.). That is not the gradient
of the function the network computes, which matters wherever the field's own derivatives are used
(normals, eikonal and Poisson losses). Here the gradient is exact by default; ``detach_scale=True``
reproduces the official code's training dynamics.

Implementation: `Finer` is `SineNetwork` (siren.py), whose layers compute z = w0 u, with the
activation sin(z (|z| / w0 + 1)) = sin(w0 (|u| + 1) u) (`FinerActivation`); a network with the
same seed and keys draws the same weights as a `Siren`, then redraws the first layer's biases.
The activation is smooth except at u = 0, where it is continuously differentiable but its second
derivative jumps from -2 w0 to 2 w0 (the |u| in the frequency factor); double backward (eikonal
losses) works and is exact everywhere else. float16/bfloat16 inputs are evaluated in float32 and cast back.

Example::

    >>> import torch
    >>> net = Finer(2, 1, FinerConfig(n_neurons=64, n_hidden_layers=2))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.networks.mlp import validate_layer_sizes
from nfield.networks.registry import NETWORKS
from nfield.networks.siren import SineNetwork, validate_frequencies

FINER_FIRST_BIAS_SCALE = 1.0
"""Default k of the first layer's bias distribution U(-k, k)."""


class FinerActivation:
    """FINER's activation of the SIREN-scaled pre-activation z = w0 u: sin(z (|z| / w0 + 1)) = sin(w0 (|u| + 1) u).

    Args:
        w0: the layer's frequency factor (the one that scaled z).
        detach_scale: treat the factor (|u| + 1) as a constant in backward, as the official code does.

    Called on a tensor of any shape; returns the same shape and dtype (computed in float32 for
    float16/bfloat16 inputs).
    """

    def __init__(self, w0: float, detach_scale: bool = False):
        self.w0 = w0
        self.detach_scale = detach_scale
        self.__name__ = "finer (scale detached)" if detach_scale else "finer"

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        scale = work.abs() / self.w0 + 1
        if self.detach_scale:
            scale = scale.detach()
        return torch.sin(work * scale).to(z.dtype)

    def __repr__(self) -> str:
        return f"FinerActivation(w0={self.w0}, detach_scale={self.detach_scale})"


@dataclass(frozen=True)
class FinerConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 4  # FINER layers (>= 1), each of width n_neurons (official hidden_layers + 1)
    w0: float = 30.0  # frequency factor of the layers after the first
    w0_initial: float = 30.0  # frequency factor of the first layer
    first_bias_scale: float | None = (
        FINER_FIRST_BIAS_SCALE  # k: first-layer biases ~ U(-k, k); None: PyTorch's U(-1/sqrt(in_dim), ..)
    )
    detach_scale: bool = False  # True: no gradient through (|u| + 1), as the official code (not the true derivative)

    def __post_init__(self) -> None:
        validate_layer_sizes("FinerConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        validate_frequencies("FinerConfig", self.w0, self.w0_initial)
        k = self.first_bias_scale
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k < math.inf):
            raise NfieldError(f"FinerConfig.first_bias_scale must be a positive finite number or None, got {k!r}")
        if not isinstance(self.detach_scale, bool):
            raise NfieldError(f"FinerConfig.detach_scale must be true or false, got {self.detach_scale!r}")


@NETWORKS.register("Finer", FinerConfig)
class Finer(SineNetwork):
    """Hidden units sin(w0 (|u| + 1) u), u = W y + b, SIREN weights, wide first-layer biases, linear output.

    Input (N, in_dim), coordinates in [-1, 1]; output (N, out_dim). Attributes as `SineNetwork`:
    `hidden` (``nn.ModuleList`` of `SineLayer`, each with a `FinerActivation`), `output` (``nn.Linear``).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: FinerConfig = FinerConfig()):
        super().__init__(in_dim, out_dim, cfg.n_neurons, cfg.n_hidden_layers, cfg.w0, cfg.w0_initial, torch.sin)
        self.cfg = cfg
        for layer in self.hidden:
            layer.activation = FinerActivation(layer.w0, cfg.detach_scale)
        if cfg.first_bias_scale is not None:
            k = cfg.first_bias_scale
            nn.init.uniform_(self.hidden[0].linear.bias, -k, k)
