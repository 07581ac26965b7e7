"""Coordinate networks: (N, in_dim) features -> (N, out_dim) values.

Every network is an ``nn.Module`` with ``in_dim`` and ``out_dim``, built from a frozen config
dataclass through `NETWORKS` (``NETWORKS.build(cfg, in_dim, out_dim)``). Activation and
initialisation belong together: SIREN's initialisation is part of `Siren`.
"""

from nfield.networks.mlp import ACTIVATIONS, MLP, MLPConfig, activation_module
from nfield.networks.progressive import ProgressiveNetwork, ProgressiveNetworkConfig
from nfield.networks.registry import NETWORKS
from nfield.networks.siren import SineLayer, SineNetwork, Siren, SirenConfig
from nfield.networks.spder import Spder, SpderConfig, spder_activation

__all__ = [
    "NETWORKS",
    "ACTIVATIONS",
    "MLP",
    "MLPConfig",
    "activation_module",
    "SineLayer",
    "SineNetwork",
    "Siren",
    "SirenConfig",
    "Spder",
    "SpderConfig",
    "spder_activation",
    "ProgressiveNetwork",
    "ProgressiveNetworkConfig",
]
