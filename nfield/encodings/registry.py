"""The encoding registry: ``otype`` name -> (config dataclass, module class)."""

from nfield.components import Registry

ENCODINGS = Registry("encoding")
