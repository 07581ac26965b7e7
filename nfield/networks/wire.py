"""WIRE: coordinate networks with complex Gabor wavelet activations (Saragadam et al., CVPR 2023).

"WIRE: Wavelet Implicit Neural Representations", V. Saragadam, D. LeJeune, J. Tan, G. Balakrishnan,
A. Veeraraghavan and R. G. Baraniuk, CVPR 2023. Every hidden unit applies the continuous complex
Gabor wavelet to its complex pre-activation z = W y + b:

    sigma(z) = exp(j omega0 z) exp(-|s0 z|^2)
             = exp(-omega0 Im z - s0^2 |z|^2) (cos(omega0 Re z) + j sin(omega0 Re z)).

Layout, as in the official code (github.com/vishwa91/wire, ``modules/wire.py``, ``INR``), which
the authors say produced every result in the paper:

- first layer: a *real* linear map of the (real) input, z = W x + b, then the Gabor wavelet, so
  its outputs are complex;
- ``n_hidden_layers - 1`` complex linear layers, each followed by the Gabor wavelet;
- a complex linear output layer whose real part is the network's output.

Width: a complex parameter is two real ones, so the official code divides the requested hidden
width by sqrt(2), ``int(n_neurons / sqrt(2))`` (256 -> 181 complex units), to keep the parameter
count of a real network of width ``n_neurons``: a 181 x 181 complex matrix holds 65,522 real
numbers, a 256 x 256 real one 65,536. `Wire` follows it; `wire_width` gives the complex width.

Parameters are stored as real tensors (``weight_real``/``weight_imag``, ``bias_real``/``bias_imag``)
and the complex arithmetic is written out in reals, so ``.double()``, ``.half()``, optimisers,
gradient clipping and parameter counts (``numel``) see ordinary real tensors; Adam on the pair is
Adam on the complex parameter viewed as two reals, which is what PyTorch does for complex tensors.
The imaginary part of the output bias never reaches the (real) output, so it is left out.

Initialisation, as in the official code (PyTorch's default ``nn.Linear``, complex for the hidden
and output layers): every weight and bias entry, and for complex layers its real and its imaginary
part independently, ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where fan_in is the layer's input width.

Defaults for images: omega0 = 20 and s0 = 10, as in the WIRE runs of FINER's image benchmark
(github.com/liuzhen0212/FINER, ``models.py`` ``Wire`` and ``run_wire.sh``, whose learning-rate sweep
peaks at 5e-3 with Adam and an exponential decay to 0.1x; FINER++ uses the same values). The
official ``wire_image_denoise.py`` comment suggests omega0 = 20 with s0 = 30 for representation;
on camera 128 x 128 (128 x 3 network, 300 steps, lr 5e-3) s0 = 10 reached 47.8 dB and s0 = 30 36.4 dB.
``n_neurons = 256`` and ``n_hidden_layers = 4`` Gabor layers match the SIREN preset and FINER's
comparison; the official denoising script uses ``hidden_layers = 2``, i.e. 3 Gabor layers
(``n_hidden_layers = 3`` here). The official code suggests lr 5e-3 to 2e-2 for WIRE.

The activation is smooth (exp, cos, sin), so double backward (eikonal losses) is exact. Low
precision inputs (float16/bfloat16 under autocast) are evaluated in float32: omega0 z and s0^2 |z|^2
need more than float16's 11 bits, and the result is cast back. Amplitudes below 1.1e-19 (float32)
are flushed to exact zeros (`nfield.networks.gaussian.flushed_exp`): subnormal numbers made CPU
training steps about 4x slower.

Example::

    >>> import torch
    >>> net = Wire(2, 3, WireConfig(n_neurons=64, n_hidden_layers=2))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfield.errors import NfieldError
from nfield.networks.gaussian import flushed_exp
from nfield.networks.mlp import validate_layer_sizes
from nfield.networks.registry import NETWORKS

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def wire_width(n_neurons: int) -> int:
    """Complex units per hidden layer for a real-equivalent width: int(n_neurons / sqrt(2)), at least 1."""
    return max(1, int(n_neurons / math.sqrt(2)))


def gabor_wavelet(z_real: torch.Tensor, z_imag: torch.Tensor | None, omega0: float, s0: float) -> torch.Tensor:
    """Complex Gabor wavelet exp(j omega0 z - |s0 z|^2) of z = z_real + j z_imag, in real arithmetic.

    Args:
        z_real: (N, M) real part of the pre-activation.
        z_imag: (N, M) imaginary part, or None for a real pre-activation (the first layer).
        omega0: frequency of the wavelet's sinusoid.
        s0: scale (inverse width) of its Gaussian window.

    Returns:
        (N, 2M): the real parts in the first M columns, the imaginary parts in the last M, in the
        dtype of `z_real` (computed in float32 for float16/bfloat16 inputs).
    """
    dtype = z_real.dtype
    if dtype in _LOW_PRECISION:
        z_real = z_real.float()
        z_imag = None if z_imag is None else z_imag.float()
    log_amplitude = -(s0 * s0) * (z_real * z_real)
    if z_imag is not None:
        log_amplitude = log_amplitude - omega0 * z_imag - (s0 * s0) * (z_imag * z_imag)
    amplitude = flushed_exp(log_amplitude)
    phase = omega0 * z_real
    return torch.cat([amplitude * torch.cos(phase), amplitude * torch.sin(phase)], dim=-1).to(dtype)


class ComplexLinear(nn.Module):
    """z = W y + b with complex W, b, stored as real and imaginary parts.

    Args:
        in_features, out_features: complex widths.
        bias_imag: keep the imaginary part of the bias (False for WIRE's output layer, whose
            imaginary part is discarded).

    Input (N, 2 in_features): real parts, then imaginary parts. Output (N, 2 out_features), same layout.
    Initialisation: real and imaginary parts of W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)),
    PyTorch's default for a complex ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, bias_imag: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_real = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_imag = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_real = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_imag = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias_imag else None

    def real_part(self, y: torch.Tensor) -> torch.Tensor:
        """Re(W y + b), (N, 2 in_features) -> (N, out_features)."""
        weight = torch.cat([self.weight_real, -self.weight_imag], dim=1)
        return F.linear(y, weight, self.bias_real)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # [Re z, Im z] = [[Wr, -Wi], [Wi, Wr]] [Re y, Im y] + [br, bi]: one real matrix product.
        weight = torch.cat(
            [torch.cat([self.weight_real, -self.weight_imag], dim=1), torch.cat([self.weight_imag, self.weight_real], dim=1)]
        )
        bias_imag = self.bias_imag if self.bias_imag is not None else torch.zeros_like(self.bias_real)
        return F.linear(y, weight, torch.cat([self.bias_real, bias_imag]))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} (complex)"


