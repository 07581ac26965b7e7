"""Coordinate networks: (N, in_dim) features -> (N, out_dim) values.

Every network is an ``nn.Module`` with ``in_dim`` and ``out_dim``, built from a frozen config
dataclass through `NETWORKS` (``NETWORKS.build(cfg, in_dim, out_dim)``). Activation and
initialisation belong together: SIREN's initialisation is part of `Siren`. `MLPConfig` also
writes tiny-cuda-nn's network JSON (``tcnn_config()``, see `tcnn_network_config`).
"""

from nfield.networks.cam import CamConfig, CamMLP
from nfield.networks.finer import Finer, FinerActivation, FinerConfig
from nfield.networks.gaussian import GaussianNetwork, GaussianNetworkConfig, gaussian_activation
from nfield.networks.mlp import ACTIVATIONS, MLP, FourierLinear, MLPConfig, activation_module, fourier_basis
from nfield.networks.progressive import ProgressiveNetwork, ProgressiveNetworkConfig
from nfield.networks.registry import NETWORKS, tcnn_network_config
from nfield.networks.siren import SineLayer, SineNetwork, Siren, SirenConfig
from nfield.networks.spder import Spder, SpderConfig, spder_activation
from nfield.networks.wire import Wire, WireConfig

__all__ = [
    "NETWORKS",
    "tcnn_network_config",
    "ACTIVATIONS",
    "MLP",
    "MLPConfig",
    "activation_module",
    "FourierLinear",
    "fourier_basis",
    "CamMLP",
    "CamConfig",
    "SineLayer",
    "SineNetwork",
    "Siren",
    "SirenConfig",
    "Spder",
    "SpderConfig",
    "spder_activation",
    "ProgressiveNetwork",
    "ProgressiveNetworkConfig",
    "Wire",
    "WireConfig",
    "Finer",
    "FinerConfig",
    "FinerActivation",
    "GaussianNetwork",
    "GaussianNetworkConfig",
    "gaussian_activation",
]
