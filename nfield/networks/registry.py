"""The network registry: ``otype`` name -> (config dataclass, module class)."""

from nfield.components import Registry

NETWORKS = Registry("network")