def _check_positive(owner: str, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise NfieldError(f"{owner}.{key} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class WireConfig:
    n_neurons: int = 256  # real-equivalent hidden width; the complex layers get int(n_neurons / sqrt(2)) units (256 -> 181)
    n_hidden_layers: int = 4  # Gabor-activated layers (>= 1), the first one real -> complex (official hidden_layers + 1)
    omega0: float = 20.0  # frequency of the Gabor wavelet's sinusoid, exp(j omega0 z)
    s0: float = 10.0  # scale of its Gaussian window, exp(-|s0 z|^2)

    def __post_init__(self) -> None:
        validate_layer_sizes("WireConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        _check_positive("WireConfig", "omega0", self.omega0)
        _check_positive("WireConfig", "s0", self.s0)


@NETWORKS.register("Wire", WireConfig)
class Wire(nn.Module):
    """Complex Gabor wavelet network; the output is the real part of a complex linear layer.

    Input (N, in_dim) real features, typically coordinates in [-1, 1]; output (N, out_dim) real.
    Attributes: `first` (``nn.Linear``, real), `hidden` (``nn.ModuleList`` of `ComplexLinear`,
    ``n_hidden_layers - 1`` of them), `output` (`ComplexLinear` without imaginary bias), `width`
    (complex units per hidden layer).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: WireConfig = WireConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim, self.out_dim = in_dim, out_dim
        self.width = wire_width(cfg.n_neurons)
        self.first = nn.Linear(in_dim, self.width)  # PyTorch default init, as in the official code
        self.hidden = nn.ModuleList(ComplexLinear(self.width, self.width) for _ in range(cfg.n_hidden_layers - 1))
        self.output = ComplexLinear(self.width, out_dim, bias_imag=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim)."""
        omega0, s0, m = self.cfg.omega0, self.cfg.s0, self.width
        y = gabor_wavelet(self.first(x), None, omega0, s0)  # (N, 2m): real parts, imaginary parts
        for layer in self.hidden:
            z = layer(y)
            y = gabor_wavelet(z[..., :m], z[..., m:], omega0, s0)
        return self.output.real_part(y)

    def extra_repr(self) -> str:
        return f"omega0={self.cfg.omega0}, s0={self.cfg.s0}, complex width={self.width}"
