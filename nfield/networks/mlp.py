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

Example::

    >>> import torch
    >>> net = MLP(3, 4, MLPConfig(n_neurons=64, n_hidden_layers=2, output_activation="sigmoid"))
    >>> net(torch.rand(10, 3)).shape
    torch.Size([10, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nfield.backends import check_backend, choose_backend, record_backend
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


@dataclass(frozen=True)
class MLPConfig:
    n_neurons: int = 256  # hidden width
    n_hidden_layers: int = 3  # hidden layers of width n_neurons; 0 = one Linear(in_dim, out_dim)
    activation: str = "relu"  # after every hidden layer; a name in ACTIVATIONS
    output_activation: str = "none"  # after the last Linear; a name in ACTIVATIONS
    backend: str = "auto"  # auto (torch), torch, triton (fused kernel) or tcnn (see nfield.backends)

    def __post_init__(self) -> None:
        validate_layer_sizes("MLPConfig", self.n_neurons, self.n_hidden_layers)
        activation_module(self.activation)
        activation_module(self.output_activation)
        check_backend("MLPConfig", self.backend, MLP_BACKENDS)


@NETWORKS.register("MLP", MLPConfig)
class MLP(nn.Module):
    """Fully connected network with PyTorch-default (Kaiming-uniform) initialisation.

    Input (N, in_dim) features; output (N, out_dim), after `cfg.output_activation`.
    The layers are `self.layers`, an ``nn.Sequential`` alternating Linear and activation modules
    (absent with backend ``tcnn``, whose network is `self.tcnn`).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: MLPConfig = MLPConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.backend = cfg.backend
        self.last_backend: str | None = None
        if cfg.backend == "tcnn":
            from nfield.backends.tcnn import TcnnNetwork

            self.tcnn = TcnnNetwork(in_dim, out_dim, cfg)
            return
        widths = [in_dim] + [cfg.n_neurons] * cfg.n_hidden_layers + [out_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            layers += [nn.Linear(fan_in, fan_out), activation_module(cfg.output_activation if last else cfg.activation)]
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
            from nfield.kernels.tiny_mlp import fused_mlp

            linears = [m for m in self.layers if isinstance(m, nn.Linear)]
            out = fused_mlp(
                x,
                [m.weight for m in linears],
                [m.bias for m in linears],
                _canonical(self.cfg.activation),
                _canonical(self.cfg.output_activation),
            )
            if torch.is_autocast_enabled(x.device.type):
                return out.to(torch.get_autocast_dtype(x.device.type))
            return out
        return self.layers(x)

    def extra_repr(self) -> str:
        ran = f" (last call: {self.last_backend})" if self.last_backend else ""
        return f"backend={self.backend}{ran}"
