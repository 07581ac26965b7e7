"""The fully connected network (tiny-cuda-nn's MLP) and the activations every network names.

Layout, with tiny-cuda-nn's key names: ``Linear(in_dim, n_neurons) + activation``, then
``n_hidden_layers - 1`` times ``Linear(n_neurons, n_neurons) + activation``, then
``Linear(n_neurons, out_dim) + output_activation``; ``n_hidden_layers = 0`` is a single
``Linear(in_dim, out_dim) + output_activation``.

Backends (the ``backend`` key, see `nfield.backends`): ``torch`` runs ``nn.Linear`` layers;
``triton`` runs the same weights through the fused kernel of `nfield.kernels.tiny_mlp` (CUDA;
widths, inputs and outputs up to 128, n_hidden_layers >= 1, float16 with float32 accumulation);
``auto`` stays on ``torch`` until the fused kernel is measured faster on a GPU (BENCHMARKS.md).
``tcnn`` builds tiny-cuda-nn's MLP instead, with its own bias-free parameters.

Fourier reparameterised training (``fourier_reparam``; Shi, Zhou and Gu, "Improved Implicit Neural
Representation with Fourier Reparameterized Training", CVPR 2024, and their official code
LabShuHangGU/FR-INR): every hidden-to-hidden layer ``Linear(n_neurons, n_neurons)`` becomes a
`FourierLinear` whose weight is W = Lambda B, with B a fixed Fourier basis and Lambda trained; the
first layer (in_dim -> n_neurons) and the output layer stay plain ``nn.Linear``, as in the paper's
code, so the switch needs n_hidden_layers >= 2. The effective weight is exactly ``Lambda @ B``
(`FourierLinear.weight`), so a trained network can be folded into a plain MLP of the same shape.
It runs on the torch backend and on the fused triton kernel (which gets the effective weights);
tiny-cuda-nn holds its own weights, so ``backend="tcnn"`` with ``fourier_reparam`` is refused.

Example::

    >>> import torch
    >>> net = MLP(3, 4, MLPConfig(n_neurons=64, n_hidden_layers=2, output_activation="sigmoid"))
    >>> net(torch.rand(10, 3)).shape
    torch.Size([10, 4])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from nfield.backends import check_backend, choose_backend, record_backend
from nfield.backends.tcnn import TcnnNetwork, tcnn_mlp_config
from nfield.errors import NfieldError
from nfield.networks.registry import NETWORKS

MLP_BACKENDS = ("torch", "triton", "tcnn")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
}
"""Activation name -> factory of its module. Names are matched ignoring case and underscores, so
tiny-cuda-nn spellings ("ReLU", "LeakyReLU", "None") work too."""


def _canonical(name: str) -> str:
    return name.lower().replace("_", "")


_BY_CANONICAL = {_canonical(name): name for name in ACTIVATIONS}


def activation_module(name: str) -> nn.Module:
    """A fresh module for the activation called `name` (see `ACTIVATIONS`).

    Raises:
        NfieldError: `name` is not a known activation.
    """
    key = _BY_CANONICAL.get(_canonical(name)) if isinstance(name, str) else None
    if key is None:
        raise NfieldError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def check_int(owner: str, key: str, value: object, minimum: int) -> None:
    """Raise `NfieldError` unless ``owner.key = value`` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NfieldError(f"{owner}.{key} must be an integer >= {minimum}, got {value!r}")


def validate_layer_sizes(owner: str, n_neurons: int, n_hidden_layers: int, min_hidden_layers: int = 0) -> None:
    """Check the width/depth keys shared by every network config.

    Args:
        owner: config name used in the message ("MLPConfig").
        n_neurons: hidden width, an int >= 1.
        n_hidden_layers: number of hidden layers, an int >= `min_hidden_layers`.

    Raises:
        NfieldError: a size is not an int or out of range.
    """
    check_int(owner, "n_neurons", n_neurons, 1)
    check_int(owner, "n_hidden_layers", n_hidden_layers, min_hidden_layers)


