"""tiny-cuda-nn as a backend: its modules behind our classes, built from its own JSON.

tiny-cuda-nn (``tinycudann``, NVIDIA's fused CUDA encodings and networks) is not on PyPI, so it is
never required; it runs when it is installed and a component's ``backend`` is ``tcnn``.

The adapter knows tiny-cuda-nn, not nfield's components: each component config that tiny-cuda-nn
supports writes its own JSON (its ``tcnn_config()`` method, tiny-cuda-nn's key names with
``otype``) and hands that dictionary here. `nfield.encodings.tcnn_encoding_config` and
`nfield.networks.tcnn_network_config` are the entry points that also name a config without one.

- Encodings: the grids (``HashGrid``, ``DenseGrid``) share their table layout with tiny-cuda-nn
  (`nfield.encodings.grid`), so a `HashGrid` on the tcnn backend runs tiny-cuda-nn on nfield's own
  table (`build_tcnn_encoding`, `tcnn_grid_encode`): checkpoints move between backends unchanged.
- Networks: `tcnn_mlp_config` writes tiny-cuda-nn's ``FullyFusedMLP`` (widths 16, 32, 64, 128) or
  ``CutlassMLP`` JSON from a fully connected network's sizes and activation names.
  tiny-cuda-nn's networks have no biases, so a network built on it has tiny-cuda-nn's own parameter
  vector (`TcnnNetwork`), and its weights do not carry over to the other backends.

`tcnn_mlp_config` is a pure function (tested without a GPU); the module wrappers import
``tinycudann`` only when built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nfield.backends import choose_backend
from nfield.errors import NfieldError

_ACTIVATIONS = {
    "none": "None",
    "relu": "ReLU",
    "leakyrelu": "LeakyReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softplus": "Softplus",
}  # canonical activation name (lower case, no underscores) -> tiny-cuda-nn's
_FULLY_FUSED_WIDTHS = (16, 32, 64, 128)  # hidden widths of FullyFusedMLP; other widths get CutlassMLP


def _canonical(name: str) -> str:
    return name.lower().replace("_", "")


def tcnn_activation(name: str, key: str) -> str:
    """tiny-cuda-nn's name for the activation `name` (case and underscores ignored: "leaky_relu" -> "LeakyReLU").

    Args:
        name: an activation name, nfield's or tiny-cuda-nn's spelling.
        key: the config key that holds it ("activation"), for the message.

    Raises:
        NfieldError: tiny-cuda-nn has no such activation.
    """
    translated = _ACTIVATIONS.get(_canonical(name))
    if translated is None:
        raise NfieldError(f"tcnn: tiny-cuda-nn has no {name!r} activation ({key}); it has {', '.join(_ACTIVATIONS.values())}")
    return translated


def tcnn_mlp_config(n_neurons: int, n_hidden_layers: int, activation: str, output_activation: str) -> dict[str, Any]:
    """tiny-cuda-nn's network JSON for a fully connected network.

    Args:
        n_neurons: hidden width; 16, 32, 64 or 128 gives ``FullyFusedMLP``, any other ``CutlassMLP``.
        n_hidden_layers: number of hidden layers.
        activation, output_activation: activation names (see `tcnn_activation`).

    Raises:
        NfieldError: an activation tiny-cuda-nn does not have.

    Example::

        >>> tcnn_mlp_config(64, 2, "relu", "none")["otype"]
        'FullyFusedMLP'
    """
    hidden = tcnn_activation(activation, "activation")
    output = tcnn_activation(output_activation, "output_activation")
    return {
        "otype": "FullyFusedMLP" if n_neurons in _FULLY_FUSED_WIDTHS else "CutlassMLP",
        "activation": hidden,
        "output_activation": output,
        "n_neurons": n_neurons,
        "n_hidden_layers": n_hidden_layers,
    }


def _tinycudann():
    choose_backend("tcnn", "tcnn", torch.device("cuda"), ("tcnn",))  # the one-line error when it is missing
    import tinycudann

    return tinycudann


def build_tcnn_encoding(in_dim: int, encoding: dict[str, Any], dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A ``tinycudann.Encoding`` of `in_dim` coordinates from its JSON `encoding` (a grid's, whose
    parameters will be nfield's table), with parameters of `dtype` on `device`."""
    tcnn = _tinycudann()
    return tcnn.Encoding(in_dim, encoding, dtype=dtype).to(device)


def tcnn_grid_encode(module: nn.Module, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """tiny-cuda-nn's encoding of x (N, d) in [-1, 1] (clamped, as nfield does) with `table` as its
    parameters; (N, L F) float32, differentiable w.r.t. x and the table."""
    if module.n_params != table.numel():
        raise NfieldError(
            f"tcnn: tiny-cuda-nn expects {module.n_params} grid parameters, the table has {table.numel()}; "
            "this tiny-cuda-nn version lays its grid out differently"
        )
    u = ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    out = torch.func.functional_call(module, {"params": table.reshape(-1)}, (u,))
    return out.float()


class TcnnNetwork(nn.Module):
    """tiny-cuda-nn's MLP (``FullyFusedMLP`` or ``CutlassMLP``) with its own parameters (no biases).

    Args:
        in_dim, out_dim: input and output widths.
        network: tiny-cuda-nn's network JSON (`tcnn_mlp_config`).

    Input (N, in_dim); output (N, out_dim) float32. Needs CUDA and ``tinycudann``.
    """

    def __init__(self, in_dim: int, out_dim: int, network: dict[str, Any]):
        super().__init__()
        tcnn = _tinycudann()
        self.network = tcnn.Network(in_dim, out_dim, network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).float()


class TcnnNetworkWithInputEncoding(nn.Module):
    """tiny-cuda-nn's fused encoding + MLP (``NetworkWithInputEncoding``), its own parameters.

    Args:
        in_dim, out_dim: input and output widths.
        encoding: tiny-cuda-nn's encoding JSON (an encoding config's ``tcnn_config()``).
        network: tiny-cuda-nn's network JSON (`tcnn_mlp_config`).

    Input (N, in_dim) in [-1, 1] (mapped to tiny-cuda-nn's [0, 1]); output (N, out_dim) float32.
    """

    def __init__(self, in_dim: int, out_dim: int, encoding: dict[str, Any], network: dict[str, Any]):
        super().__init__()
        tcnn = _tinycudann()
        self.module = tcnn.NetworkWithInputEncoding(in_dim, out_dim, encoding, network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)).float()
