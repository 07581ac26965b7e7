"""Progressive implicit network: one MLP per frequency group, summed coarse to fine.

After PINs (Landgraf et al. 2022, "PINs: Progressive Implicit Networks for Multi-Scale Neural
Representations"). The network owns its positional encoding: the `n_frequencies` octave bands of
`frequency_features` are split into `n_lods` contiguous groups, lowest frequencies first.
Level k is a ReLU MLP (`n_hidden_layers` layers of width `n_neurons`) reading

    level 0:  [features of band group 0, x]
    level k:  [features of band group k, h_{k-1}]

and producing the hidden state h_k, which its own linear head maps to the output. The output at
level K is

    y_K(x) = sum_{k <= K} w_k * head_k(h_k),

so levels above K are never evaluated. The weights w_k = band_window(alpha, n_lods)_k follow a
coarse-to-fine schedule set by `update(step, total)`: alpha rises linearly from 1 at
``start_fraction * total`` to ``n_lods`` at ``end_fraction * total``; level 0 is always on and
level k fades in (smoothly, as a cosine) while alpha goes from k to k + 1. Only the finest output
needs to be in the loss: each level learns what the coarser ones cannot represent while it is the
finest one switched on, so every prefix y_K stays a usable band-limited version of the signal.
Level 0 has time to itself only before ``start_fraction * total``. In short image fits (300 steps,
3 levels) the defaults start_fraction = 0.2, end_fraction = 0.8 gave a strictly improving hierarchy
for all 12 seeds tried, while (0, 0.5) let one seed in six end with level 1 worse than level 0.

The heads of levels k >= 1 are initialised to zero, so a level joins as an exact no-op and only
ever adds what it has learned. With a randomly initialised head, fading in its arbitrary output
makes the coarser levels compensate for it (Adam moves the head at full speed even while w_k is
tiny), which in our fits spoiled the intermediate prefixes.

Example::

    >>> import torch
    >>> net = ProgressiveNetwork(2, 3, ProgressiveNetworkConfig(n_lods=3, n_frequencies=6))
    >>> net.update(step=0, total=1000)  # only level 0 on
    >>> x = torch.rand(10, 2) * 2 - 1
    >>> net(x).shape, net(x, lod=0).shape
    (torch.Size([10, 3]), torch.Size([10, 3]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nfield.encodings.frequency import band_window, frequency_features
from nfield.errors import NfieldError
from nfield.networks.mlp import MLP, MLPConfig, check_int, validate_layer_sizes
from nfield.networks.registry import NETWORKS


@dataclass(frozen=True)
class ProgressiveNetworkConfig:
    n_lods: int = 4  # levels, each with its own MLP and head
    n_frequencies: int = 12  # octave bands 2^0 .. 2^(n-1), split into n_lods contiguous groups
    n_neurons: int = 128  # width of every level's hidden layers
    n_hidden_layers: int = 2  # ReLU layers per level (>= 1)
    include_pi: bool = True  # bands sin(2^k pi x), as in `Frequency`
    start_fraction: float = 0.2  # fraction of training where level 1 starts fading in (level 0 alone before)
    end_fraction: float = 0.8  # fraction of training from which every level is fully on

    def __post_init__(self) -> None:
        validate_layer_sizes("ProgressiveNetworkConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        check_int("ProgressiveNetworkConfig", "n_lods", self.n_lods, 1)
        check_int("ProgressiveNetworkConfig", "n_frequencies", self.n_frequencies, 1)
        if self.n_frequencies < self.n_lods:
            raise NfieldError(
                f"ProgressiveNetworkConfig.n_frequencies ({self.n_frequencies}) must be >= n_lods "
                f"({self.n_lods}): every level needs at least one frequency band"
            )
        if not 0.0 <= self.start_fraction <= self.end_fraction <= 1.0:
            raise NfieldError(
                "ProgressiveNetworkConfig needs 0 <= start_fraction <= end_fraction <= 1, got "
                f"start_fraction={self.start_fraction!r}, end_fraction={self.end_fraction!r}"
            )


def split_bands(n_frequencies: int, n_lods: int) -> list[tuple[int, int]]:
    """Split bands 0..n_frequencies-1 into n_lods contiguous groups as evenly as possible.

    The first ``n_frequencies % n_lods`` groups get one band more.

    Returns:
        [(first_band, end_band)] per level, half-open, covering every band once in order.
    """
    size, extra = divmod(n_frequencies, n_lods)
    groups, start = [], 0
    for k in range(n_lods):
        end = start + size + (1 if k < extra else 0)
        groups.append((start, end))
        start = end
    assert start == n_frequencies
    return groups


def progress_alpha(step: int, total: int, n_lods: int, start_fraction: float, end_fraction: float) -> float:
    """Coarse-to-fine progress alpha in [1, n_lods] at `step` of `total`.

    alpha = 1 up to ``start_fraction * total``, rises linearly to ``n_lods`` at
    ``end_fraction * total`` and stays there (a jump at that step when the fractions are equal).
    """
    start, end = start_fraction * total, end_fraction * total
    if step >= end:
        t = 1.0
    elif step <= start:
        t = 0.0
    else:
        t = (step - start) / (end - start)
    return 1.0 + (n_lods - 1) * t


@NETWORKS.register("ProgressiveNetwork", ProgressiveNetworkConfig, renamed={"n_levels": "n_lods"})  # before 0.3
class ProgressiveNetwork(nn.Module):
    """PINs-style multi-level network over raw coordinates (see the module docstring).

    Input (N, in_dim) coordinates in [-1, 1]; output (N, out_dim) at the finest level, or at
    `lod` when given. Attributes: `n_lods`, `bands` ([(first, end)] band range per level),
    `trunks` and `heads` (``nn.ModuleList`` per level) and the float32 buffer `alpha` (progress,
    saved with the weights; initialised to `n_lods`, all levels on).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: ProgressiveNetworkConfig = ProgressiveNetworkConfig()):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.n_lods = cfg.n_lods
        self.bands = split_bands(cfg.n_frequencies, cfg.n_lods)
        # n_hidden_layers ReLU layers of width n_neurons: an MLP whose output layer is the last of them.
        trunk_cfg = MLPConfig(cfg.n_neurons, cfg.n_hidden_layers - 1, activation="relu", output_activation="relu")
        self.trunks = nn.ModuleList()
        for k, (first, end) in enumerate(self.bands):
            features = 2 * in_dim * (end - first)
            trunk_in = features + (in_dim if k == 0 else cfg.n_neurons)
            self.trunks.append(MLP(trunk_in, cfg.n_neurons, trunk_cfg))
        self.heads = nn.ModuleList(nn.Linear(cfg.n_neurons, out_dim) for _ in range(cfg.n_lods))
        for head in self.heads[1:]:  # finer levels join as exact no-ops (module docstring)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.register_buffer("alpha", torch.tensor(float(cfg.n_lods), dtype=torch.float32))

    def update(self, step: int, total: int) -> None:
        """Set the progress for training step `step` of `total` (a pure function of both)."""
        if total <= 0:
            raise NfieldError(f"ProgressiveNetwork.update needs total > 0 steps, got {total}")
        cfg = self.cfg
        self.alpha.fill_(progress_alpha(step, total, cfg.n_lods, cfg.start_fraction, cfg.end_fraction))

    def lod_weights(self) -> torch.Tensor:
        """(n_lods,) float32 weights w_k of the level outputs at the current progress."""
        return band_window(self.alpha, self.n_lods)

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        """Output at level of detail `lod` (0 = coarsest, None = finest): (N, in_dim) -> (N, out_dim)."""
        if lod is None:
            lod = self.n_lods - 1
        if isinstance(lod, bool) or not isinstance(lod, int) or not 0 <= lod < self.n_lods:
            raise NfieldError(f"lod must be an integer in [0, {self.n_lods - 1}] or None, got {lod!r}")
        n_bands = self.bands[lod][1]
        features = frequency_features(x, n_bands, self.cfg.include_pi)  # (N, n_bands * 2 * in_dim)
        width = 2 * self.in_dim
        weights = self.lod_weights().to(x.dtype)
        out = x.new_zeros(x.shape[0], self.out_dim)
        hidden = x  # level 0 reads x where later levels read the previous hidden state
        for k in range(lod + 1):
            first, end = self.bands[k]
            group = features[:, first * width : end * width]
            hidden = self.trunks[k](torch.cat([group, hidden], dim=-1))
            out = out + weights[k] * self.heads[k](hidden)
        return out
