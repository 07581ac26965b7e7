"""tiny-cuda-nn as a backend: our configs in its JSON, its modules behind our classes.

tiny-cuda-nn (``tinycudann``, NVIDIA's fused CUDA encodings and networks) is not on PyPI, so it is
never required; it runs when it is installed and a component's ``backend`` is ``tcnn``. Our
configs already use its key names, so the translation is a rename of ``otype`` and a dictionary:

- `encoding_config`: ``HashGrid``, ``DenseGrid``, ``Frequency``, ``SphericalHarmonics``,
  ``Identity`` configs -> tiny-cuda-nn encoding JSON. The grids share their table layout with
  tiny-cuda-nn (`nfield.encodings.grid`), so a `HashGrid` on the tcnn backend runs tiny-cuda-nn on
  nfield's own table: checkpoints move between backends unchanged.
- `network_config`: `MLPConfig` -> ``FullyFusedMLP`` (widths 16, 32, 64, 128) or ``CutlassMLP``.
  tiny-cuda-nn's networks have no biases, so an MLP built with backend ``tcnn`` has tiny-cuda-nn's
  own parameter vector (`TcnnNetwork`), and its weights do not carry over to the other backends.

The translations are pure functions (tested without a GPU); the module wrappers import
``tinycudann`` only when built.
"""

from __future__ import annotations

import dataclasses
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
}  # canonical nfield name (lower case, no underscores) -> tiny-cuda-nn's
_FULLY_FUSED_WIDTHS = (16, 32, 64, 128)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "")


def encoding_config(cfg: Any) -> dict[str, Any]:
    """tiny-cuda-nn's encoding JSON for an nfield encoding config.

    Raises:
        NfieldError: the encoding has no tiny-cuda-nn counterpart.

    Example::

        >>> from nfield.encodings import HashGridConfig
        >>> encoding_config(HashGridConfig(n_levels=2))["otype"]
        'HashGrid'
    """
    from nfield.encodings import ENCODINGS

    otype = ENCODINGS.otype(cfg)
    keys = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "backend"}
    if otype in ("HashGrid", "DenseGrid"):
        return {"otype": otype, **keys, "interpolation": "Linear"}
    if otype == "Frequency":
        if keys.get("include_input", False) or not keys.get("include_pi", True):
            raise NfieldError(
                "tcnn: tiny-cuda-nn's Frequency encoding is sin/cos(2^k pi x) alone; set include_input=False, include_pi=True"
            )
        return {"otype": "Frequency", "n_frequencies": keys["n_frequencies"]}
    if otype == "SphericalHarmonics":
        return {"otype": "SphericalHarmonics", "degree": keys["degree"]}
    if otype == "Identity":
        return {"otype": "Identity"}
    raise NfieldError(f"tcnn: the {otype} encoding has no tiny-cuda-nn counterpart; use backend 'auto'")


def network_config(cfg: Any) -> dict[str, Any]:
    """tiny-cuda-nn's network JSON for an `MLPConfig`.

    Raises:
        NfieldError: an activation tiny-cuda-nn does not have.

    Example::

        >>> from nfield.networks import MLPConfig
        >>> network_config(MLPConfig(n_neurons=64, n_hidden_layers=2))["otype"]
        'FullyFusedMLP'
    """
    names = []
    for key in ("activation", "output_activation"):
        name = _ACTIVATIONS.get(_canonical(getattr(cfg, key)))
        if name is None:
            raise NfieldError(
                f"tcnn: tiny-cuda-nn has no {getattr(cfg, key)!r} activation ({key}); it has {', '.join(_ACTIVATIONS.values())}"
            )
        names.append(name)
    otype = "FullyFusedMLP" if cfg.n_neurons in _FULLY_FUSED_WIDTHS else "CutlassMLP"
    return {
        "otype": otype,
        "activation": names[0],
        "output_activation": names[1],
        "n_neurons": cfg.n_neurons,
        "n_hidden_layers": cfg.n_hidden_layers,
    }


def _tinycudann():
    choose_backend("tcnn", "tcnn", torch.device("cuda"), ("tcnn",))  # the one-line error when it is missing
    import tinycudann

    return tinycudann


def build_tcnn_encoding(in_dim: int, cfg: Any, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A ``tinycudann.Encoding`` for a grid config whose parameters will be nfield's table."""
    tcnn = _tinycudann()
    module = tcnn.Encoding(in_dim, encoding_config(cfg), dtype=dtype).to(device)
    return module


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

    Input (N, in_dim); output (N, out_dim) float32. Needs CUDA and ``tinycudann``.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: Any):
        super().__init__()
        tcnn = _tinycudann()
        self.network = tcnn.Network(in_dim, out_dim, network_config(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).float()


class TcnnNetworkWithInputEncoding(nn.Module):
    """tiny-cuda-nn's fused encoding + MLP (``NetworkWithInputEncoding``), its own parameters.

    Input (N, in_dim) in [-1, 1] (mapped to tiny-cuda-nn's [0, 1]); output (N, out_dim) float32.
    """

    def __init__(self, in_dim: int, out_dim: int, encoding: Any, network: Any):
        super().__init__()
        tcnn = _tinycudann()
        self.module = tcnn.NetworkWithInputEncoding(in_dim, out_dim, encoding_config(encoding), network_config(network))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)).float()