def check_positive(owner: str, key: str, value: object) -> None:
    """Raise `NfieldError` unless ``owner.key = value`` is a positive finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise NfieldError(f"{owner}.{key} must be a positive finite number, got {value!r}")


def fourier_basis(in_features: int, n_frequencies: int, n_phases: int, alpha: float) -> torch.Tensor:
    """FR-INR's fixed Fourier basis B, (M, in_features) float32 with M = 2 * n_frequencies * n_phases.

    Row (omega, phi) is alpha * cos(omega * z_j + phi) at the points
    z_j = linspace(-T_max / 2, T_max / 2, in_features), j < in_features, with

    - frequencies omega: the low set {1/F, 2/F, ..., 1}, then the high set {1, 2, ..., F} (F = n_frequencies);
    - phases phi = 2 pi p / P, p < P (P = n_phases);
    - T_max = 2 pi / min(omega) = 2 pi F, the longest period, so the lowest frequency spans the points once.

    Rows run low frequencies first, then high, each frequency over all its phases (the official code's
    order). Computed in float64 and rounded once. alpha scales the basis; it cancels out of the initial
    weights (see `FourierLinear`) and sets how fast gradient steps on Lambda move W.
    """
    frequencies = torch.cat(
        [torch.arange(1, n_frequencies + 1, dtype=torch.float64) / n_frequencies, torch.arange(1, n_frequencies + 1).double()]
    )
    phases = 2 * math.pi * torch.arange(n_phases, dtype=torch.float64) / n_phases
    t_max = 2 * math.pi * n_frequencies
    points = torch.linspace(-t_max / 2, t_max / 2, in_features, dtype=torch.float64)
    angles = frequencies[:, None, None] * points[None, None, :] + phases[None, :, None]  # (2F, P, in)
    return (alpha * torch.cos(angles)).reshape(-1, in_features).float()


class FourierLinear(nn.Module):
    """A linear layer with Fourier-reparameterised weight: y = x W^T + b, W = Lambda B (FR-INR, CVPR 2024).

    Args:
        in_features, out_features: layer sizes.
        n_frequencies: F, frequencies per set (low and high); M = 2 F P basis rows.
        n_phases: P, phases per frequency.
        alpha: scale of the basis (the paper's code: 0.05 for ReLU networks, 0.01 for sine ones).

    Attributes:
        basis: B, (M, in_features), a buffer: saved in the state dict, never trained (`fourier_basis`).
        coefficients: Lambda, (out_features, M), trained.
        bias: (out_features,), trained, zero at first (the official code).

    Initialisation, as the official code (the paper does not fit Lambda by least squares): column k of
    Lambda is drawn from U(-a_k, a_k) with a_k = sqrt(6 / M) / ||B_k||, B_k the k-th basis row. Then
    E[W_ij^2] = (2 / M) sum_k B_kj^2 / ||B_k||^2, whose mean over the in_features columns j is exactly
    2 / in_features: W starts at the scale of U(-sqrt(6 / n), sqrt(6 / n)) (He-uniform, variance 2 / n),
    whatever alpha. That is 6x the variance of PyTorch's default U(-1/sqrt(n), 1/sqrt(n)) that the
    MLP's plain layers keep.

    Input (N, in_features); output (N, out_features). The weight is computed in float32 (float64 for a
    float64 module) even under autocast, then used like an ``nn.Linear`` weight.
    """

    basis: torch.Tensor

    def __init__(self, in_features: int, out_features: int, n_frequencies: int, n_phases: int, alpha: float):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        basis = fourier_basis(in_features, n_frequencies, n_phases, alpha)
        self.register_buffer("basis", basis)
        norms = basis.double().norm(dim=1)
        bounds = torch.where(norms > 0, math.sqrt(6.0 / basis.shape[0]) / norms.clamp_min(1e-300), 0.0).float()
        self.coefficients = nn.Parameter(torch.empty(out_features, basis.shape[0]).uniform_(-1.0, 1.0) * bounds)
        self.bias = nn.Parameter(torch.zeros(out_features))

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight W = Lambda @ B, (out_features, in_features), differentiable w.r.t. Lambda."""
        dtype = torch.promote_types(self.coefficients.dtype, torch.float32)
        with torch.autocast(self.coefficients.device.type, enabled=False):
            return self.coefficients.to(dtype) @ self.basis.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n_bases={self.basis.shape[0]}"


@dataclass(frozen=True)
class MLPConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 3  # hidden layers of width n_neurons; 0 = one Linear(in_dim, out_dim)
    activation: str = "relu"  # after every hidden layer; a name in ACTIVATIONS
    output_activation: str = "none"  # after the last Linear; a name in ACTIVATIONS
    backend: str = "auto"  # auto (torch), torch, triton (fused kernel) or tcnn (see nfield.backends)
    fourier_reparam: bool = False  # hidden-to-hidden weights W = Lambda B (FR-INR); needs n_hidden_layers >= 2
    fourier_frequencies: int = 128  # F: low frequencies {1/F .. 1} and high {1 .. F}; FR-INR's image setting
    fourier_phases: int = 32  # P phases per frequency; M = 2 F P = 8192 bases per reparameterised layer
    fourier_alpha: float = 0.05  # scale of the bases; FR-INR uses 0.05 for ReLU (0.01 for sine) networks

    def __post_init__(self) -> None:
        validate_layer_sizes("MLPConfig", self.n_neurons, self.n_hidden_layers)
        activation_module(self.activation)
        activation_module(self.output_activation)
        check_backend("MLPConfig", self.backend, MLP_BACKENDS)
        if not isinstance(self.fourier_reparam, bool):
            raise NfieldError(f"MLPConfig.fourier_reparam must be true or false, got {self.fourier_reparam!r}")
        check_int("MLPConfig", "fourier_frequencies", self.fourier_frequencies, 1)
        check_int("MLPConfig", "fourier_phases", self.fourier_phases, 1)
        check_positive("MLPConfig", "fourier_alpha", self.fourier_alpha)
        if self.fourier_reparam and self.n_hidden_layers < 2:
            raise NfieldError(
                f"MLPConfig.fourier_reparam reparameterises hidden-to-hidden layers: needs n_hidden_layers >= 2, "
                f"got {self.n_hidden_layers}"
            )
        if self.fourier_reparam and self.backend == "tcnn":
            raise NfieldError("MLPConfig.fourier_reparam runs on backends torch and triton, not tcnn (its weights are its own)")

    def tcnn_config(self) -> dict[str, Any]:
        """tiny-cuda-nn's network JSON for this layout (``FullyFusedMLP`` or ``CutlassMLP``, see `tcnn_mlp_config`).

        Raises:
            NfieldError: an activation tiny-cuda-nn does not have.
        """
        return tcnn_mlp_config(self.n_neurons, self.n_hidden_layers, self.activation, self.output_activation)


@NETWORKS.register("MLP", MLPConfig)
class MLP(nn.Module):
    """Fully connected network with PyTorch-default (Kaiming-uniform) initialisation.

    Input (N, in_dim) features; output (N, out_dim), after `cfg.output_activation`.
    The layers are `self.layers`, an ``nn.Sequential`` alternating Linear and activation modules
    (absent with backend ``tcnn``, whose network is `self.tcnn`). With ``cfg.fourier_reparam`` the
    hidden-to-hidden Linears are `FourierLinear` (W = Lambda B, see its docstring); the first and last
    stay ``nn.Linear``.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: MLPConfig = MLPConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.backend = cfg.backend
        self.last_backend: str | None = None
        self._packed = None  # the fused kernel's packed float16 weights, reused until a parameter changes
        if cfg.backend == "tcnn":
            self.tcnn = TcnnNetwork(in_dim, out_dim, cfg.tcnn_config())
            return
        widths = [in_dim] + [cfg.n_neurons] * cfg.n_hidden_layers + [out_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            if cfg.fourier_reparam and 0 < i and not last:
                linear: nn.Module = FourierLinear(fan_in, fan_out, cfg.fourier_frequencies, cfg.fourier_phases, cfg.fourier_alpha)
            else:
                linear = nn.Linear(fan_in, fan_out)
            layers += [linear, activation_module(cfg.output_activation if last else cfg.activation)]
        self.layers = nn.Sequential(*layers)

    def fusable(self) -> str | None:
        """None when the fused Triton kernel can run this network, else why not (one phrase)."""
        from nfield.kernels.tiny_mlp import FUSED_ACTIVATIONS, MAX_WIDTH

        cfg = self.cfg
        if cfg.backend == "tcnn":
            return "it was built on tiny-cuda-nn"
        if cfg.n_hidden_layers < 1:
            return "it has no hidden layer"
        if max(cfg.n_neurons, self.in_dim, self.out_dim) > MAX_WIDTH:
            return f"its widths exceed {MAX_WIDTH}"
        for name in (cfg.activation, cfg.output_activation):
            if _canonical(name) not in FUSED_ACTIVATIONS:
                return f"the fused kernel has no {name!r} activation"
        return None

    def set_backend(self, name: str) -> bool:
        """Run later calls on backend `name` (auto, torch, triton); returns whether it applied.

        tcnn is chosen at construction only (tiny-cuda-nn's networks have no biases, so the
        weights cannot carry over): asking a PyTorch-built MLP for tcnn, or a tcnn-built one for
        anything else, leaves it as it is and returns False.
        """
        check_backend("MLP", name, MLP_BACKENDS)
        if (name == "tcnn") != (self.cfg.backend == "tcnn"):
            return False
        self.backend = name
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = choose_backend("MLP", self.backend, x.device, MLP_BACKENDS, auto_triton=False)
        if backend == "triton":
            reason = self.fusable()
            if reason is not None:
                raise NfieldError(f"MLP: backend 'triton' cannot run this network: {reason}; use backend 'auto'")
        self.last_backend = backend
        record_backend("MLP", backend)
        if backend == "tcnn":
            return self.tcnn(x)
        if backend == "triton":
            from nfield.kernels.tiny_mlp import PackedWeightsCache, fused_mlp

            if self._packed is None:
                self._packed = PackedWeightsCache()
            linears = list(self.layers)[0::2]  # nn.Linear or FourierLinear (its weight is Lambda @ B)
            out = fused_mlp(
                x,
                [m.weight for m in linears],
                [m.bias for m in linears],
                _canonical(self.cfg.activation),
                _canonical(self.cfg.output_activation),
                cache=self._packed,
            )
            if torch.is_autocast_enabled(x.device.type):
                return out.to(torch.get_autocast_dtype(x.device.type))
            return out
        return self.layers(x)

    def extra_repr(self) -> str:
        ran = f" (last call: {self.last_backend})" if self.last_backend else ""
        return f"backend={self.backend}{ran}"
