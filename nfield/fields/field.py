"""The basic neural field: coordinates -> encoding -> network -> values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nfield.encodings import ENCODINGS, IdentityConfig
from nfield.errors import NfieldError
from nfield.networks import NETWORKS, MLPConfig


@dataclass(frozen=True)
class FieldConfig:
    encoding: Any = field(default_factory=IdentityConfig)  # any registered encoding config
    network: Any = field(default_factory=MLPConfig)  # any registered network config


class Field(nn.Module):
    """f(x) = network(encoding(x)).

    Input (N, in_dim) coordinates in [-1, 1]; output (N, out_dim). Networks with levels of detail
    (`ProgressiveNetwork`) are queried at a coarser one with ``lod=k``.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: FieldConfig = FieldConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim, self.out_dim = in_dim, out_dim
        self.encoding = ENCODINGS.build(cfg.encoding, in_dim)
        self.network = NETWORKS.build(cfg.network, self.encoding.out_dim, out_dim)

    @property
    def n_lods(self) -> int:
        """Levels of detail the network offers (1 for networks without them)."""
        return getattr(self.network, "n_lods", 1)

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim) at level of detail `lod` (None: the finest)."""
        features = self.encoding(x)
        if lod is None:
            return self.network(features)
        if self.n_lods == 1:
            if lod == 0:
                return self.network(features)
            raise NfieldError(f"--lod {lod}: {type(self.network).__name__} has a single level of detail (0)")
        return self.network(features, lod=lod)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, params={sum(p.numel() for p in self.parameters())}"


def field_config_to_dict(cfg: FieldConfig) -> dict[str, Any]:
    """JSON form: ``{"encoding": {"otype": ..., ...}, "network": {"otype": ..., ...}}``."""
    return {"encoding": ENCODINGS.to_dict(cfg.encoding), "network": NETWORKS.to_dict(cfg.network)}


def field_config_from_dict(data: dict[str, Any]) -> FieldConfig:
    if not isinstance(data, dict) or set(data) != {"encoding", "network"}:
        raise NfieldError("a field config needs exactly the keys 'encoding' and 'network'")
    return FieldConfig(ENCODINGS.from_dict(data["encoding"]), NETWORKS.from_dict(data["network"]))
