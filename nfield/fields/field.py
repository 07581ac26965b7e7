"""The basic neural field: coordinates -> encoding -> network -> values."""

from __future__ import annotations

import math
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
    # the field's values are the network's outputs x output_scale + output_shift: a task fitting a
    # signal with the network's targets in [lo, hi] (SIREN's [-1, 1]) sets them by `output_map`, so
    # every output, metric and render stays in the signal's units while the network learns the
    # paper's normalised targets
    output_scale: float = 1.0
    output_shift: float = 0.0


def output_map(signal_range: tuple[float, float], target_range: tuple[float, float]) -> dict[str, float]:
    """The `FieldConfig` output keys under which a network trained towards `target_range` (lo, hi)
    gives values in the signal's `signal_range` (a, b): ``{"output_scale": (b - a) / (hi - lo),
    "output_shift": a - lo (b - a) / (hi - lo)}`` (an image in [0, 1] learned in [-1, 1]: 0.5, 0.5).

    With Adam the fit is the paper's: the squared error of the mapped values is the squared error
    of the network's outputs against the normalised targets times scale^2, a constant factor Adam's
    steps do not see (its epsilon aside)."""
    lo, hi = (float(v) for v in target_range)
    if not (hi > lo and math.isfinite(lo) and math.isfinite(hi)):
        raise NfieldError(f"--target-range {lo:g} {hi:g}: needs two finite numbers, the first below the second")
    a, b = (float(v) for v in signal_range)
    scale = (b - a) / (hi - lo)
    return {"output_scale": scale, "output_shift": a - lo * scale}


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
        self.mapped = (cfg.output_scale, cfg.output_shift) != (1.0, 0.0)

    @property
    def n_lods(self) -> int:
        """Levels of detail the network offers (1 for networks without them)."""
        return getattr(self.network, "n_lods", 1)

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim) at level of detail `lod` (None: the finest), in the signal's
        units (the network's outputs through the config's output map)."""
        features = self.encoding(x)
        if lod is None:
            out = self.network(features)
        elif self.n_lods == 1:
            if lod != 0:
                raise NfieldError(f"--lod {lod}: {type(self.network).__name__} has a single level of detail (0)")
            out = self.network(features)
        else:
            out = self.network(features, lod=lod)
        return out * self.cfg.output_scale + self.cfg.output_shift if self.mapped else out

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, params={sum(p.numel() for p in self.parameters())}"


def field_config_to_dict(cfg: FieldConfig) -> dict[str, Any]:
    """JSON form: ``{"encoding": {"otype": ..., ...}, "network": {"otype": ..., ...}}``, plus
    ``"output": {"scale": ..., "shift": ...}`` when the field maps its network's outputs."""
    data = {"encoding": ENCODINGS.to_dict(cfg.encoding), "network": NETWORKS.to_dict(cfg.network)}
    if (cfg.output_scale, cfg.output_shift) != (1.0, 0.0):
        data["output"] = {"scale": cfg.output_scale, "shift": cfg.output_shift}
    return data


def field_config_from_dict(data: dict[str, Any]) -> FieldConfig:
    """The inverse of `field_config_to_dict`; a config without "output" (every run before it
    existed) maps nothing."""
    if not isinstance(data, dict) or not {"encoding", "network"} <= set(data) <= {"encoding", "network", "output"}:
        raise NfieldError("a field config needs the keys 'encoding' and 'network' (and optionally 'output')")
    output = data.get("output", {"scale": 1.0, "shift": 0.0})
    if not isinstance(output, dict) or set(output) != {"scale", "shift"}:
        raise NfieldError("a field config's 'output' needs exactly the keys 'scale' and 'shift'")
    encoding, network = ENCODINGS.from_dict(data["encoding"]), NETWORKS.from_dict(data["network"])
    return FieldConfig(encoding, network, float(output["scale"]), float(output["shift"]))
